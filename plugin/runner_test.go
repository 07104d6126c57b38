package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// script writes a bash plugin with body to a fresh temporary directory and
// returns its absolute path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "check_test")
	if err := os.WriteFile(path, []byte("#!/bin/bash\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// testCtx returns a context that ends well before the test binary's own
// timeout, so a hanging Run fails its test with a result to look at.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPID reads the process id a test plugin wrote to path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, "pid file "+path, 10*time.Second, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

// gone reports whether pid no longer runs. A zombie counts as gone: it has
// been killed, and PID 1 of a container may never reap it.
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

func killOnCleanup(t *testing.T, pid int) {
	t.Helper()
	t.Cleanup(func() {
		if p, err := os.FindProcess(pid); err == nil && !gone(pid) {
			p.Kill()
		}
	})
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	tests := []struct {
		name     string
		mainTrap string // how the plugin itself treats SIGTERM
	}{
		// The plugin dies on SIGTERM; its child, ignoring SIGTERM, must
		// still go (killed with the group once the plugin has exited).
		{name: "plugin obeys SIGTERM", mainTrap: ""},
		// Neither obeys: only the SIGKILL after the grace period stops them.
		{name: "plugin ignores SIGTERM", mainTrap: `trap "" TERM`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "child.pid")
			path := script(t, tt.mainTrap+`
bash -c 'trap "" TERM; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 300' child "$1" &
echo "partial line"
wait
echo "OK - never printed"`)
			r := NewRunner(2, Options{Grace: 300 * time.Millisecond})
			res := r.Run(testCtx(t, 30*time.Second), Command{Argv: []string{path, pidFile}, Timeout: time.Second})

			child := readPID(t, pidFile)
			killOnCleanup(t, child)
			if res.Status != check.Critical || res.Raw != check.RawTimeout || res.ExitCode != -1 {
				t.Errorf("got status %v raw %q exit %d, want CRITICAL TIMEOUT -1; output %q", res.Status, res.Raw, res.ExitCode, res.Output)
			}
			if !strings.HasPrefix(res.Output, "plugin timed out after 1s") || !strings.Contains(res.Output, "partial line") {
				t.Errorf("output %q: want the timeout and the partial output", res.Output)
			}
			waitFor(t, fmt.Sprintf("child %d killed", child), 10*time.Second, func() bool { return gone(child) })
		})
	}
}

// A plugin that exits at once but leaves a child holding its stdout: Run
// must report the plugin's own status, not wait for the child (300s, longer
// than the test's context) or time out (60s).
func TestRunBackgroundChildDoesNotHoldRun(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	path := script(t, `
sleep 300 &
echo $! > "$1"
echo "WARNING - left a child behind | kids=1"
exit 1`)
	r := NewRunner(2, Options{})
	res := r.Run(testCtx(t, 20*time.Second), Command{Argv: []string{path, pidFile}, Timeout: 60 * time.Second})
	child := readPID(t, pidFile)
	killOnCleanup(t, child)

	if res.Status != check.Warning || res.Raw != "WARNING" || res.ExitCode != 1 {
		t.Fatalf("got status %v raw %q exit %d output %q, want WARNING exit 1", res.Status, res.Raw, res.ExitCode, res.Output)
	}
	if res.Output != "WARNING - left a child behind" || len(res.Perf) != 1 || res.Perf[0].Label != "kids" {
		t.Errorf("got output %q perf %+v", res.Output, res.Perf)
	}
	waitFor(t, fmt.Sprintf("child %d killed", child), 10*time.Second, func() bool { return gone(child) })
}

func TestRunConcurrencyBound(t *testing.T) {
	const workers, runs = 2, 6
	dir := t.TempDir()
	running := filepath.Join(dir, "running")
	seen := filepath.Join(dir, "seen")
	for _, d := range []string{running, seen} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Each run enters, counts who is inside (twice, around a pause that
	// makes overlap certain without a bound), and leaves.
	path := script(t, `
mkdir "$1/$$"
a=$(ls "$1" | wc -l)
sleep 0.3
b=$(ls "$1" | wc -l)
echo "$a $b" > "$2/$$"
rmdir "$1/$$"
echo OK`)

	r := NewRunner(workers, Options{})
	ctx := testCtx(t, 30*time.Second)
	var wg sync.WaitGroup
	results := make([]check.Result, runs)
	for i := range results {
		wg.Go(func() {
			results[i] = r.Run(ctx, Command{Argv: []string{path, running, seen}})
		})
	}
	wg.Wait()

	for i, res := range results {
		if res.Status != check.OK {
			t.Errorf("run %d: %v %q", i, res.Status, res.Output)
		}
	}
	entries, err := os.ReadDir(seen)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != runs {
		t.Errorf("%d runs recorded, want %d", len(entries), runs)
	}
	most := 0
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(seen, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			most = max(most, n)
		}
	}
	if most > workers {
		t.Errorf("%d plugins ran at once, want at most %d", most, workers)
	}
	t.Logf("at most %d at once", most)
}

func TestRunOutputCap(t *testing.T) {
	// 10 MiB on each stream: far more than a pipe holds, so a runner that
	// stopped reading at its cap would leave the plugin blocked until the
	// timeout.
	path := script(t, `
head -c 10485760 /dev/zero | tr '\0' e >&2
head -c 10485760 /dev/zero | tr '\0' x
echo
exit 1`)
	r := NewRunner(1, Options{})
	res := r.Run(testCtx(t, 30*time.Second), Command{Argv: []string{path}, Timeout: 20 * time.Second})
	if res.Status != check.Warning || res.ExitCode != 1 {
		t.Fatalf("got status %v raw %q exit %d, want WARNING exit 1; output starts %.80q", res.Status, res.Raw, res.ExitCode, res.Output)
	}
	msg, note, ok := strings.Cut(res.Output, "\n")
	if !ok || note != truncatedNote {
		t.Errorf("output does not end in %q: ends %q", truncatedNote, res.Output[max(0, len(res.Output)-40):])
	}
	if len(msg) != DefaultMaxStdout || strings.Trim(msg, "x") != "" {
		t.Errorf("message has %d bytes (want %d of x)", len(msg), DefaultMaxStdout)
	}

	// A smaller configured cap is honoured.
	r = NewRunner(1, Options{MaxStdout: 100})
	res = r.Run(testCtx(t, 30*time.Second), Command{Argv: []string{path}, Timeout: 20 * time.Second})
	if want := strings.Repeat("x", 100) + "\n" + truncatedNote; res.Output != want {
		t.Errorf("with MaxStdout 100: output %.200q", res.Output)
	}
}

func TestRunCannotStart(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "check_noexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho OK\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "check_missing")
	tests := []struct {
		name string
		argv []string
		want []string // substrings of Output
	}{
		// The path and the OS error tell the operator what to fix.
		{name: "missing", argv: []string{missing, "host"}, want: []string{missing, "no such file or directory"}},
		{name: "not executable", argv: []string{notExec}, want: []string{notExec, "permission denied"}},
		{name: "a directory", argv: []string{dir}, want: []string{dir, "permission denied"}},
		// Plugin paths are resolved by config; a relative one is a bug.
		{name: "relative path", argv: []string{"check_dummy", "0"}, want: []string{"check_dummy", "not absolute"}},
		{name: "empty command", argv: nil, want: []string{"empty command"}},
	}
	r := NewRunner(1, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := r.Run(testCtx(t, 10*time.Second), Command{Argv: tt.argv})
			if res.Status != check.Unknown || res.Raw != "UNKNOWN" || res.ExitCode != -1 {
				t.Errorf("got status %v raw %q exit %d, want UNKNOWN -1", res.Status, res.Raw, res.ExitCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Output, w) {
					t.Errorf("output %q does not mention %q", res.Output, w)
				}
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	path := script(t, `
echo $$ > "$1.tmp"; mv "$1.tmp" "$1"
exec sleep 300`)
	r := NewRunner(1, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	done := make(chan check.Result)
	go func() { done <- r.Run(ctx, Command{Argv: []string{path, started}, Timeout: time.Minute}) }()
	pid := readPID(t, started)
	killOnCleanup(t, pid)

	// With the only slot taken, a second run waits; its own ctx, already
	// done, must send it away without starting anything.
	queuedCtx, queuedCancel := context.WithCancel(context.Background())
	queuedCancel()
	q := r.Run(queuedCtx, Command{Argv: []string{path, filepath.Join(dir, "never")}})
	if q.Status != check.Unknown || !strings.Contains(q.Output, "not started") {
		t.Errorf("queued run: got %v %q, want UNKNOWN not started", q.Status, q.Output)
	}

	cancel()
	var res check.Result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its ctx was cancelled")
	}
	if res.Status != check.Unknown || res.Raw != "UNKNOWN" || res.ExitCode != -1 || !strings.Contains(res.Output, "cancelled") {
		t.Errorf("got status %v raw %q exit %d output %q, want UNKNOWN -1 cancelled", res.Status, res.Raw, res.ExitCode, res.Output)
	}
	waitFor(t, "plugin killed", 10*time.Second, func() bool { return gone(pid) })
	if _, err := os.Stat(filepath.Join(dir, "never")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the queued plugin ran: %v", err)
	}
}

func TestRunArgsEnvAndStreams(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		args   []string
		status check.Status
		raw    string
		exit   int
		output string
	}{
		{
			// Arguments arrive as given, with no shell to split or expand
			// them; LC_ALL is C whatever the daemon has.
			name: "args and env", body: `echo OK; printf '%s\n' "$LC_ALL" "$1" "$2"`,
			args:   []string{"two words", "$(echo injected);*"},
			status: check.OK, raw: "OK", exit: 0,
			output: "C\ntwo words\n$(echo injected);*",
		},
		{
			// Only stderr: it becomes the message, so the failure is visible.
			name: "stderr only", body: `echo "cannot resolve db1" >&2; exit 2`,
			status: check.Critical, raw: "CRITICAL", exit: 2,
			output: "cannot resolve db1",
		},
		{
			// FAIL with exit 0 is the dmonitor convention, and is CRITICAL.
			name: "dmonitor FAIL", body: `echo FAIL; echo "replica lag 300s"`,
			status: check.Critical, raw: check.RawFail, exit: 0,
			output: "replica lag 300s",
		},
		{
			// Killed by a signal: no exit code, UNKNOWN, and the signal named.
			name: "killed by signal", body: `echo "started"; kill -USR1 $$`,
			status: check.Unknown, raw: "UNKNOWN", exit: -1,
			output: "started\n(plugin killed by signal: user defined signal 1)",
		},
	}
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	r := NewRunner(2, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := script(t, tt.body)
			before := time.Now()
			res := r.Run(testCtx(t, 20*time.Second), Command{Argv: append([]string{path}, tt.args...)})
			if res.Status != tt.status || res.Raw != tt.raw || res.ExitCode != tt.exit || res.Output != tt.output {
				t.Errorf("got %v %q exit %d output %q\nwant %v %q exit %d output %q",
					res.Status, res.Raw, res.ExitCode, res.Output, tt.status, tt.raw, tt.exit, tt.output)
			}
			if res.Start.Before(before) || res.Duration <= 0 {
				t.Errorf("start %v (test began %v), duration %v", res.Start, before, res.Duration)
			}
		})
	}
}
