package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// hookAlert is one alert of a webhook call, as a receiver reads it.
type hookAlert struct {
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// hookSink is a webhook receiver on loopback: every call it gets, in
// order.
type hookSink struct {
	URL   string
	calls chan []hookAlert
}

func startHookSink(t *testing.T) *hookSink {
	t.Helper()
	s := &hookSink{calls: make(chan []hookAlert, 1000)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct{ Alerts []hookAlert }
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		s.calls <- msg.Alerts
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// next returns the next call.
func (s *hookSink) next(t *testing.T) []hookAlert {
	t.Helper()
	select {
	case c := <-s.calls:
		return c
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook call within 30s")
		return nil
	}
}

// none fails if a call has come that was not taken.
func (s *hookSink) none(t *testing.T, after string) {
	t.Helper()
	select {
	case c := <-s.calls:
		t.Errorf("%s: one webhook call too many: %+v", after, c)
	default:
	}
}

// inState counts the instances of rule ("": any) in state on d's /status.
func (d *daemon) inState(t *testing.T, rule, state string) int {
	n := 0
	for _, in := range d.instances(t) {
		if (rule == "" || in.Rule == rule) && in.State == state {
			n++
		}
	}
	return n
}

// alertsOf returns the alerts of rule among calls, by check.
func alertsOf(calls [][]hookAlert, rule string) map[string][]hookAlert {
	out := make(map[string][]hookAlert)
	for _, c := range calls {
		for _, a := range c {
			if a.Labels["alertname"] == rule {
				out[a.Labels["check"]] = append(out[a.Labels["check"]], a)
			}
		}
	}
	return out
}

// TestRootCauseEndToEnd: a host down with 20 services on it pages once,
// naming the 20 it holds back; back with three services still down, it
// resolves, saying which 17 recovered with it, and the three page in one
// notification of their own.
func TestRootCauseEndToEnd(t *testing.T) {
	requirePlugins(t)
	hooks := startHookSink(t)
	gw := startService(t, "127.0.0.1:0")
	var svcs []*tcpService
	var checks strings.Builder
	fmt.Fprintf(&checks, "  gw:\n    command: [check_tcp, -H, \"{{host}}\", -p, %q]\n", gw.port())
	files := map[string]string{"hosts.d/127.0.0.1/gw": ""}
	var names []string
	for i := 1; i <= 20; i++ {
		s := startService(t, "127.0.0.1:0")
		svcs = append(svcs, s)
		name := fmt.Sprintf("svc%02d", i)
		names = append(names, name)
		fmt.Fprintf(&checks, "  %s:\n    command: [check_tcp, -H, \"{{host}}\", -p, %q]\n", name, s.port())
		files["hosts.d/127.0.0.1/"+name] = ""
	}
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	files["dmonitor.yaml"] = fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
receivers:
  hooks:
    webhook: {url: %q}
checks:
%s`, control, hooks.URL, checks.String())
	files["rules.d/deps.yaml"] = `rules:
  - name: host-up
    select: {check: gw}
    notify: [hooks]
  - name: service
    select: {check: "svc*"}
    depends_on: [host-up]
    notify: [hooks]
`
	writeTree(t, dir, files)
	d := startDaemon(t, dir, control)
	await.Until(t, "every check ok", func() bool { return d.inState(t, "", "ok") == 21 })

	gw.l.Close()
	for _, s := range svcs {
		s.l.Close()
	}
	page := hooks.next(t)
	if len(page) != 1 || page[0].Labels["alertname"] != "host-up" || page[0].Status != "firing" {
		t.Fatalf("first call %+v, want host-up firing alone", page)
	}
	held := page[0].Annotations["held_back"]
	if !strings.HasPrefix(held, "20 held back: ") {
		t.Errorf("the page says held_back %q, want the 20 services", held)
	}
	for _, n := range names {
		if !strings.Contains(held, n+" on 127.0.0.1") {
			t.Errorf("the page does not name %s: %q", n, held)
		}
	}
	await.Until(t, "every service held back", func() bool { return d.inState(t, "service", "suppressed") == 20 })
	hooks.none(t, "host down")

	// The host is back, and 17 services with it; three stay down.
	startService(t, gw.addr)
	for _, s := range svcs[:17] {
		startService(t, s.addr)
	}
	var calls [][]hookAlert
	await.Until(t, "the host resolved and the three services paged", func() bool {
		select {
		case c := <-hooks.calls:
			calls = append(calls, c)
		default:
		}
		host, services := alertsOf(calls, "host-up"), alertsOf(calls, "service")
		return len(host["gw"]) == 1 && len(services) == 3
	})
	resolved := alertsOf(calls, "host-up")["gw"][0]
	if resolved.Status != "resolved" {
		t.Fatalf("host-up: %+v, want resolved", resolved)
	}
	if got := resolved.Annotations["recovered_with_it"]; !strings.HasPrefix(got, "17: svc01 on 127.0.0.1") {
		t.Errorf("recovered_with_it = %q, want the 17", got)
	}
	if got, want := resolved.Annotations["still_failing"], "3: svc18 on 127.0.0.1 (service), svc19 on 127.0.0.1 (service), svc20 on 127.0.0.1 (service)"; got != want {
		t.Errorf("still_failing = %q, want %q", got, want)
	}
	services := alertsOf(calls, "service")
	if got := slices.Sorted(maps.Keys(services)); !slices.Equal(got, []string{"svc18", "svc19", "svc20"}) {
		t.Errorf("services paged: %v, want svc18-20", got)
	}
	for c, as := range services {
		if len(as) != 1 || as[0].Status != "firing" {
			t.Errorf("%s: %+v, want one firing", c, as)
		}
	}
	inOne := 0
	for _, c := range calls {
		if len(alertsOf([][]hookAlert{c}, "service")) == 3 {
			inOne++
		}
	}
	if inOne != 1 {
		t.Errorf("the three services came in %d calls (%+v), want one notification", len(calls), calls)
	}
	d.stop(t)
	hooks.none(t, "after the recovery")
}

// TestRedundantBalancersEndToEnd: an app behind the pair lb-a, lb-b
// (depends_on: [{any: [lb-a, lb-b]}]) pages in its own right while one
// balancer still serves; with both down, only the balancers page.
func TestRedundantBalancersEndToEnd(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	lbA, lbB, app := startService(t, "127.0.0.1:0"), startService(t, "127.0.0.1:0"), startService(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  lba:
    command: [check_tcp, -H, "{{host}}", -p, %q]
  lbb:
    command: [check_tcp, -H, "{{host}}", -p, %q]
  app:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, control, mail.Addr, lbA.port(), lbB.port(), app.port()),
		"rules.d/lb.yaml": `rules:
  - name: lb-a
    select: {check: lba}
  - name: lb-b
    select: {check: lbb}
  - name: app
    select: {check: app}
    depends_on: [{any: [lb-a, lb-b]}]
`,
		"hosts.d/127.0.0.1/lba":      "",
		"hosts.d/127.0.0.1/lbb":      "",
		"hosts.d/127.0.0.1/app":      "",
		"alert.d/oncall@example.org": "",
	})
	d := startDaemon(t, dir, control)
	await.Until(t, "every check ok", func() bool { return d.stateOf(t, "app") == "ok" && d.stateOf(t, "lb-a") == "ok" })

	subject := func() string { return mail.Next(t).Msg.Header.Get("Subject") }
	// One balancer down: it pages; the app, still served, does not.
	lbA.l.Close()
	if s := subject(); !strings.Contains(s, "FIRING") || !strings.Contains(s, "lb-a") {
		t.Fatalf("lb-a down: mail %q, want lb-a firing", s)
	}
	// The app fails on its own while lb-b carries the pair: a plain
	// parent lb-a would hold it back; the group does not.
	app.l.Close()
	if s := subject(); !strings.Contains(s, "FIRING") || !strings.Contains(s, "app") {
		t.Fatalf("app down, lb-b up: mail %q, want app firing in its own right", s)
	}
	app = startService(t, app.addr)
	if s := subject(); !strings.Contains(s, "RESOLVED") || !strings.Contains(s, "app") {
		t.Fatalf("app back: mail %q, want app resolved", s)
	}
	await.Until(t, "the app ok", func() bool { return d.stateOf(t, "app") == "ok" })

	// Both balancers down, and the app with them: lb-b pages, the app is
	// held back.
	lbB.l.Close()
	app.l.Close()
	if s := subject(); !strings.Contains(s, "FIRING") || !strings.Contains(s, "lb-b") {
		t.Fatalf("both balancers down: mail %q, want lb-b firing", s)
	}
	await.Until(t, "the app held back", func() bool { return d.stateOf(t, "app") == "suppressed" })
	d.stop(t)
	select {
	case m := <-mail.Received:
		t.Errorf("one mail too many: %s", m.Msg.Header.Get("Subject"))
	default:
	}
}

// flapPlugin fails every other run for its first 40 runs, then passes for
// good: a check flapping every interval that settles ok. It counts its runs
// in the file $1.
const flapPlugin = `#!/bin/sh
n=$(cat "$1" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$1"
if [ "$n" -le 40 ] && [ $((n % 2)) -eq 0 ]; then
	echo "CRITICAL - run $n"
	exit 2
fi
echo "OK - run $n"
`

// TestFlappingEndToEnd: a check flapping every interval for 40 intervals
// sends two notifications, not forty: that it started flapping, and the
// resolved that names the state it settled in.
func TestFlappingEndToEnd(t *testing.T) {
	hooks := startHookSink(t)
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	runs := filepath.Join(t.TempDir(), "runs")
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 500ms
control: {listen: %q}
tsdb: {listen: ""}
receivers:
  hooks:
    webhook: {url: %q}
checks:
  flip:
    command: [plugins/check_flip, %q]
`, control, hooks.URL, runs),
		"rules.d/flip.yaml": `rules:
  - name: flip
    select: {check: flip}
    for: 1s
    flapping: {changes: 4, window: 5s}
    notify: [hooks]
`,
		"hosts.d/127.0.0.1/flip": "",
		"plugins/check_flip":     flapPlugin,
	})
	d := startDaemon(t, dir, control)

	started := hooks.next(t)
	if len(started) != 1 || started[0].Status != "firing" || !strings.HasPrefix(started[0].Annotations["flapping"], "started: ") {
		t.Fatalf("first notification %+v, want one firing alert saying it started flapping", started)
	}
	await.Until(t, "the flapping to be seen", func() bool { return d.stateOf(t, "flip") == "flapping" })
	settled := hooks.next(t)
	if len(settled) != 1 || settled[0].Status != "resolved" || settled[0].Annotations["flapping"] != "settled: ok" {
		t.Fatalf("second notification %+v, want the resolved, settled: ok", settled)
	}
	if b, err := os.ReadFile(runs); err != nil || len(strings.TrimSpace(string(b))) == 0 {
		t.Fatalf("plugin runs: %q, %v", b, err)
	} else if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n <= 40 {
		t.Errorf("settled after %d runs, before the flapping ended at 40", n)
	}
	d.stop(t)
	hooks.none(t, "after it settled")
}

// TestFailureDomainsEndToEnd: three observers in two failure domains (a
// and b in eu, c in us), quorum_domains 2. eu's observers all failing
// while us passes is one partial-outage warning and no outage page; every
// domain failing is the outage page, and the partial alert resolves.
func TestFailureDomainsEndToEnd(t *testing.T) {
	c := newCluster(t, "")
	hooks := startHookSink(t)
	closed := loopback.FreeAddr(t)
	_, closedPort, _ := strings.Cut(closed, ":")
	for _, n := range []string{"a", "b", "c"} {
		path := filepath.Join(c.dirs[n], "dmonitor.yaml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		domain := "eu"
		if n == "c" {
			domain = "us"
		} else {
			c.env[n] = []string{"SVC_PORT=" + closedPort} // eu cannot reach the service
		}
		b = append(b, fmt.Sprintf("domain: %s\nquorum_domains: 2\nreceivers:\n  default:\n    webhook: {url: %q}\n", domain, hooks.URL)...)
		writeTree(t, c.dirs[n], map[string]string{"dmonitor.yaml": string(b)})
	}
	c.startAll()
	partial := hooks.next(t)
	if len(partial) != 1 || partial[0].Labels["alertname"] != "partial-outage" || partial[0].Status != "firing" ||
		partial[0].Labels["severity"] != "warning" {
		t.Fatalf("eu failing, us passing: %+v, want one partial-outage warning", partial)
	}
	if got, want := partial[0].Annotations["summary"], "127.0.0.1 svc down from every observer of 1 of 2 failure domains; an outage needs 2"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	await.Until(t, "the outage rule evaluated with both domains", func() bool {
		name, _ := c.leader()
		if name == "" {
			return false
		}
		st, ok := c.status(name)
		if !ok {
			return false
		}
		for _, in := range st.Instances {
			if in.Rule == "default" && in.Check == "svc" && in.State == "ok" {
				return true
			}
		}
		return false
	})
	hooks.none(t, "eu failing, us passing")

	// The service is down for us too: the outage pages.
	c.svc.l.Close()
	var calls [][]hookAlert
	await.Until(t, "the outage page and the partial alert resolved", func() bool {
		select {
		case call := <-hooks.calls:
			calls = append(calls, call)
		default:
		}
		out, part := alertsOf(calls, "default")["svc"], alertsOf(calls, "partial-outage")["svc"]
		return len(out) == 1 && len(part) == 1
	})
	if out := alertsOf(calls, "default")["svc"][0]; out.Status != "firing" {
		t.Errorf("outage: %+v, want firing", out)
	}
	if part := alertsOf(calls, "partial-outage")["svc"][0]; part.Status != "resolved" {
		t.Errorf("partial-outage: %+v, want resolved", part)
	}
	c.stopNodes()
}

// TestGroupingEndToEnd: twenty independent hosts down at once reach each
// destination of the receiver in at most two notifications, all twenty
// alerts in them, each with its own id; their recovery likewise.
func TestGroupingEndToEnd(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	hooks := startHookSink(t)
	_, port, _ := strings.Cut(loopback.FreeAddr(t), ":")
	files := map[string]string{"alert.d/oncall@example.org": ""}
	var svcs []*tcpService
	for i := 1; i <= 20; i++ {
		host := fmt.Sprintf("127.0.0.%d", i)
		svcs = append(svcs, startService(t, host+":"+port))
		files["hosts.d/"+host+"/svc"] = ""
	}
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	// group_wait covers the interval over which the checks are splayed.
	files["dmonitor.yaml"] = fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers:
  default:
    group_wait: 3s
    webhook: {url: %q}
checks:
  svc:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, control, mail.Addr, hooks.URL, port)
	writeTree(t, dir, files)
	d := startDaemon(t, dir, control)
	await.Until(t, "every host up", func() bool { return d.inState(t, "", "ok") == 20 })

	// collect takes the webhook calls and mails until every host has an
	// alert of status in them, and checks there are at most two of each.
	collect := func(status string) {
		t.Helper()
		calls, mails := 0, 0
		hooked, mailed := map[string]bool{}, map[string]bool{}
		await.Until(t, "20 "+status+" alerts by webhook and mail", func() bool {
			select {
			case c := <-hooks.calls:
				calls++
				for _, a := range c {
					if a.Status != status || a.ID == "" {
						t.Errorf("webhook alert %+v, want %s with an id", a, status)
					}
					hooked[a.Labels["host"]] = true
				}
			case m := <-mail.Received:
				mails++
				for id := range strings.SplitSeq(m.Msg.Header.Get("X-Dmonitor-Notification-Id"), ", ") {
					mailed[id] = true
				}
			default:
			}
			return len(hooked) == 20 && len(mailed) == 20
		})
		if calls > 2 || mails > 2 {
			t.Errorf("20 hosts %s: %d webhook calls and %d mails, want at most two of each", status, calls, mails)
		}
	}
	for _, s := range svcs {
		s.l.Close()
	}
	collect("firing")
	for _, s := range svcs {
		startService(t, s.addr)
	}
	collect("resolved")
	d.stop(t)
	hooks.none(t, "after the recovery")
}
