package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// ctlPlugin is a plugin steered by a file per subject: "0" OK, "2"
// CRITICAL, "hang" runs until the file says otherwise (no result at all:
// the observer's result goes stale and the instance unknown).
const ctlPlugin = `#!/bin/sh
f="$CTL_DIR/$1"
while [ "$(cat "$f")" = hang ]; do sleep 0.1; done
s=$(cat "$f")
echo "subject $1 says $s"
exit "$s"
`

// steer points check_ctl at a fresh directory of subjects and returns the
// func that sets what a subject says.
func steer(t *testing.T) func(subject, v string) {
	t.Helper()
	ctl := t.TempDir()
	t.Setenv("CTL_DIR", ctl)
	return func(subject, v string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(ctl, subject), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeCtlPlugin puts check_ctl in dir's plugins/.
func writeCtlPlugin(t *testing.T, dir string) {
	t.Helper()
	writeTree(t, dir, map[string]string{"plugins/check_ctl": ctlPlugin})
}

// TestKill9KeepsEveryIncident: a single node is killed with kill -9 while
// it holds an incident in each state (firing, acknowledged, silenced,
// unknown, suppressed by a parent that fires, and a pending one). After
// the restart every incident ends with exactly one resolved notification,
// and nothing is paged again.
func TestKill9KeepsEveryIncident(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	set := steer(t)
	subjects := []string{"fire", "ack", "sil", "unk", "pend", "dep-ping", "dep-svc"}
	for _, s := range subjects {
		set(s, "0")
	}
	const token = "kill9-token"
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: solo
interval: 1s
control: {listen: %q, token_file: token}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers: {default: {group_wait: 0s}} # one mail per alert, as counted below
checks:
  ctl:
    command: [check_ctl, "{{host}}"]
    timeout: 60s
  ping:
    command: [check_ctl, dep-ping]
  svc:
    command: [check_ctl, dep-svc]
`, control, mail.Addr),
		"rules.d/rules.yaml": `rules:
  - name: host-up
    select: {check: ping}
  - name: dep-svc
    select: {check: svc}
    depends_on: [host-up]
  - name: slow
    select: {host: pend}
    for: 1h
`,
		"token":                      token + "\n",
		"hosts.d/fire/ctl":           "",
		"hosts.d/ack/ctl":            "",
		"hosts.d/sil/ctl":            "",
		"hosts.d/unk/ctl":            "",
		"hosts.d/pend/ctl":           "",
		"hosts.d/dep/ping":           "",
		"hosts.d/dep/svc":            "",
		"alert.d/oncall@example.org": "",
	})
	writeCtlPlugin(t, dir)
	d := startDaemon(t, dir, control)
	await.Until(t, "every subject seen ok", func() bool {
		for _, in := range d.instances(t) {
			if in.State != "ok" {
				return false
			}
		}
		return len(d.instances(t)) == 7
	})

	tally := newTally("")
	take := func() { drain(t, mail, tally) }
	for _, s := range []string{"fire", "ack", "sil", "unk", "dep-svc", "pend"} {
		set(s, "2")
	}
	await.Until(t, "five pages", func() bool { take(); return len(tally.firing) == 5 })

	// Move each incident to the state it is to be killed in.
	if code, resp := d.api(t, "POST", "/api/v1/acks", token, `{"rule":"default","host":"ack","check":"ctl","by":"ann"}`); code != http.StatusOK {
		t.Fatalf("acknowledge: %d %s", code, resp)
	}
	body := fmt.Sprintf(`{"matchers":[{"name":"host","value":"sil","isRegex":false,"isEqual":true}],
		"endsAt":%q,"createdBy":"ann","comment":"maintenance"}`, time.Now().Add(time.Hour).Format(time.RFC3339))
	if code, resp := d.api(t, "POST", "/api/v1/silences", token, body); code != http.StatusOK {
		t.Fatalf("silence: %d %s", code, resp)
	}
	set("unk", "hang")
	set("dep-ping", "2")
	want := map[string]string{"fire": "firing", "ack": "acknowledged", "sil": "silenced", "unk": "unknown", "pend": "pending"}
	inState := func() bool {
		for _, in := range d.instances(t) {
			if w, ok := want[in.Host]; ok && in.State != w {
				return false
			}
		}
		return d.stateOf(t, "dep-svc") == "suppressed" && d.stateOf(t, "host-up") == "firing"
	}
	await.Until(t, "every incident in its state", inState)
	await.Until(t, "the parent's page", func() bool { take(); return len(tally.firing) == 6 })

	d.waitSent(t, tally.firing)
	d.kill(t)
	d = startDaemon(t, dir, control)
	await.Until(t, "every incident restored in its state", inState)

	for _, s := range subjects {
		set(s, "0")
	}
	await.Until(t, "six resolved", func() bool { take(); return len(tally.resolved) == 6 })
	d.stop(t)
	take()
	if len(tally.firing) != 6 || tally.duplicates() != 0 {
		t.Fatalf("firing %v, resolved %v: want six incidents, each paged once and resolved once", tally.firing, tally.resolved)
	}
}

// TestAlertStateInTSDBIsHistoryOnly writes dmonitor.alert.state through the
// embedded store's OpenTSDB API, as anyone who reaches port 4242 can:
// "ok" over a firing alert and "firing" for one that never fired. Across a
// kill -9 and a restart neither changes an alert: no page again, no bogus
// resolved, and the real incident resolves once.
func TestAlertStateInTSDBIsHistoryOnly(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	control, tsdbAPI := loopback.FreeAddr(t), loopback.FreeAddr(t)
	dir := t.TempDir()
	set := steer(t)
	set("down", "0")
	set("fine", "0")
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: solo
interval: 1s
control: {listen: %q}
tsdb: {listen: %q}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  ctl:
    command: [check_ctl, "{{host}}"]
`, control, tsdbAPI, mail.Addr),
		"hosts.d/down/ctl":           "",
		"hosts.d/fine/ctl":           "",
		"alert.d/oncall@example.org": "",
	})
	writeCtlPlugin(t, dir)
	d := startDaemon(t, dir, control)
	tally := newTally("")
	take := func() { drain(t, mail, tally) }
	set("down", "2")
	await.Until(t, "the page", func() bool { take(); return len(tally.firing) == 1 })

	now := time.Now().Unix()
	body := fmt.Sprintf(`[{"metric":"dmonitor.alert.state","timestamp":%d,"value":0,"tags":{"rule":"default","host":"down","check":"ctl"}},
		{"metric":"dmonitor.alert.state","timestamp":%d,"value":2,"tags":{"rule":"default","host":"fine","check":"ctl"}}]`, now, now)
	resp, err := http.Post("http://"+tsdbAPI+"/api/put", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("/api/put answered %s", resp.Status)
	}
	d.waitSent(t, tally.firing)
	d.kill(t)
	d = startDaemon(t, dir, control)
	await.Until(t, "the firing alert restored", func() bool { return d.state(t, "down", "ctl") == "firing" && d.state(t, "fine", "ctl") == "ok" })
	set("down", "0")
	await.Until(t, "the recovery", func() bool { take(); return len(tally.resolved) == 1 })
	d.stop(t)
	take()
	if len(tally.firing) != 1 || len(tally.resolved) != 1 || tally.duplicates() != 0 {
		t.Fatalf("firing %v, resolved %v: want the one incident, paged once and resolved once", tally.firing, tally.resolved)
	}
}
