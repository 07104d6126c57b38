package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// TestReloadLeavesNoOrphan reloads the configuration, by SIGHUP and by the
// file watcher, while incidents are open: a firing check moved to a new rule, a host removed
// while firing, a check added, a broken file. No incident is left without
// its resolved notification, none is paged twice, and a broken file keeps
// the configuration in force and says so.
func TestReloadLeavesNoOrphan(t *testing.T) {
	requirePlugins(t)
	mail := smtptest.Start(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	set := steer(t)
	for _, s := range []string{"a", "b", "c"} {
		set(s, "0")
	}
	yaml := fmt.Sprintf(`observer: solo
interval: 1s
control: {listen: %q}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers: {default: {group_wait: 0s}} # one mail per alert, as counted below
checks:
  ctl:
    command: [check_ctl, "{{host}}"]
`, control, mail.Addr)
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml":              yaml,
		"hosts.d/a/ctl":              "",
		"hosts.d/b/ctl":              "",
		"alert.d/oncall@example.org": "",
	})
	writeCtlPlugin(t, dir)
	d := startDaemon(t, dir, control)
	tally := newTally("")
	take := func() { drain(t, mail, tally) }
	up := func() bool {
		resp, err := http.Get("http://" + control + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}
	hup := func() {
		t.Helper()
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	set("a", "2")
	set("b", "2")
	await.Until(t, "a and b paged", func() bool { take(); return len(tally.firing) == 2 })

	// a's check moves from the default rule to a rule of its own: the
	// default rule's incident is resolved once, the new rule pages once.
	writeTree(t, dir, map[string]string{"rules.d/a.yaml": "rules:\n  - name: a-ctl\n    select: {host: a}\n"})
	hup()
	await.Until(t, "a's default incident resolved and a-ctl paged", func() bool {
		take()
		return len(tally.resolved) == 1 && len(tally.firing) == 3
	})

	// b is removed while firing and c added, with no signal: the file
	// watcher sees it. b's incident is resolved once, with the reason,
	// after the daemon restarts on the new tree.
	if err := os.RemoveAll(filepath.Join(dir, "hosts.d", "b")); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, map[string]string{"hosts.d/c/ctl": ""})
	await.Until(t, "b's incident resolved", func() bool { take(); return len(tally.resolved) == 2 })
	await.Until(t, "the control port back", up)
	await.Until(t, "c checked", func() bool { return d.state(t, "c", "ctl") == "ok" })

	// A broken file: refused, the configuration in force goes on.
	writeTree(t, dir, map[string]string{"dmonitor.yaml": yaml + "nonsense: [\n"})
	hup()
	await.Until(t, "the refusal counted", func() bool { return d.metric(t, "dmonitor_config_last_reload_successful") == 0 })
	if !strings.Contains(d.logText(), "configuration reload refused") {
		t.Errorf("the refusal is not logged")
	}
	set("a", "0")
	await.Until(t, "a-ctl resolved under the configuration in force", func() bool { take(); return len(tally.resolved) == 3 })
	d.stop(t)
	take()
	if len(tally.firing) != 3 || len(tally.resolved) != 3 || tally.duplicates() != 0 {
		t.Fatalf("firing %v, resolved %v: want three incidents, each paged once and resolved once", tally.firing, tally.resolved)
	}
}

// Only configuration counts as a change: a log or an editor's swap file
// in the tree is none, a host added is one, and the hash the nodes compare
// leaves out what is each node's own.
func TestConfigHash(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml":         "observer: a\ncontrol: {listen: '127.0.0.1:2929'}\n",
		"hosts.d/www1/ping":     "",
		"plugins/check_ping":    "#!/bin/sh\n",
		"rules.d/ping.yaml":     "rules: []\n",
		"alert.d/a@example.org": "",
	})
	hash := func() treeHash {
		t.Helper()
		cfg, err := config.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		h, err := configHash(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	first := hash()
	writeTree(t, dir, map[string]string{"dmonitor.log": "lots\n", ".dmonitor.yaml.swp": "x", "hosts.d/.www2.swp": "x", "backup/old.yaml": "x"})
	if h := hash(); h != first {
		t.Errorf("a log, swap files and a backup changed the hash: %+v, was %+v", h, first)
	}
	writeTree(t, dir, map[string]string{"dmonitor.yaml": "observer: b\ncontrol: {listen: '127.0.0.1:3939'}\n"})
	second := hash()
	if second.all == first.all || second.shared != first.shared {
		t.Errorf("another node's name and address: all %v, shared %v; want all changed, shared not", second.all != first.all, second.shared != first.shared)
	}
	writeTree(t, dir, map[string]string{"hosts.d/www2/ping": ""})
	third := hash()
	if third.shared == second.shared || third.withoutRules == second.withoutRules {
		t.Errorf("a host added did not change the hashes")
	}
	// A probe check's options are shared: two nodes probing another port
	// differ, though each node's dmonitor.yaml is its own.
	probeAt := func(port int) string {
		return fmt.Sprintf("observer: b\ncontrol: {listen: '127.0.0.1:3939'}\nchecks:\n  ping:\n    probe: {type: tcp, host: '{{host}}', port: %d}\n", port)
	}
	writeTree(t, dir, map[string]string{"dmonitor.yaml": probeAt(80)})
	p80 := hash()
	if p80.shared == third.shared {
		t.Errorf("a plugin check made a probe check did not change the shared hash")
	}
	if h := hash(); h != p80 {
		t.Errorf("the same probe hashed twice: %+v, then %+v", p80, h)
	}
	writeTree(t, dir, map[string]string{"dmonitor.yaml": probeAt(8080)})
	if h := hash(); h.shared == p80.shared {
		t.Errorf("a probe's port changed and the shared hash did not")
	}
}
