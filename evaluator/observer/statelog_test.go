package observer

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/syncbuf"
	"github.com/dmonitor/dmonitor/plugin"
)

// TestStateChangesLoggedAtInfo runs a real plugin whose status a file sets:
// each run whose status differs from this observer's previous one for the
// target is logged at info with both statuses and the output, a check
// failing from its first run too; a repeated status, and a first OK, only
// at debug.
func TestStateChangesLoggedAtInfo(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "check_state")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nread s < \"$1\"\necho \"STATE $s - disk at 91%|used=91%\"\nexit $s\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	status := map[string]string{"www1": filepath.Join(dir, "www1"), "db1": filepath.Join(dir, "db1")}
	set := func(host, s string) {
		t.Helper()
		if err := os.WriteFile(status[host], []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := &config.Check{Name: "disk", Command: []string{script, filepath.Join(dir, "{{host}}")}, Interval: time.Hour, Timeout: 10 * time.Second}
	cfg := &config.Config{Observer: "eu-1", Interval: time.Hour, Checks: map[string]*config.Check{"disk": c},
		Targets: []config.Target{{Host: "db1", Check: c}, {Host: "www1", Check: c}}}
	var logs syncbuf.Buffer
	ob := New(Options{
		Config: cfg, Runner: plugin.NewRunner(2, plugin.Options{}),
		Writer: NewWriter(nil, nil, WriterOptions{}), // never run: Write only queues
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	// The schedule is built, not started: the test runs each check itself.
	if err := ob.Schedule(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ob.scheduler.Shutdown()
		ob.killChecks()
	})
	run := func(host string) string {
		t.Helper()
		if !ob.Recheck(host, "disk") {
			t.Fatalf("no check disk on %s", host)
		}
		ob.rechecks.Wait()
		return logs.Take()
	}
	const changed = `msg="check state changed"`

	steps := []struct {
		host, status string
		want         string // the info line, "" for none
	}{
		// A first OK: nothing changed that anyone waits to read about.
		{"www1", "0", ""},
		{"www1", "2", `level=INFO msg="check state changed" host=www1 check=disk from=OK to=CRITICAL output="STATE 2 - disk at 91%"`},
		// The same status again is no change.
		{"www1", "2", ""},
		{"www1", "1", `level=INFO msg="check state changed" host=www1 check=disk from=CRITICAL to=WARNING output="STATE 1 - disk at 91%"`},
		{"www1", "0", `level=INFO msg="check state changed" host=www1 check=disk from=WARNING to=OK output="STATE 0 - disk at 91%"`},
		// Failing from the first run on.
		{"db1", "2", `level=INFO msg="check state changed" host=db1 check=disk from=none to=CRITICAL output="STATE 2 - disk at 91%"`},
	}
	for i, s := range steps {
		set(s.host, s.status)
		out := run(s.host)
		if s.want == "" {
			if strings.Contains(out, changed) || !strings.Contains(out, `level=DEBUG msg="check result" host=`+s.host) {
				t.Errorf("step %d (%s %s): want only a debug line, got:\n%s", i, s.host, s.status, out)
			}
			continue
		}
		if strings.Count(out, changed) != 1 || !strings.Contains(out, s.want) || strings.Contains(out, `msg="check result"`) {
			t.Errorf("step %d (%s %s): want one line containing\n%s\ngot:\n%s", i, s.host, s.status, s.want, out)
		}
	}
}
