package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/dmonitor/dmonitor/check"
)

// Defaults of a Runner, used where Options leaves a field zero.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultGrace     = time.Second
	DefaultMaxStdout = 64 << 10
	DefaultMaxStderr = 8 << 10
)

// truncatedNote is appended to the Output when a capped stream had more.
const truncatedNote = "(output truncated)"

// Command is one plugin invocation. Argv[0] is the plugin's absolute path;
// the arguments are passed as they are, never through a shell.
type Command struct {
	Argv    []string
	Timeout time.Duration // 0 means the Runner's default
	// Started, when not nil, is called once the run has a worker, before
	// the plugin starts: until then it waits for one.
	Started func()
}

// Options tunes a Runner. The zero value of each field means its default.
type Options struct {
	// Timeout applies to a Command whose own Timeout is 0.
	Timeout time.Duration
	// Grace is how long a timed-out plugin's process group has between
	// SIGTERM and SIGKILL.
	Grace time.Duration
	// MaxStdout and MaxStderr cap the bytes kept of each stream; the rest
	// is read and discarded so the plugin never blocks on a full pipe.
	MaxStdout int
	MaxStderr int
	// Env is the environment plugins start with; nil means the daemon's
	// own. LC_ALL=C is always set on top, so numbers print predictably.
	Env []string
}

// Runner runs plugins, at most a fixed number at a time. Its methods are
// safe for concurrent use.
type Runner struct {
	slots   chan struct{}
	timeout time.Duration
	grace   time.Duration
	maxOut  int
	maxErr  int
	env     []string
	bufs    sync.Pool // *buffers
	// stdin is /dev/null, opened once: left nil, os/exec would open and
	// close it for every run. It lives as long as the Runner.
	stdin *os.File
}

// buffers is the memory one run needs, reused across runs: a plugin's
// output is copied into the Result's strings before its buffers go back.
type buffers struct {
	out, err []byte
	discard  [16 << 10]byte
}

// NewRunner returns a Runner that lets at most workers plugins run at once;
// workers below 1 count as 1.
func NewRunner(workers int, opts Options) *Runner {
	workers = max(workers, 1)
	r := &Runner{
		slots:   make(chan struct{}, workers),
		timeout: orDefault(opts.Timeout, DefaultTimeout),
		grace:   orDefault(opts.Grace, DefaultGrace),
		maxOut:  orDefault(opts.MaxStdout, DefaultMaxStdout),
		maxErr:  orDefault(opts.MaxStderr, DefaultMaxStderr),
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	r.env = make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LC_ALL=") {
			r.env = append(r.env, kv)
		}
	}
	r.env = append(r.env, "LC_ALL=C")
	if f, err := os.Open(os.DevNull); err == nil {
		r.stdin = f // on failure os/exec opens it per run, as usual
	}
	r.bufs.New = func() any {
		return &buffers{out: make([]byte, 0, r.maxOut), err: make([]byte, 0, r.maxErr)}
	}
	return r
}

// orDefault returns v, or def when v is not positive.
func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Run runs cmd and returns its result with Status, Raw, ExitCode, Output,
// Perf, Start and Duration filled; the caller fills Host, Check and
// Observer. Run first waits for a free worker slot; the timeout counts from
// the plugin's start, not from the wait. Run never fails: a plugin that cannot
// start, times out (CRITICAL, Raw TIMEOUT) or is cancelled through ctx
// (UNKNOWN) is a result like any other, with ExitCode -1 and the reason in
// Output.
func (r *Runner) Run(ctx context.Context, cmd Command) check.Result {
	if len(cmd.Argv) == 0 || cmd.Argv[0] == "" {
		return unknown(time.Now(), "cannot run plugin: empty command")
	}
	path := cmd.Argv[0]
	if !filepath.IsAbs(path) {
		return unknown(time.Now(), fmt.Sprintf("cannot run plugin %s: path is not absolute", path))
	}
	// A done ctx must win even when a slot is free, which select alone,
	// choosing at random among ready cases, would not promise.
	if ctx.Err() != nil {
		return unknown(time.Now(), fmt.Sprintf("plugin %s not started: %v", path, context.Cause(ctx)))
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return unknown(time.Now(), fmt.Sprintf("plugin %s not started: %v", path, context.Cause(ctx)))
	}
	defer func() { <-r.slots }()
	if cmd.Started != nil {
		cmd.Started()
	}

	timeout := cmd.Timeout
	if timeout <= 0 {
		timeout = r.timeout
	}
	b := r.bufs.Get().(*buffers)
	defer r.bufs.Put(b)
	b.out, b.err = b.out[:0], b.err[:0]
	return r.run(ctx, cmd.Argv, timeout, b)
}

func unknown(start time.Time, msg string) check.Result {
	return check.Result{
		Status: check.Unknown, Raw: check.Unknown.String(), ExitCode: -1,
		Output: msg, Start: start,
	}
}

// pipe returns a pipe whose read end is non-blocking, for epoll, and whose
// write end is blocking, as a plugin expects of its stdout. Both ends are
// close-on-exec, so no other plugin started meanwhile inherits them; exec
// dups the write end onto the plugin's fd 1 or 2 without the flag.
func pipe() (rfd int, w *os.File, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return -1, nil, err
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return -1, nil, err
	}
	return p[0], os.NewFile(uintptr(p[1]), "plugin pipe"), nil
}

func (r *Runner) run(ctx context.Context, argv []string, timeout time.Duration, b *buffers) check.Result {
	path := argv[0]
	outR, outW, err := pipe()
	if err != nil {
		return unknown(time.Now(), fmt.Sprintf("cannot run plugin %s: stdout pipe: %v", path, err))
	}
	defer syscall.Close(outR)
	errR, errW, err := pipe()
	if err != nil {
		outW.Close()
		return unknown(time.Now(), fmt.Sprintf("cannot run plugin %s: stderr pipe: %v", path, err))
	}
	defer syscall.Close(errR)

	pidfd := -1
	c := &exec.Cmd{
		Path:   path,
		Args:   argv,
		Env:    r.env,
		Stdout: outW, // an *os.File: exec starts no copying goroutine
		Stderr: errW,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid: true, // the plugin leads a new group, which we signal as one
			PidFD:   &pidfd,
		},
	}
	if r.stdin != nil { // a nil *os.File would be a non-nil io.Reader
		c.Stdin = r.stdin
	}
	start := time.Now()
	err = c.Start()
	// The plugin has its own copies; ours must go, or EOF never comes.
	outW.Close()
	errW.Close()
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		return unknown(start, fmt.Sprintf("cannot run plugin %s: %v", path, err))
	}
	if pidfd >= 0 {
		defer syscall.Close(pidfd)
	}

	s := &session{
		pgid: c.Process.Pid, outFd: outR, errFd: errR, pidfd: pidfd,
		b: b, maxOut: r.maxOut, maxErr: r.maxErr,
		outOpen: true, errOpen: true,
	}
	waitErr := s.wait(ctx, start.Add(timeout), r.grace)
	// Wait reaps the plugin; it cannot block long, because the plugin has
	// exited or its group has been sent SIGKILL.
	werr := c.Wait()
	dur := time.Since(start)
	if c.ProcessState == nil && waitErr == nil {
		waitErr = werr
	}

	res := check.Result{Start: start, Duration: dur, ExitCode: -1}
	switch {
	case waitErr != nil:
		res.Status, res.Raw = check.Unknown, check.Unknown.String()
		res.Output = fmt.Sprintf("plugin %s: %v", path, waitErr)
		return res
	case s.timedOut:
		res.Status, res.Raw = check.Critical, check.RawTimeout
		res.Output = withPartial("plugin timed out after "+timeout.String(), b.out)
		return res
	case s.cancelled:
		res.Status, res.Raw = check.Unknown, check.Unknown.String()
		res.Output = withPartial(fmt.Sprintf("plugin run cancelled: %v", context.Cause(ctx)), b.out)
		return res
	}

	code := c.ProcessState.ExitCode() // -1 when killed by a signal
	out, errOut := b.out, b.err
	if s.outTrunc {
		out = trimPartialRune(out)
	}
	if s.errTrunc {
		errOut = trimPartialRune(errOut)
	}
	o, fromStderr := parseWithStderr(out, errOut, code)
	if s.outTrunc && !fromStderr || s.errTrunc && fromStderr {
		o.Output += "\n" + truncatedNote
	}
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		o.Output = strings.TrimSpace(o.Output + "\n(plugin killed by signal: " + ws.Signal().String() + ")")
	}
	res.Status, res.Raw, res.ExitCode, res.Output, res.Perf = o.Status, o.Raw, code, o.Output, o.Perf
	return res
}

// withPartial appends the message of whatever a stopped plugin had printed.
func withPartial(msg string, out []byte) string {
	if p := Parse(trimPartialRune(out), 3).Output; p != "" {
		return msg + "\n" + p
	}
	return msg
}

// trimPartialRune drops a rune that the output cap cut in half.
func trimPartialRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			return b
		}
	}
	return b
}
