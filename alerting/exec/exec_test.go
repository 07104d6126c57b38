package exec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/exec"
	"github.com/dmonitor/dmonitor/alerting/webhook"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func firing() *alerting.Notification {
	i := alerting.Instance{Rule: "www-http", Labels: map[string]string{"host": "www1", "check": "http", "severity": "critical"}}
	_, tr := i.Next(t0, alerting.Input{Active: true, Annotations: map[string]string{"summary": "www1 http down"}}, alerting.Params{})
	return tr.Notification
}

// script writes an executable shell script into a temporary directory and
// returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func newNotifier(t *testing.T, cfg exec.Config) *exec.Notifier {
	t.Helper()
	x, err := exec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestNotifyExitCodes runs a script that saves its stdin and environment and
// exits with the code it is given.
func TestNotifyExitCodes(t *testing.T) {
	dir := t.TempDir()
	path := script(t, `cat > "$1/stdin.json"
printf '%s %s %s\n' "$DMONITOR_NOTIFICATION_ID" "$DMONITOR_STATUS" "$DMONITOR_RULE" > "$1/env"
echo "pager says $2" >&2
exit "$2"
`)
	n := firing()
	wantPayload, err := json.Marshal(webhook.Payload("script", "http://dmonitor.example.org:2929", n))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		code  int
		ok    bool
		retry bool
	}{
		{code: 0, ok: true},                    // delivered
		{code: exec.ExitTempFail, retry: true}, // 75: try again later
		{code: 1},                              // refused for good
	} {
		x := newNotifier(t, exec.Config{
			Command:  []string{path, dir, strconv.Itoa(tc.code)},
			Receiver: "script", ExternalURL: "http://dmonitor.example.org:2929",
		})
		retry, err := x.Notify(context.Background(), n)
		switch {
		case tc.ok && err != nil:
			t.Errorf("exit %d: %v", tc.code, err)
		case !tc.ok && err == nil:
			t.Errorf("exit %d: no error", tc.code)
		case !tc.ok:
			if retry != tc.retry {
				t.Errorf("exit %d: retry %v, want %v", tc.code, retry, tc.retry)
			}
			// The error says what the command said.
			if want := "pager says " + strconv.Itoa(tc.code); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), n.ID) {
				t.Errorf("exit %d: error %q, want the notification id and %q", tc.code, err, want)
			}
		}

		// The command read the webhook's payload, byte for byte.
		stdin, err := os.ReadFile(filepath.Join(dir, "stdin.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stdin, wantPayload) {
			t.Errorf("exit %d: stdin\n%s\nwant\n%s", tc.code, stdin, wantPayload)
		}
		var m webhook.Message
		if err := json.Unmarshal(stdin, &m); err != nil || m.Receiver != "script" || len(m.Alerts) != 1 || m.Alerts[0].ID != n.ID || m.Status != "firing" {
			t.Errorf("exit %d: stdin decodes to %+v (%v)", tc.code, m, err)
		}
		env, err := os.ReadFile(filepath.Join(dir, "env"))
		if err != nil {
			t.Fatal(err)
		}
		if want := n.ID + " firing www-http\n"; string(env) != want {
			t.Errorf("exit %d: environment %q, want %q", tc.code, env, want)
		}
		os.Remove(filepath.Join(dir, "stdin.json"))
	}
}

// TestNotifyTimeoutKillsGroup runs a command that starts a child and hangs:
// at the timeout both die, and the notification is to be retried.
func TestNotifyTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	path := script(t, `sleep 300 &
echo $! > "$1/child"
echo started
wait
`)
	x := newNotifier(t, exec.Config{Command: []string{path, dir}, Timeout: 500 * time.Millisecond})
	retry, err := x.Notify(context.Background(), firing())
	if err == nil || !retry {
		t.Fatalf("Notify: retry %v, err %v; want a retryable error", retry, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "started") {
		t.Errorf("error %q: want the timeout and the output", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	// The orphaned sleep must be gone (or a zombie waiting for init).
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the command's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestNewErrors(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "notify")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  exec.Config
		want string
	}{
		{exec.Config{}, "empty"},                                                         // no command
		{exec.Config{Command: []string{"page"}}, "absolute"},                             // relative: no PATH lookup
		{exec.Config{Command: []string{"/nonexistent/page"}}, "no such file"},            // missing
		{exec.Config{Command: []string{notExec}}, "not an executable"},                   // mode 0644
		{exec.Config{Command: []string{"/bin/true"}, Timeout: -time.Second}, "negative"}, // negative timeout
	} {
		if _, err := exec.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error about %q", tc.cfg, err, tc.want)
		}
	}
}
