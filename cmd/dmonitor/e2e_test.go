package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// TestOutageMailsAndRecovery is the whole standalone path: a real service
// on loopback, Debian's check_tcp, the daemon, and a real SMTP server.
func TestOutageMailsAndRecovery(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	hooks := make(chan map[string]any, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg map[string]any
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		hooks <- msg
	}))
	t.Cleanup(hook.Close)
	svc := startService(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	// alert.d/ and the webhook both feed the receiver "default": one
	// incident, two destinations, each told once per transition.
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers:
  default:
    webhook: {url: %q}
checks:
  svc:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, control, mail.Addr, hook.URL, svc.port()),
		"hosts.d/127.0.0.1/svc":      "",
		"alert.d/oncall@example.org": "",
	})
	d := startDaemon(t, dir, control)
	await.Until(t, "the service to be seen up", func() bool { return d.state(t, "127.0.0.1", "svc") == "ok" })

	svc.l.Close()
	fired := mail.Next(t)
	if got := fired.Msg.Header.Get("Subject"); !strings.Contains(got, "FIRING") || !strings.Contains(got, "127.0.0.1") || !strings.Contains(got, "svc") {
		t.Errorf("firing subject = %q", got)
	}
	if len(fired.To) != 1 || fired.To[0] != "oncall@example.org" {
		t.Errorf("firing mail to %v, want oncall@example.org", fired.To)
	}
	if !strings.Contains(fired.Body, "Connection refused") {
		t.Errorf("firing mail does not carry the plugin output:\n%s", fired.Body)
	}

	startService(t, svc.addr)
	resolved := mail.Next(t)
	if got := resolved.Msg.Header.Get("Subject"); !strings.Contains(got, "RESOLVED") {
		t.Errorf("recovery subject = %q", got)
	}
	fid, rid := fired.Msg.Header.Get("X-Dmonitor-Notification-Id"), resolved.Msg.Header.Get("X-Dmonitor-Notification-Id")
	if fid == "" || rid == "" || fid == rid {
		t.Errorf("notification ids %q and %q: want two distinct ids", fid, rid)
	}
	for _, want := range []struct{ status, id string }{{"firing", fid}, {"resolved", rid}} {
		var msg map[string]any
		select {
		case msg = <-hooks:
		case <-time.After(15 * time.Second):
			t.Fatalf("no %s webhook", want.status)
		}
		alerts, _ := msg["alerts"].([]any)
		if msg["status"] != want.status || len(alerts) != 1 || alerts[0].(map[string]any)["id"] != want.id {
			t.Errorf("webhook = %v, want %s with the mail's id %s", msg, want.status, want.id)
		}
	}
	d.stop(t)
	select {
	case m := <-mail.Received:
		t.Errorf("one mail too many: %s", m.Msg.Header.Get("Subject"))
	case m := <-hooks:
		t.Errorf("one webhook too many: %v", m)
	default:
	}
}

// TestHistorySurvivesRestartAndKill9 checks that every datapoint the daemon
// reported written is still in the store after kill -9, and that a restart
// adds to the history instead of replacing it.
func TestHistorySurvivesRestartAndKill9(t *testing.T) {
	requirePlugins(t)
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	files := map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
checks:
  dummy:
    command: [check_dummy, "0", "ok {{host}}"]
`, control),
	}
	for i := range 10 {
		files[fmt.Sprintf("hosts.d/h%d/dummy", i)] = ""
	}
	writeTree(t, dir, files)
	dataDir := filepath.Join(dir, "data", "tsdb")
	begin := time.Now()

	d := startDaemon(t, dir, control)
	var acked float64
	await.Until(t, "100 datapoints written", func() bool { acked = d.metric(t, "dmonitor_tsdb_points_written_total"); return acked >= 100 })
	d.kill(t)
	afterKill := countPoints(t, dataDir, begin)
	if afterKill < int(acked) {
		t.Fatalf("after kill -9: %d datapoints in the store, %v were acknowledged", afterKill, acked)
	}

	d = startDaemon(t, dir, control)
	await.Until(t, "100 more datapoints written", func() bool { return d.metric(t, "dmonitor_tsdb_points_written_total") >= 100 })
	d.stop(t)
	if total := countPoints(t, dataDir, begin); total < afterKill+100 {
		t.Fatalf("after restart: %d datapoints, want at least %d (the first run's %d and 100 more)", total, afterKill+100, afterKill)
	}
}

// countPoints opens the daemon's store after it has stopped and counts the
// datapoints of the check metrics and the heartbeat since begin.
func countPoints(t testing.TB, dir string, begin time.Time) int {
	t.Helper()
	s, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	for _, m := range []string{"dmonitor.check.status", "dmonitor.check.duration", "dmonitor.check.perf", "dmonitor.observer.up"} {
		series, err := s.Query(context.Background(), tsdb.Query{Metric: m, Start: begin.Add(-time.Minute), End: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		for _, sr := range series {
			n += len(sr.Samples)
		}
	}
	return n
}

// TestDependencyPagesTheCause runs rules.d with a dependency through the
// real daemon: when the parent's service and the child's both go down,
// only the parent pages; when the parent comes back and the child is
// still down, the child pages.
func TestDependencyPagesTheCause(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	gw := startService(t, "127.0.0.1:0")
	app := startService(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers: {default: {group_wait: 0s}} # one mail per alert, as counted below
checks:
  gw:
    command: [check_tcp, -H, "{{host}}", -p, %q]
  app:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, control, mail.Addr, gw.port(), app.port()),
		"rules.d/deps.yaml": `rules:
  - name: gw-up
    select: {check: gw}
  - name: app-up
    select: {check: app}
    depends_on: [gw-up]
`,
		"hosts.d/127.0.0.1/gw":       "",
		"hosts.d/127.0.0.1/app":      "",
		"alert.d/oncall@example.org": "",
	})
	d := startDaemon(t, dir, control)
	await.Until(t, "both checks ok", func() bool {
		return d.state(t, "127.0.0.1", "gw") == "ok" && d.state(t, "127.0.0.1", "app") == "ok"
	})

	app.l.Close()
	gw.l.Close()
	if got := mail.Next(t).Msg.Header.Get("Subject"); !strings.Contains(got, "FIRING") || !strings.Contains(got, "gw-up") {
		t.Fatalf("first mail %q, want the parent gw-up firing", got)
	}
	await.Until(t, "the child to read suppressed", func() bool { return d.stateOf(t, "app-up") == "suppressed" })

	startService(t, gw.addr)
	got := map[string]bool{}
	for range 2 {
		got[mail.Next(t).Msg.Header.Get("Subject")] = true
	}
	var parentResolved, childFiring bool
	for s := range got {
		parentResolved = parentResolved || strings.Contains(s, "RESOLVED") && strings.Contains(s, "gw-up")
		childFiring = childFiring || strings.Contains(s, "FIRING") && strings.Contains(s, "app-up")
	}
	if !parentResolved || !childFiring {
		t.Fatalf("after the parent came back: %v; want gw-up resolved and app-up firing", got)
	}
	d.stop(t)
	select {
	case m := <-mail.Received:
		t.Errorf("one mail too many: %s", m.Msg.Header.Get("Subject"))
	default:
	}
}

// api calls the control API with the bearer token and returns the status
// and body.
func (d *daemon) api(t testing.TB, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSilenceAndAcknowledge: an operator silences a host through the
// control API before its service fails; nothing is mailed until the
// silence is expired; then the page goes out and can be acknowledged.
func TestSilenceAndAcknowledge(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	svc := startService(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	const token = "s3cret-token"
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
control: {listen: %q, token_file: token}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  svc:
    command: [check_tcp, -H, "{{host}}", -p, %q]
`, control, mail.Addr, svc.port()),
		"token":                      token + "\n",
		"hosts.d/127.0.0.1/svc":      "",
		"alert.d/oncall@example.org": "",
	})
	d := startDaemon(t, dir, control)
	await.Until(t, "the service to be seen up", func() bool { return d.state(t, "127.0.0.1", "svc") == "ok" })

	if code, _ := d.api(t, "POST", "/api/v1/silences", "wrong", `{}`); code != http.StatusUnauthorized {
		t.Fatalf("a wrong token got %d, want 401", code)
	}
	body := fmt.Sprintf(`{"matchers":[{"name":"host","value":"127.0.0.1","isRegex":false,"isEqual":true}],
		"startsAt":%q,"endsAt":%q,"createdBy":"ann","comment":"maintenance"}`,
		time.Now().Add(-time.Minute).Format(time.RFC3339), time.Now().Add(time.Hour).Format(time.RFC3339))
	code, resp := d.api(t, "POST", "/api/v1/silences", token, body)
	if code != http.StatusOK {
		t.Fatalf("create silence: %d %s", code, resp)
	}
	var created struct{ SilenceID string }
	if err := json.Unmarshal([]byte(resp), &created); err != nil || created.SilenceID == "" {
		t.Fatalf("create silence answered %s", resp)
	}

	svc.l.Close()
	await.Until(t, "the alert to read silenced", func() bool { return d.state(t, "127.0.0.1", "svc") == "silenced" })
	select {
	case m := <-mail.Received:
		t.Fatalf("mailed during a silence: %s", m.Msg.Header.Get("Subject"))
	default:
	}

	if code, resp := d.api(t, "DELETE", "/api/v1/silence/"+created.SilenceID, token, ""); code != http.StatusOK {
		t.Fatalf("expire silence: %d %s", code, resp)
	}
	if got := mail.Next(t).Msg.Header.Get("Subject"); !strings.Contains(got, "FIRING") {
		t.Fatalf("after the silence: %q, want the firing mail", got)
	}
	code, resp = d.api(t, "POST", "/api/v1/acks", token, `{"rule":"default","host":"127.0.0.1","check":"svc","by":"ann","comment":"on it"}`)
	if code != http.StatusOK {
		t.Fatalf("acknowledge: %d %s", code, resp)
	}
	await.Until(t, "the alert to read acknowledged", func() bool { return d.state(t, "127.0.0.1", "svc") == "acknowledged" })
}
