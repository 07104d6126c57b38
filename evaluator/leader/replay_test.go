package leader

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

const replayRulesYAML = `
rules:
  - name: host-up
    select: {check: ping}
  - name: www-http
    select: {check: http}
    depends_on: [host-up]
    for: 30s
    notify: [ops]
    summary: "{{ .host }} http down from {{ .failing }} of {{ .total }}"
  - name: slow-http
    select: {check: http}
    expr: 'max("dmonitor.check.duration", {"host": host, "check": check}, "1m") > 2'
    severity: warning
`

// replayT0 is the start of the replayed range; the history begins five
// minutes earlier.
var replayT0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func sec(s int) time.Time { return replayT0.Add(time.Duration(s) * time.Second) }

// replayFixture is a real embedded store holding 25 minutes of results
// from three observers (eu-1, eu-2, us-1, each running every check every
// 10s, a second apart), with:
//
//   - www1 http down for all observers for runs started in [2m, 4m): a
//     quorum outage;
//   - www1 http down for us-1 alone in [6m, 8m): a flaky observer;
//   - www2 ping and http down for all in [10m, 12m): the host is down;
//   - www1 http taking 3s on eu-2 in [13m, 14m): slow, not down.
func replayFixture(t *testing.T) (*config.Config, *rules.Set, *embedded.Store) {
	t.Helper()
	ping := &config.Check{Name: "ping", Interval: 10 * time.Second, Timeout: 2 * time.Second, Quorum: 2}
	http := &config.Check{Name: "http", Interval: 10 * time.Second, Timeout: 5 * time.Second, Quorum: 2}
	cfg := &config.Config{Interval: time.Minute, Quorum: 2,
		Checks: map[string]*config.Check{"ping": ping, "http": http},
		Targets: []config.Target{{Host: "www1", Check: http}, {Host: "www1", Check: ping},
			{Host: "www2", Check: http}, {Host: "www2", Check: ping}}}
	set, err := rules.Parse("replay.yaml", []byte(replayRulesYAML), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	in := func(s, from, to int) bool { return s >= from && s < to }
	var pts []tsdb.Point
	for s := -300; s < 1200; s += 10 {
		for i, obs := range []string{"eu-1", "eu-2", "us-1"} {
			start := s + i
			for _, tg := range cfg.Targets {
				r := check.Result{Host: tg.Host, Check: tg.Check.Name, Observer: obs, Status: check.OK,
					Start: sec(start), Duration: 500 * time.Millisecond}
				switch {
				case tg.Host == "www1" && tg.Check == http && in(s, 120, 240),
					tg.Host == "www1" && tg.Check == http && obs == "us-1" && in(s, 360, 480),
					tg.Host == "www2" && in(s, 600, 720):
					r.Status = check.Critical
				case tg.Host == "www1" && tg.Check == http && obs == "eu-2" && in(s, 780, 840):
					r.Duration = 3 * time.Second
				}
				pts = observer.ResultPoints(pts, &r)
			}
		}
	}
	if err := store.Append(context.Background(), pts); err != nil {
		t.Fatal(err)
	}
	return cfg, set, store
}

func replayInstance(t *testing.T, res *ReplayResult, rule, host, chk string) ReplayInstance {
	t.Helper()
	for _, in := range res.Instances {
		if in.Rule == rule && in.Host == host && in.Check == chk {
			return in
		}
	}
	t.Fatalf("no instance %s on %s (%s) in %+v", rule, host, chk, res.Instances)
	return ReplayInstance{}
}

func notificationID(rule, host, chk, severity string, status alerting.Status, startsAt time.Time) string {
	return alerting.NotificationID(rule, map[string]string{"host": host, "check": chk, "severity": severity}, status, startsAt)
}

func TestReplayTimeline(t *testing.T) {
	cfg, set, store := replayFixture(t)
	res, err := Replay(context.Background(), cfg, set, store, ReplayOptions{From: sec(0), To: sec(900)})
	if err != nil {
		t.Fatal(err)
	}
	// The default step is the smallest check interval.
	if res.Step != 10*time.Second || res.Steps != 91 {
		t.Errorf("step %s, %d steps; want 10s and 91", res.Step, res.Steps)
	}
	// The history (status and run time), then slow-http's one query per step.
	if res.Queries != 2+91 {
		t.Errorf("%d queries, want %d", res.Queries, 2+91)
	}
	const waiting = "waiting for parent checks ping to run again"
	const parentFiring = `parent "host-up" is firing on www2 (ping)`
	outageStart := sec(130) // the first step that knows all three failing runs
	cases := []struct {
		name          string // what the case shows
		rule, host    string
		chk           string
		transitions   []ReplayTransition
		notifications []ReplayNotification
	}{{
		// Held back one step while its parent is re-checked (which a replay
		// cannot do: it waits for the next scheduled ping), then pending,
		// firing after its 30s `for` counted from the first failing step,
		// and resolved; the flaky us-1 at 6m-8m alone changes nothing.
		name: "quorum outage", rule: "www-http", host: "www1", chk: "http",
		transitions: []ReplayTransition{
			{At: sec(130), From: alerting.OK, To: alerting.Suppressed, Reason: waiting},
			{At: sec(140), From: alerting.Suppressed, To: alerting.Pending},
			{At: sec(160), From: alerting.Pending, To: alerting.Firing},
			{At: sec(250), From: alerting.Firing, To: alerting.OK},
		},
		notifications: []ReplayNotification{
			{At: sec(160), Status: alerting.StatusFiring, ID: notificationID("www-http", "www1", "http", "critical", alerting.StatusFiring, outageStart),
				Summary: "www1 http down from 3 of 3", Receivers: []string{"ops"}},
			{At: sec(250), Status: alerting.StatusResolved, ID: notificationID("www-http", "www1", "http", "critical", alerting.StatusResolved, outageStart),
				Summary: "www1 http down from 3 of 3", Receivers: []string{"ops"}},
		},
	}, {
		// The host is down: the parent fires and resolves, notified to the
		// default receiver.
		name: "parent", rule: "host-up", host: "www2", chk: "ping",
		transitions: []ReplayTransition{
			{At: sec(610), From: alerting.OK, To: alerting.Firing},
			{At: sec(730), From: alerting.Firing, To: alerting.OK},
		},
		notifications: []ReplayNotification{
			{At: sec(610), Status: alerting.StatusFiring, ID: notificationID("host-up", "www2", "ping", "critical", alerting.StatusFiring, sec(610)),
				Summary: "", Receivers: []string{"default"}},
			{At: sec(730), Status: alerting.StatusResolved, ID: notificationID("host-up", "www2", "ping", "critical", alerting.StatusResolved, sec(610)),
				Summary: "", Receivers: []string{"default"}},
		},
	}, {
		// Its http failing at the same time is suppressed while the parent
		// fires, and nothing about it is sent.
		name: "child of a firing parent", rule: "www-http", host: "www2", chk: "http",
		transitions: []ReplayTransition{
			{At: sec(610), From: alerting.OK, To: alerting.Suppressed, Reason: parentFiring},
			{At: sec(730), From: alerting.Suppressed, To: alerting.OK},
		},
	}, {
		// The duration query is made at each step: slow-http fires at the
		// first step whose 1m window holds a 3s run (eu-2's at 781s), and
		// resolves when the last one (831s) has left the window.
		name: "TSDB function", rule: "slow-http", host: "www1", chk: "http",
		transitions: []ReplayTransition{
			{At: sec(790), From: alerting.OK, To: alerting.Firing},
			{At: sec(900), From: alerting.Firing, To: alerting.OK},
		},
		notifications: []ReplayNotification{
			{At: sec(790), Status: alerting.StatusFiring, ID: notificationID("slow-http", "www1", "http", "warning", alerting.StatusFiring, sec(790)), Receivers: []string{"default"}},
			{At: sec(900), Status: alerting.StatusResolved, ID: notificationID("slow-http", "www1", "http", "warning", alerting.StatusResolved, sec(790)), Receivers: []string{"default"}},
		},
	}, {
		// Up throughout.
		name: "quiet", rule: "host-up", host: "www1", chk: "ping",
	}, {
		name: "quiet TSDB rule", rule: "slow-http", host: "www2", chk: "http",
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := replayInstance(t, res, c.rule, c.host, c.chk)
			if !slices.EqualFunc(in.Transitions, c.transitions, sameTransition) {
				t.Errorf("transitions:\n got %+v\nwant %+v", in.Transitions, c.transitions)
			}
			if !slices.EqualFunc(in.Notifications, c.notifications, sameNotification) {
				t.Errorf("notifications:\n got %+v\nwant %+v", in.Notifications, c.notifications)
			}
			if in.State != alerting.OK {
				t.Errorf("final state %s, want ok", in.State)
			}
		})
	}
	if len(res.Instances) != 6 {
		t.Errorf("%d instances, want 6 (2 ping, 2×2 http)", len(res.Instances))
	}
}

func sameTransition(a, b ReplayTransition) bool {
	return a.At.Equal(b.At) && a.From == b.From && a.To == b.To && a.Reason == b.Reason
}

func sameNotification(a, b ReplayNotification) bool {
	return a.At.Equal(b.At) && a.Status == b.Status && a.ID == b.ID && a.Summary == b.Summary && slices.Equal(a.Receivers, b.Receivers)
}

// TestReplayNamedRule reports only the named rule, but still evaluates its
// parent: the child on www2 is suppressed exactly as in the full replay, and
// no TSDB function is fetched, since neither rule reads one.
func TestReplayNamedRule(t *testing.T) {
	cfg, set, store := replayFixture(t)
	res, err := Replay(context.Background(), cfg, set, store, ReplayOptions{From: sec(500), To: sec(800), Rules: []string{"www-http"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range res.Instances {
		if in.Rule != "www-http" {
			t.Errorf("instance of %s reported; only www-http was asked for", in.Rule)
		}
	}
	want := []ReplayTransition{
		{At: sec(610), From: alerting.OK, To: alerting.Suppressed, Reason: `parent "host-up" is firing on www2 (ping)`},
		{At: sec(730), From: alerting.Suppressed, To: alerting.OK},
	}
	if got := replayInstance(t, res, "www-http", "www2", "http").Transitions; !slices.EqualFunc(got, want, sameTransition) {
		t.Errorf("child transitions:\n got %+v\nwant %+v", got, want)
	}
	if res.Queries != 2 {
		t.Errorf("%d queries, want 2 (the history only)", res.Queries)
	}
}

// TestReplayStartsWithHistory: a range that begins in the middle of an
// outage already knows the earlier runs (so the first step is not unknown
// for want of fresh results), but not the earlier evaluations: the outage
// appears to start at the first step.
func TestReplayStartsWithHistory(t *testing.T) {
	cfg, set, store := replayFixture(t)
	res, err := Replay(context.Background(), cfg, set, store, ReplayOptions{From: sec(650), To: sec(700), Step: 25 * time.Second, Rules: []string{"host-up"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != 3 {
		t.Errorf("%d steps, want 3 (650, 675, 700)", res.Steps)
	}
	want := []ReplayTransition{{At: sec(650), From: alerting.OK, To: alerting.Firing}}
	in := replayInstance(t, res, "host-up", "www2", "ping")
	if !slices.EqualFunc(in.Transitions, want, sameTransition) || in.State != alerting.Firing {
		t.Errorf("transitions %+v, final %s; want %+v and firing", in.Transitions, in.State, want)
	}
}

// TestReplayUnknownWithoutResults: a target the history has no result for
// is unknown, never ok, as the daemon holds it.
func TestReplayUnknownWithoutResults(t *testing.T) {
	cfg, set, store := replayFixture(t)
	dns := &config.Check{Name: "dns", Interval: 10 * time.Second, Timeout: time.Second, Quorum: 2}
	cfg.Checks["dns"] = dns
	cfg.Targets = append(cfg.Targets, config.Target{Host: "www1", Check: dns})
	res, err := Replay(context.Background(), cfg, set, store, ReplayOptions{From: sec(0), To: sec(20), Rules: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []ReplayTransition{{At: sec(0), From: alerting.OK, To: alerting.Unknown, Reason: "0 fresh observers, quorum is 2"}}
	if got := replayInstance(t, res, "default", "www1", "dns").Transitions; !slices.EqualFunc(got, want, sameTransition) {
		t.Errorf("transitions %+v, want %+v", got, want)
	}
}

func TestReplayRefuses(t *testing.T) {
	cfg, set, store := replayFixture(t)
	cases := []struct {
		name string // what is wrong
		opt  ReplayOptions
		is   error
	}{
		{name: "unknown rule", opt: ReplayOptions{From: sec(0), To: sec(60), Rules: []string{"www-http", "nosuch"}}, is: ErrUnknownRule},
		{name: "to before from", opt: ReplayOptions{From: sec(60), To: sec(0)}},
		{name: "no range", opt: ReplayOptions{}},
		{name: "negative step", opt: ReplayOptions{From: sec(0), To: sec(60), Step: -time.Second}},
		{name: "too many steps", opt: ReplayOptions{From: sec(0), To: sec(0).Add(MaxReplaySteps * time.Second), Step: time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := Replay(context.Background(), cfg, set, store, c.opt)
			if err == nil {
				t.Fatalf("replayed %d steps, want an error", res.Steps)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v, want it to wrap %v", err, c.is)
			}
		})
	}
}

// TestReplayHistory checks the live view rebuilt from the TSDB: a run is
// known once it has finished (start plus its recorded run time), and the
// statuses before it come newest first, at most rules.MaxHistory of them.
func TestReplayHistory(t *testing.T) {
	_, _, store := replayFixture(t)
	www1http := instanceKey{"www1", "http"}
	h := &history{}
	if n, err := h.load(context.Background(), store, []instanceKey{www1http}, sec(-300), sec(900)); err != nil || n != 2 {
		t.Fatalf("load: %d queries, %v", n, err)
	}
	startOf := func(obs string) time.Time {
		rs, _ := h.latest(nil, nil, www1http)
		for _, r := range rs {
			if r.Observer == obs {
				return r.Start
			}
		}
		t.Fatalf("no result of %s", obs)
		return time.Time{}
	}
	// eu-2's run started at 781s took 3s.
	h.advance(sec(783))
	if got := startOf("eu-2"); !got.Equal(sec(771)) {
		t.Errorf("at 783s eu-2's latest run started %s, want 771s: the 781s run is still going", got.Sub(replayT0))
	}
	h.advance(sec(784))
	if got := startOf("eu-2"); !got.Equal(sec(781)) {
		t.Errorf("at 784s eu-2's latest run started %s, want 781s", got.Sub(replayT0))
	}

	// us-1 failed alone on runs started from 362s.
	h2 := &history{}
	if _, err := h2.load(context.Background(), store, []instanceKey{www1http}, sec(-300), sec(900)); err != nil {
		t.Fatal(err)
	}
	h2.advance(sec(400))
	rs, hs := h2.latest(nil, nil, www1http)
	var names []string
	for i, r := range rs {
		names = append(names, r.Observer)
		if r.Observer != "us-1" {
			continue
		}
		// 382s, 372s, 362s failing alone; 352s back to 242s fine; 232s the
		// end of the quorum outage; nothing older.
		want := []check.Status{check.Critical, check.Critical, check.Critical}
		for len(want) < rules.MaxHistory-1 {
			want = append(want, check.OK)
		}
		want = append(want, check.Critical)
		if r.Status != check.Critical || !slices.Equal(hs[i], want) {
			t.Errorf("us-1 at 400s: %s after %v, want CRITICAL after %v", r.Status, hs[i], want)
		}
	}
	if !slices.Equal(names, []string{"eu-1", "eu-2", "us-1"}) {
		t.Errorf("observers %v, want eu-1, eu-2, us-1 in order", names)
	}
}
