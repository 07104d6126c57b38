// Package exec is the command notifier: it runs a command for each
// notification, with the webhook payload (alerting/webhook's Message) as JSON
// on its stdin.
package exec

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/webhook"
)

// DefaultTimeout bounds one run of the command when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// ExitTempFail is the exit code (EX_TEMPFAIL of sysexits.h) by which a
// command says "not delivered, try again later".
const ExitTempFail = 75

// maxOutput is how much of the command's output goes into an error.
const maxOutput = 4 << 10

// waitDelay is how long the output may stay open after the command has
// exited or been killed, e.g. by a background process it left behind.
const waitDelay = 2 * time.Second

// The environment variables a command gets besides dmonitor's own.
const (
	EnvNotificationID = "DMONITOR_NOTIFICATION_ID"
	EnvStatus         = "DMONITOR_STATUS" // firing or resolved
	EnvRule           = "DMONITOR_RULE"
)

// Config configures a Notifier.
type Config struct {
	// Command is the argv; Command[0] is an absolute path. It is run
	// directly, never through a shell.
	Command []string
	// Receiver and ExternalURL go into the payload, as for the webhook.
	Receiver    string
	ExternalURL string
	Timeout     time.Duration // per run; DefaultTimeout when zero
}

// Notifier runs a command per notification. It is safe for concurrent use.
type Notifier struct {
	argv        []string
	receiver    string
	externalURL string
	timeout     time.Duration
}

var _ alerting.Notifier = (*Notifier)(nil)

// New returns a Notifier for cfg, or an error naming every field that is
// wrong. The command must exist and be executable now; one that goes away
// later is a delivery failure.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	switch {
	case len(cfg.Command) == 0:
		errs = append(errs, errors.New("exec command: empty"))
	case !filepath.IsAbs(cfg.Command[0]):
		errs = append(errs, fmt.Errorf("exec command %q: not an absolute path", cfg.Command[0]))
	default:
		if fi, err := os.Stat(cfg.Command[0]); err != nil {
			errs = append(errs, fmt.Errorf("exec command: %w", err))
		} else if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("exec command %s: not an executable file", cfg.Command[0]))
		}
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("exec timeout %v: negative", cfg.Timeout))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Notifier{
		argv:        append([]string(nil), cfg.Command...),
		receiver:    cfg.Receiver,
		externalURL: cfg.ExternalURL,
		timeout:     cmp.Or(cfg.Timeout, DefaultTimeout),
	}, nil
}

// Notify runs the command with webhook.Payload(receiver, externalURL, n) as
// JSON on its stdin and EnvNotificationID, EnvStatus and EnvRule added to
// dmonitor's environment. The command runs in a process group of its own,
// killed as a whole at the timeout.
//
// Exit status 0 is delivered. Exit status ExitTempFail (75), a timeout, death
// by a signal and a failure to start are worth retrying (retry true); any
// other exit status is a permanent failure. The error carries the start of
// the command's output (stdout and stderr together).
func (x *Notifier) Notify(ctx context.Context, n *alerting.Notification) (retry bool, err error) {
	payload, err := json.Marshal(webhook.Payload(x.receiver, x.externalURL, n))
	if err != nil {
		return false, fmt.Errorf("encode payload of notification %s: %w", n.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, x.timeout)
	defer cancel()

	cmd := osexec.CommandContext(ctx, x.argv[0], x.argv[1:]...)
	cmd.Env = append(os.Environ(),
		EnvNotificationID+"="+n.ID,
		EnvStatus+"="+string(n.Status),
		EnvRule+"="+n.Rule,
	)
	cmd.Stdin = bytes.NewReader(payload)
	out := &capped{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// The command leads a group of its own, so that what it starts dies
	// with it at the timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay

	err = cmd.Run()
	var exit *osexec.ExitError
	switch {
	case err == nil, errors.Is(err, osexec.ErrWaitDelay) && cmd.ProcessState.Success():
		// Success, even if something it left behind held the output open.
		return false, nil
	case ctx.Err() != nil:
		// Timed out (or dmonitor is stopping): the group was killed.
		return true, fmt.Errorf("notification %s: command %s killed (timeout %v): %w%s", n.ID, x.argv[0], x.timeout, ctx.Err(), out.suffix())
	case errors.As(err, &exit):
		code := exit.ExitCode() // -1 when killed by a signal
		retry = code == ExitTempFail || code < 0
		return retry, fmt.Errorf("notification %s: command %s: %v%s", n.ID, x.argv[0], exit, out.suffix())
	default:
		return true, fmt.Errorf("notification %s: command %s: %w%s", n.ID, x.argv[0], err, out.suffix())
	}
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	mu      sync.Mutex // stdout and stderr are copied by two goroutines
	max     int
	buf     []byte
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := min(len(p), c.max-len(c.buf))
	c.buf = append(c.buf, p[:keep]...)
	c.dropped += len(p) - keep
	return len(p), nil
}

// suffix is the output for an error message: ": output", or nothing.
func (c *capped) suffix() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.TrimSpace(string(c.buf))
	if s == "" {
		return ""
	}
	if c.dropped > 0 {
		s += fmt.Sprintf(" [%d more bytes]", c.dropped)
	}
	return ": " + s
}
