package leader

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/rules"
)

const depRules = `
rules:
  - name: www-ping
    select: {check: ping}
  - name: www-http
    select: {check: http}
    depends_on: [www-ping]
`

// world is a hand-driven set of latest results for the engine.
type world struct {
	results map[instanceKey][]check.Result
}

func (w *world) set(host, chk string, s check.Status, at time.Time) {
	w.results[instanceKey{host, chk}] = []check.Result{{Host: host, Check: chk, Observer: "eu-1", Status: s, Start: at}}
}

func (w *world) inputs() inputs {
	return inputs{results: func(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status) {
		rs = append(rs, w.results[k]...)
		return rs, append(hs, make([][]check.Status, len(w.results[k]))...)
	}}
}

func depEngine(t *testing.T) (*engine, *world) {
	t.Helper()
	set, err := rules.Parse("deps.yaml", []byte(depRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ping := &config.Check{Name: "ping", Interval: 10 * time.Second, Timeout: 2 * time.Second, Quorum: 1}
	http := &config.Check{Name: "http", Interval: 10 * time.Second, Timeout: 5 * time.Second, Quorum: 1}
	cfg := &config.Config{Checks: map[string]*config.Check{"ping": ping, "http": http},
		Targets: []config.Target{{Host: "www1", Check: http}, {Host: "www1", Check: ping}}}
	return newEngine(cfg, set, 0, nil), &world{results: map[instanceKey][]check.Result{}}
}

var (
	httpKey = instanceKey{"www1", "http"}
	pingKey = instanceKey{"www1", "ping"}
)

// notified returns the status notified for rule in ds, or "".
func notified(ds []decision, rule string) alerting.Status {
	for _, d := range ds {
		if d.rule.Name == rule && d.tr != nil && d.tr.Notification != nil {
			return d.tr.Notification.Status
		}
	}
	return ""
}

func (g *engine) state(rule string, k instanceKey) alerting.State {
	if inst, ok := g.instances[instKey{rule, k.host, k.check}]; ok {
		return inst.State
	}
	return alerting.OK
}

func TestChildOfFailingParentSendsNothing(t *testing.T) {
	g, w := depEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.Critical, t0)
	w.set("www1", "http", check.Critical, t0)
	ds, rcs := g.evaluate(t0, []instanceKey{httpKey, pingKey}, w.inputs())
	if notified(ds, "www-ping") != alerting.StatusFiring {
		t.Fatalf("the parent's outage was not notified: %+v", ds)
	}
	if s := g.state("www-http", httpKey); s != alerting.Suppressed || notified(ds, "www-http") != "" || len(rcs) != 0 {
		t.Fatalf("child: state %v, notified %q, rechecks %v; want suppressed, silent, none", s, notified(ds, "www-http"), rcs)
	}
	// Both recover: the parent's recovery is sent, the child says nothing.
	t1 := t0.Add(time.Minute)
	w.set("www1", "ping", check.OK, t1)
	w.set("www1", "http", check.OK, t1)
	ds, _ = g.evaluate(t1, []instanceKey{pingKey, httpKey}, w.inputs())
	if notified(ds, "www-ping") != alerting.StatusResolved || notified(ds, "www-http") != "" {
		t.Fatalf("recovery: ping %q, http %q; want resolved and nothing", notified(ds, "www-ping"), notified(ds, "www-http"))
	}
}

func TestParentRecoveryLetsChildFire(t *testing.T) {
	g, w := depEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.Critical, t0)
	w.set("www1", "http", check.Critical, t0)
	g.evaluate(t0, []instanceKey{pingKey, httpKey}, w.inputs())
	// The parent's new result is what arrives: the child's last result is
	// from before, so the parent stays open while the child runs again.
	t1 := t0.Add(time.Minute)
	w.set("www1", "http", check.Critical, t1.Add(-time.Second))
	w.set("www1", "ping", check.OK, t1)
	ds, rcs := g.evaluate(t1, []instanceKey{pingKey}, w.inputs())
	if len(ds) != 0 || len(rcs) != 1 || rcs[0].targets[0] != httpKey {
		t.Fatalf("parent recovered, child not run since: decisions %+v, re-checks %+v; want none, and the child re-checked", ds, rcs)
	}
	// The child's re-check still fails: the parent resolves, the child
	// pages at once (its for counted while held back).
	t2 := t1.Add(time.Second)
	w.set("www1", "http", check.Critical, t2)
	ds, _ = g.evaluate(t2, []instanceKey{httpKey}, w.inputs())
	if notified(ds, "www-ping") != alerting.StatusResolved {
		t.Errorf("parent: notified %q, want resolved", notified(ds, "www-ping"))
	}
	if notified(ds, "www-http") != alerting.StatusFiring || g.state("www-http", httpKey) != alerting.Firing {
		t.Fatalf("still-failing child after the parent recovered: %v, notified %q", g.state("www-http", httpKey), notified(ds, "www-http"))
	}
	for _, d := range ds {
		if d.rule.Name == "www-http" && !d.tr.Notification.StartsAt.Equal(t0) {
			t.Errorf("child alert starts %v, want %v when it began failing", d.tr.Notification.StartsAt, t0)
		}
	}
}

func TestChildOfUnknownParentIsSuppressed(t *testing.T) {
	g, w := depEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	// The parent has no fresh result (3 intervals old): unknown.
	w.set("www1", "ping", check.OK, t0.Add(-30*time.Second))
	w.set("www1", "http", check.Critical, t0)
	ds, _ := g.evaluate(t0, []instanceKey{pingKey, httpKey}, w.inputs())
	if g.state("www-ping", pingKey) != alerting.Unknown || g.state("www-http", httpKey) != alerting.Suppressed || notified(ds, "www-http") != "" {
		t.Fatalf("ping %v, http %v (notified %q); want unknown, suppressed, silent",
			g.state("www-ping", pingKey), g.state("www-http", httpKey), notified(ds, "www-http"))
	}
}

func TestChildWaitsForParentRecheck(t *testing.T) {
	g, w := depEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.OK, t0.Add(-5*time.Second))
	w.set("www1", "http", check.Critical, t0)
	ds, rcs := g.evaluate(t0, []instanceKey{httpKey}, w.inputs())
	if len(rcs) != 1 || len(rcs[0].targets) != 1 || rcs[0].targets[0] != pingKey {
		t.Fatalf("rechecks = %+v, want the parent's ping on www1", rcs)
	}
	if notified(ds, "www-http") != "" || g.state("www-http", httpKey) != alerting.Suppressed {
		t.Fatalf("child decided before its parent was re-checked: %v", g.state("www-http", httpKey))
	}
	// The re-check finds the host down: the child stays quiet, the parent pages.
	t1 := t0.Add(time.Second)
	w.set("www1", "ping", check.Critical, t1)
	ds, _ = g.evaluate(t1, []instanceKey{pingKey}, w.inputs())
	if notified(ds, "www-ping") != alerting.StatusFiring || notified(ds, "www-http") != "" {
		t.Fatalf("after the re-check: ping %q, http %q; want the page to name the parent only",
			notified(ds, "www-ping"), notified(ds, "www-http"))
	}
}

func TestChildFiresWhenParentRecheckFindsItUp(t *testing.T) {
	g, w := depEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.OK, t0.Add(-5*time.Second))
	w.set("www1", "http", check.Critical, t0)
	g.evaluate(t0, []instanceKey{httpKey}, w.inputs())
	t1 := t0.Add(time.Second)
	w.set("www1", "ping", check.OK, t1)
	ds, _ := g.evaluate(t1, []instanceKey{pingKey}, w.inputs())
	if notified(ds, "www-http") != alerting.StatusFiring {
		t.Fatalf("parent re-checked up, child still failing: notified %q, state %v", notified(ds, "www-http"), g.state("www-http", httpKey))
	}
}

func TestChildFiresWhenParentRecheckTimesOut(t *testing.T) {
	g, w := depEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.OK, t0.Add(-5*time.Second))
	w.set("www1", "http", check.Critical, t0)
	g.evaluate(t0, []instanceKey{httpKey}, w.inputs())
	// No new parent result: after the parent's timeout and a second, the
	// child is decided on what is known.
	ds, _ := g.evaluate(t0.Add(3*time.Second+time.Millisecond), []instanceKey{httpKey}, w.inputs())
	if notified(ds, "www-http") != alerting.StatusFiring {
		t.Fatalf("after the re-check deadline: notified %q, state %v", notified(ds, "www-http"), g.state("www-http", httpKey))
	}
}

func TestSilentObserverAlerts(t *testing.T) {
	g, _ := depEngine(t)
	g.cfg.Nodes = []string{"a", "b", "c"}
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	started := t0.Add(-time.Minute)
	seen := map[string]time.Time{"a": t0, "b": t0.Add(-time.Minute)} // c never heard from
	ds := g.evaluateObservers(t0, seen, 30*time.Second, started)
	fired := map[string]bool{}
	for _, d := range ds {
		if d.tr.Notification != nil && d.tr.Notification.Status == alerting.StatusFiring {
			fired[d.inst.Labels["host"]] = true
		}
	}
	if len(fired) != 2 || !fired["b"] || !fired["c"] {
		t.Fatalf("silent observers paged: %v, want b (missed heartbeats) and c (never heard from)", fired)
	}
	// b comes back; c stays silent and is not paged again.
	seen["b"] = t0.Add(10 * time.Second)
	ds = g.evaluateObservers(t0.Add(10*time.Second), seen, 30*time.Second, started)
	if len(ds) != 1 || ds[0].inst.Labels["host"] != "b" || ds[0].tr.Notification.Status != alerting.StatusResolved {
		t.Fatalf("after b's heartbeat: %+v, want only b resolved", ds)
	}
}

// TestRedundancyGroups: a child depending on {any: [lb-a, lb-b]} and on db
// is held back only when no balancer is available (each failed or
// unknown), or when db is down. Each parent is firing (critical), unknown
// (no fresh result) or available (ok).
func TestRedundancyGroups(t *testing.T) {
	const (
		up      = "available"
		failed  = "failed"
		unknown = "unknown"
	)
	for _, tc := range []struct {
		name         string
		lbA, lbB, db string
		want         alerting.State // the failing app's state
	}{
		{"both balancers up: the app pages", up, up, up, alerting.Firing},
		{"one balancer down: the pair still carries the app, which pages in its own right", failed, up, up, alerting.Firing},
		{"one balancer unknown, the other up: the app pages", unknown, up, up, alerting.Firing},
		{"both balancers down: the app is held back", failed, failed, up, alerting.Suppressed},
		{"one balancer down, the other unknown: held back, none known to carry it", failed, unknown, up, alerting.Suppressed},
		{"both balancers unknown: held back", unknown, unknown, up, alerting.Suppressed},
		{"balancers up, db down: a plain parent holds it back", up, up, failed, alerting.Suppressed},
		{"balancers up, db unknown: a plain parent not known to be fine holds it back", up, up, unknown, alerting.Suppressed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, w, keys := siteEngine(t, groupRules, "lb-a", "lb-b", "db", "app")
			t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
			for chk, s := range map[string]string{"lb-a": tc.lbA, "lb-b": tc.lbB, "db": tc.db} {
				switch s {
				case up:
					w.set("site", chk, check.OK, t0)
				case failed:
					w.set("site", chk, check.Critical, t0)
				case unknown:
					w.set("site", chk, check.OK, t0.Add(-time.Hour))
				}
			}
			w.set("site", "app", check.Critical, t0)
			// The first pass holds the app while its parents are re-checked;
			// their results, started at t0, count as that re-check, and one
			// that never comes (unknown) times out after the parents'
			// timeout and a second.
			g.evaluate(t0, keys, w.inputs())
			ds, _ := g.evaluate(t0.Add(3*time.Second+time.Millisecond), keys, w.inputs())
			app := instanceKey{"site", "app"}
			if got := g.state("app", app); got != tc.want {
				t.Fatalf("app is %v (%s), want %v", got, g.instances[instKey{"app", "site", "app"}].Reason, tc.want)
			}
			for _, lb := range []string{"lb-a", "lb-b"} {
				if tc.lbA == failed && lb == "lb-a" || tc.lbB == failed && lb == "lb-b" {
					if g.state(lb, instanceKey{"site", lb}) != alerting.Firing {
						t.Errorf("%s failed but is %v: a balancer pages in its own right", lb, g.state(lb, instanceKey{"site", lb}))
					}
				}
			}
			if tc.want == alerting.Firing && notified(ds, "app") == "" && g.instances[instKey{"app", "site", "app"}].FiredAt.IsZero() {
				t.Error("the app is firing but was never notified")
			}
		})
	}
}

// rootEngine is a host whose ping three services depend on.
func rootEngine(t *testing.T) (*engine, *world, []instanceKey) {
	t.Helper()
	const rootRules = `
rules:
  - name: host-up
    select: {check: ping}
  - name: service
    select: {check: "svc*"}
    depends_on: [host-up]
`
	set, err := rules.Parse("root.yaml", []byte(rootRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Checks: map[string]*config.Check{}}
	var svcs []instanceKey
	for _, name := range []string{"ping", "svc1", "svc2", "svc3"} {
		c := &config.Check{Name: name, Interval: 10 * time.Second, Timeout: 2 * time.Second, Quorum: 1}
		cfg.Checks[name] = c
		cfg.Targets = append(cfg.Targets, config.Target{Host: "www1", Check: c})
		if name != "ping" {
			svcs = append(svcs, instanceKey{"www1", name})
		}
	}
	return newEngine(cfg, set, 0, nil), &world{results: map[instanceKey][]check.Result{}}, svcs
}

// notification returns the notification about rule on k in ds, or nil.
func notification(ds []decision, rule string, k instanceKey) *alerting.Notification {
	for _, d := range ds {
		if d.rule.Name == rule && d.inst.Labels[alerting.LabelHost] == k.host && d.inst.Labels[alerting.LabelCheck] == k.check && d.tr != nil {
			return d.tr.Notification
		}
	}
	return nil
}

// TestRootCauseNamesItsDependents: the host's page waits for its services
// to run again and names the three it holds back; when the host is back
// with one service still down, its resolved says which two recovered with
// it and which one still fails, and that one pages at once in its own
// right, its alert starting when it began failing.
func TestRootCauseNamesItsDependents(t *testing.T) {
	g, w, svcs := rootEngine(t)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, k := range svcs {
		w.set("www1", k.check, check.OK, t0.Add(-5*time.Second))
	}
	w.set("www1", "ping", check.Critical, t0)
	ds, rcs := g.evaluate(t0, []instanceKey{pingKey}, w.inputs())
	if n := notification(ds, "host-up", pingKey); n != nil || len(rcs) != 1 || len(rcs[0].targets) != 3 {
		t.Fatalf("host down, services not yet run again: notified %+v, re-checks %+v; want nothing yet and the three services re-checked", n, rcs)
	}
	t1 := t0.Add(500 * time.Millisecond)
	for _, k := range svcs {
		w.set("www1", k.check, check.Critical, t1)
	}
	ds, _ = g.evaluate(t1, svcs, w.inputs())
	page := notification(ds, "host-up", pingKey)
	if page == nil || page.Status != alerting.StatusFiring {
		t.Fatalf("the services have run again: host page %+v, want firing", page)
	}
	if got, want := page.Annotations[alerting.AnnotationHeldBack], "3 held back: svc1 on www1 (service), svc2 on www1 (service), svc3 on www1 (service)"; got != want {
		t.Errorf("the page says %s %q, want %q", alerting.AnnotationHeldBack, got, want)
	}
	for _, k := range svcs {
		if n := notification(ds, "service", k); n != nil {
			t.Errorf("%s paged while its host is down: %+v", k.check, n)
		}
	}

	// The host is back; the services last ran (failing) just before.
	t2 := t0.Add(time.Minute)
	for _, k := range svcs {
		w.set("www1", k.check, check.Critical, t2.Add(-time.Second))
	}
	w.set("www1", "ping", check.OK, t2)
	ds, rcs = g.evaluate(t2, []instanceKey{pingKey}, w.inputs())
	if len(ds) != 0 || len(rcs) != 1 {
		t.Fatalf("host back, services not yet run again: %d decisions, re-checks %+v; want none, and the services re-checked", len(ds), rcs)
	}
	t3 := t2.Add(500 * time.Millisecond)
	w.set("www1", "svc1", check.OK, t3)
	w.set("www1", "svc2", check.OK, t3)
	w.set("www1", "svc3", check.Critical, t3)
	ds, _ = g.evaluate(t3, svcs, w.inputs())
	resolved := notification(ds, "host-up", pingKey)
	if resolved == nil || resolved.Status != alerting.StatusResolved {
		t.Fatalf("host resolved: %+v", resolved)
	}
	if got, want := resolved.Annotations[alerting.AnnotationRecovered], "2: svc1 on www1 (service), svc2 on www1 (service)"; got != want {
		t.Errorf("%s = %q, want %q", alerting.AnnotationRecovered, got, want)
	}
	if got, want := resolved.Annotations[alerting.AnnotationStillFailing], "1: svc3 on www1 (service)"; got != want {
		t.Errorf("%s = %q, want %q", alerting.AnnotationStillFailing, got, want)
	}
	own := notification(ds, "service", svcs[2])
	if own == nil || own.Status != alerting.StatusFiring || !own.StartsAt.Equal(t1) {
		t.Fatalf("svc3, still failing: %+v; want its own page at once, starting when it began failing (%v)", own, t1)
	}
	for _, k := range svcs[:2] {
		if n := notification(ds, "service", k); n != nil {
			t.Errorf("%s, never paged, recovered with its host: notified %+v", k.check, n)
		}
	}
}

// TestChildPagedBeforeItsParentResolvesOnce: a service that paged before
// its host went down stays open, held back (nothing sent), listed in the
// host's page; when both recover it is resolved once, and a service still
// failing after its host's recovery is not paged again.
func TestChildPagedBeforeItsParentResolvesOnce(t *testing.T) {
	for _, stillFailing := range []bool{false, true} {
		g, w, svcs := rootEngine(t)
		svc1 := svcs[0]
		t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
		w.set("www1", "ping", check.OK, t0)
		w.set("www1", "svc1", check.Critical, t0)
		w.set("www1", "svc2", check.OK, t0)
		w.set("www1", "svc3", check.OK, t0)
		ds, _ := g.evaluate(t0, append([]instanceKey{pingKey}, svcs...), w.inputs())
		if n := notification(ds, "service", svc1); n == nil || n.Status != alerting.StatusFiring {
			t.Fatalf("svc1 failing, host up: %+v, want a page", n)
		}
		t1 := t0.Add(time.Minute)
		w.set("www1", "ping", check.Critical, t1)
		w.set("www1", "svc1", check.Critical, t1)
		w.set("www1", "svc2", check.OK, t1)
		w.set("www1", "svc3", check.OK, t1)
		ds, _ = g.evaluate(t1, append([]instanceKey{pingKey}, svcs...), w.inputs())
		page := notification(ds, "host-up", pingKey)
		if page == nil || page.Annotations[alerting.AnnotationHeldBack] != "1 held back: svc1 on www1 (service)" || notification(ds, "service", svc1) != nil {
			t.Fatalf("host down: host page %+v, svc1 %+v; want the host's page listing svc1, nothing about svc1", page, notification(ds, "service", svc1))
		}
		t2 := t1.Add(time.Minute)
		w.set("www1", "ping", check.OK, t2)
		st := check.OK
		if stillFailing {
			st = check.Critical
		}
		for _, k := range svcs {
			w.set("www1", k.check, check.OK, t2)
		}
		w.set("www1", "svc1", st, t2)
		ds, _ = g.evaluate(t2, append([]instanceKey{pingKey}, svcs...), w.inputs())
		n := notification(ds, "service", svc1)
		switch {
		case !stillFailing && (n == nil || n.Status != alerting.StatusResolved):
			t.Errorf("both recovered: svc1 notified %+v, want its one resolved", n)
		case stillFailing && n != nil:
			t.Errorf("svc1 still failing after its host recovered: notified %+v, want nothing (its page is still open)", n)
		}
		if stillFailing && g.state("service", svc1) != alerting.Firing {
			t.Errorf("svc1 still failing after its host recovered is %v, want firing", g.state("service", svc1))
		}
	}
}

// TestPartialOutage: a check counting failure domains (quorum_domains 2)
// that every observer of one domain sees failing is a partial-outage
// warning, not an outage page; when the other domain fails too, the outage
// pages and the partial alert resolves.
func TestPartialOutage(t *testing.T) {
	http := &config.Check{Name: "http", Interval: 10 * time.Second, Timeout: 5 * time.Second, Quorum: 2, QuorumDomains: 2}
	cfg := &config.Config{Checks: map[string]*config.Check{"http": http}, Targets: []config.Target{{Host: "www1", Check: http}},
		PartialNotify: []string{"low"}}
	g := newEngine(cfg, nil, 0, nil)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	results := func(eu, us check.Status, at time.Time) inputs {
		rs := []check.Result{
			{Host: "www1", Check: "http", Observer: "eu-1", Domain: "eu", Status: eu, Start: at},
			{Host: "www1", Check: "http", Observer: "eu-2", Domain: "eu", Status: eu, Start: at},
			{Host: "www1", Check: "http", Observer: "us-1", Domain: "us", Status: us, Start: at},
		}
		return inputs{results: func(dst []check.Result, hs [][]check.Status, _ instanceKey) ([]check.Result, [][]check.Status) {
			return append(dst, rs...), append(hs, make([][]check.Status, len(rs))...)
		}}
	}
	ds, _ := g.evaluate(t0, []instanceKey{httpKey}, results(check.Critical, check.OK, t0))
	n := notification(ds, PartialRule, httpKey)
	if n == nil || n.Status != alerting.StatusFiring || n.Severity != "warning" || notification(ds, "default", httpKey) != nil {
		t.Fatalf("eu down, us up: partial %+v, outage %+v; want a partial-outage warning and no outage page", n, notification(ds, "default", httpKey))
	}
	if got, want := n.Annotations[alerting.AnnotationSummary], "www1 http down from every observer of 1 of 2 failure domains; an outage needs 2"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if got := receiversOf(g.partial); len(got) != 1 || got[0] != "low" {
		t.Errorf("partial-outage goes to %v, want partial_notify's [low]", got)
	}
	t1 := t0.Add(10 * time.Second)
	ds, _ = g.evaluate(t1, []instanceKey{httpKey}, results(check.Critical, check.Critical, t1))
	if n := notification(ds, "default", httpKey); n == nil || n.Status != alerting.StatusFiring {
		t.Errorf("both domains down: outage %+v, want the page", n)
	}
	if n := notification(ds, PartialRule, httpKey); n == nil || n.Status != alerting.StatusResolved {
		t.Errorf("both domains down: partial %+v, want it resolved", n)
	}
}

// TestRootCauseRepeatUpdatesTheList: a repeat of the parent's page names
// what it holds back now, a dependent that failed since included.
func TestRootCauseRepeatUpdatesTheList(t *testing.T) {
	g, w, svcs := rootEngine(t)
	g.repeatInterval = time.Hour
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.Critical, t0)
	w.set("www1", "svc1", check.Critical, t0)
	w.set("www1", "svc2", check.OK, t0)
	w.set("www1", "svc3", check.OK, t0)
	ds, _ := g.evaluate(t0, append([]instanceKey{pingKey}, svcs...), w.inputs())
	if n := notification(ds, "host-up", pingKey); n == nil || n.Annotations[alerting.AnnotationHeldBack] != "1 held back: svc1 on www1 (service)" {
		t.Fatalf("first page %+v, want it to hold back svc1", n)
	}
	t1 := t0.Add(time.Hour)
	for _, k := range append([]instanceKey{pingKey}, svcs...) {
		w.set("www1", k.check, check.Critical, t1)
	}
	ds, _ = g.evaluate(t1, append([]instanceKey{pingKey}, svcs...), w.inputs())
	n := notification(ds, "host-up", pingKey)
	if n == nil || n.Repeat != 1 {
		t.Fatalf("an hour on: %+v, want the repeat", n)
	}
	if got, want := n.Annotations[alerting.AnnotationHeldBack], "3 held back: svc1 on www1 (service), svc2 on www1 (service), svc3 on www1 (service)"; got != want {
		t.Errorf("the repeat says %q, want %q", got, want)
	}
}

// TestParentWaitSendsNothing: while a parent that recovered waits for its
// dependents to run again, nothing is decided for it: no state change, not
// even the repeat that is overdue; then it resolves once.
func TestParentWaitSendsNothing(t *testing.T) {
	g, w, svcs := rootEngine(t)
	g.repeatInterval = time.Hour
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, k := range append([]instanceKey{pingKey}, svcs...) {
		w.set("www1", k.check, check.Critical, t0)
	}
	ds, _ := g.evaluate(t0, append([]instanceKey{pingKey}, svcs...), w.inputs())
	if notified(ds, "host-up") != alerting.StatusFiring {
		t.Fatal("no page")
	}
	// Two hours on, the host recovers; its dependents last ran before.
	t1 := t0.Add(2 * time.Hour)
	for _, k := range svcs {
		w.set("www1", k.check, check.Critical, t1.Add(-time.Second))
	}
	w.set("www1", "ping", check.OK, t1)
	ds, rcs := g.evaluate(t1, []instanceKey{pingKey}, w.inputs())
	if len(ds) != 0 || len(rcs) != 1 || g.state("host-up", pingKey) != alerting.Firing {
		t.Fatalf("while waiting: decisions %+v, state %v; want none (no overdue repeat either), still firing", ds, g.state("host-up", pingKey))
	}
	t2 := t1.Add(time.Second)
	for _, k := range svcs {
		w.set("www1", k.check, check.OK, t2)
	}
	ds, _ = g.evaluate(t2, svcs, w.inputs())
	if n := notification(ds, "host-up", pingKey); n == nil || n.Status != alerting.StatusResolved || n.Repeat != 0 {
		t.Fatalf("after the wait: %+v, want the one resolved", n)
	}
}

// TestHeldBackNamesTheRightParent: a child held back by db, while lb-a
// is down but lb-b carries the pair, is not listed in lb-a's page.
func TestHeldBackNamesTheRightParent(t *testing.T) {
	g, w, keys := siteEngine(t, groupRules, "app", "db", "lb-a", "lb-b")
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("site", "lb-a", check.Critical, t0)
	w.set("site", "lb-b", check.OK, t0)
	w.set("site", "db", check.Critical, t0)
	w.set("site", "app", check.Critical, t0)
	ds, _ := g.evaluate(t0, keys, w.inputs())
	if g.state("app", instanceKey{"site", "app"}) != alerting.Suppressed {
		t.Fatalf("app is %v, want held back by db", g.state("app", instanceKey{"site", "app"}))
	}
	if n := notification(ds, "lb-a", instanceKey{"site", "lb-a"}); n == nil || n.Annotations[alerting.AnnotationHeldBack] != "" {
		t.Errorf("lb-a's page %+v: want no held_back, lb-b carries the pair", n)
	}
	if n := notification(ds, "db", instanceKey{"site", "db"}); n == nil || n.Annotations[alerting.AnnotationHeldBack] != "1 held back: app on site" {
		t.Errorf("db's page %+v: want it to hold back app", n)
	}
}

// TestPendingParentHoldsBack: a parent that must fail for a minute before
// it pages holds its dependents back meanwhile: they do not page first.
func TestPendingParentHoldsBack(t *testing.T) {
	set, err := rules.Parse("r.yaml", []byte(`
rules:
  - name: host-up
    select: {check: ping}
    for: 1m
  - name: www-http
    select: {check: http}
    depends_on: [host-up]
`), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g0, w := depEngine(t)
	g := newEngine(g0.cfg, set, 0, nil)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	w.set("www1", "ping", check.Critical, t0)
	w.set("www1", "http", check.Critical, t0)
	for i := range 3 {
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		w.set("www1", "ping", check.Critical, at)
		w.set("www1", "http", check.Critical, at)
		ds, _ := g.evaluate(at, []instanceKey{pingKey, httpKey}, w.inputs())
		if n := notified(ds, "www-http"); n != "" {
			t.Fatalf("at %v the child paged (%s) while its parent was pending", at, n)
		}
	}
	if s := g.state("www-http", httpKey); s != alerting.Suppressed {
		t.Errorf("child is %v, want held back", s)
	}
}

// siteEngine is an engine over rulesYAML with one target per check on the
// host "site", and the hand-driven results of its world.
func siteEngine(t *testing.T, rulesYAML string, checks ...string) (*engine, *world, []instanceKey) {
	t.Helper()
	set, err := rules.Parse("site.yaml", []byte(rulesYAML), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Checks: map[string]*config.Check{}}
	var keys []instanceKey
	for _, name := range checks {
		c := &config.Check{Name: name, Interval: 10 * time.Second, Timeout: 2 * time.Second, Quorum: 1}
		cfg.Checks[name] = c
		cfg.Targets = append(cfg.Targets, config.Target{Host: "site", Check: c})
		keys = append(keys, instanceKey{"site", name})
	}
	slices.SortFunc(cfg.Targets, func(a, b config.Target) int { return strings.Compare(a.Check.Name, b.Check.Name) })
	return newEngine(cfg, set, 0, nil), &world{results: map[instanceKey][]check.Result{}}, keys
}

// groupRules: an app behind a pair of balancers and a database.
const groupRules = `
rules:
  - name: lb-a
    select: {check: lb-a}
  - name: lb-b
    select: {check: lb-b}
  - name: db
    select: {check: db}
  - name: app
    select: {check: app}
    depends_on: [{any: [lb-a, lb-b]}, db]
`
