package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// session is the running part of one plugin run: it drains the plugin's
// stdout and stderr, notices its exit, and signals its process group.
//
// Stdout, stderr and the pidfd sit, edge-triggered, in an epoll instance of
// their own, and that epoll fd is handed to Go's poller as an *os.File. So the
// caller's goroutine waits for all three at once, with the timeout and ctx
// expressed as the file's read deadline: no goroutine, no timer, no thread
// blocked in a system call per run.
type session struct {
	pgid         int
	outFd, errFd int
	pidfd        int // -1 without kernel support
	b            *buffers
	maxOut       int
	maxErr       int

	outOpen, errOpen   bool
	outTrunc, errTrunc bool
	exited             bool // the plugin itself has exited (its group may not have)
	draining           bool // exited; waiting a grace period for the pipes to close
	terminating        bool // SIGTERM sent to the group
	killed             bool // SIGKILL sent to the group
	timedOut           bool
	cancelled          bool
	err                error
}

// wait returns when the plugin has exited and its pipes are closed, or when
// it has been stopped because deadline passed (s.timedOut) or ctx was done
// (s.cancelled). The error reports a failure of the machinery itself, after
// which the group has been killed.
func (s *session) wait(ctx context.Context, deadline time.Time, grace time.Duration) error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		s.kill(syscall.SIGKILL)
		return fmt.Errorf("epoll: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		s.kill(syscall.SIGKILL)
		return fmt.Errorf("epoll: %w", err)
	}
	// NewFile registers the non-blocking fd with Go's poller.
	ep := os.NewFile(uintptr(epfd), "plugin epoll")
	defer ep.Close()
	for _, fd := range []int{s.outFd, s.errFd, s.pidfd} {
		if fd < 0 {
			continue
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | -syscall.EPOLLET, Fd: int32(fd)}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			s.kill(syscall.SIGKILL)
			return fmt.Errorf("epoll: %w", err)
		}
	}
	rc, err := ep.SyscallConn()
	if err == nil {
		err = ep.SetReadDeadline(deadline)
	}
	if err != nil {
		s.kill(syscall.SIGKILL)
		return fmt.Errorf("epoll: %w", err)
	}
	// A done ctx moves the deadline into the past; the loop below tells
	// that apart from the timeout by asking ctx.
	stop := context.AfterFunc(ctx, func() { ep.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	for {
		err := rc.Read(func(uintptr) bool { return s.pump(epfd) })
		switch {
		case s.err != nil:
			s.kill(syscall.SIGKILL)
			return s.err
		case err == nil:
			if s.pipesClosed() {
				return nil
			}
			// The plugin has exited and its group was killed, yet a pipe is
			// still open: a descendant that left the group holds it. Give it
			// the grace period, then stop listening.
			s.draining = true
			ep.SetReadDeadline(time.Now().Add(grace))
		case !errors.Is(err, os.ErrDeadlineExceeded):
			s.kill(syscall.SIGKILL)
			return fmt.Errorf("epoll: %w", err)
		case s.draining:
			return nil
		case s.killed:
			// SIGKILL cannot be ignored; the exit is on its way. Only the
			// ctx can move the deadline now, and it changes nothing.
			ep.SetReadDeadline(time.Time{})
		case s.terminating:
			s.kill(syscall.SIGKILL)
			s.killed = true
			ep.SetReadDeadline(time.Time{})
		case ctx.Err() != nil:
			s.cancelled = true
			s.terminate(ep, grace)
		case time.Now().Before(deadline):
			// Only a done ctx moves the deadline early, so this is not
			// reached; if it were, waiting on is the right answer.
			ep.SetReadDeadline(deadline)
		default:
			s.timedOut = true
			s.terminate(ep, grace)
		}
	}
}

// terminate asks the group to stop and gives it grace before SIGKILL.
func (s *session) terminate(ep *os.File, grace time.Duration) {
	s.kill(syscall.SIGTERM)
	s.terminating = true
	ep.SetReadDeadline(time.Now().Add(grace))
}

// kill signals the plugin's whole process group. The group cannot have been
// reused by another: its leader is not reaped until after wait returns.
func (s *session) kill(sig syscall.Signal) {
	syscall.Kill(-s.pgid, sig)
}

func (s *session) pipesClosed() bool { return !s.outOpen && !s.errOpen }

// pump handles every event pending on epfd and reports whether waiting is
// over for now: the plugin has exited and either its pipes are closed or the
// caller has yet to start the draining period.
func (s *session) pump(epfd int) bool {
	var evs [3]syscall.EpollEvent
	for {
		n, err := syscall.EpollWait(epfd, evs[:], 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			s.err = fmt.Errorf("epoll wait: %w", err)
			return true
		}
		if n == 0 {
			break
		}
		for _, ev := range evs[:n] {
			switch int(ev.Fd) {
			case s.outFd:
				s.outOpen = s.outOpen && s.drain(s.outFd, &s.b.out, s.maxOut, &s.outTrunc)
			case s.errFd:
				s.errOpen = s.errOpen && s.drain(s.errFd, &s.b.err, s.maxErr, &s.errTrunc)
			case s.pidfd:
				// Whatever the plugin left running in its group is killed
				// now, so a background child cannot hold the pipes open.
				s.exited = true
				s.kill(syscall.SIGKILL)
			}
		}
	}
	if s.pidfd < 0 && s.pipesClosed() {
		// Without a pidfd, closed pipes are the best sign of an exit.
		s.exited = true
	}
	return s.exited && (s.pipesClosed() || !s.draining)
}

// drain reads fd until it would block, keeping up to max bytes in *buf and
// discarding the rest (edge-triggered epoll reports new data only once). It
// reports whether fd is still open.
func (s *session) drain(fd int, buf *[]byte, max int, trunc *bool) bool {
	for {
		p := s.b.discard[:]
		if len(*buf) < max {
			p = (*buf)[len(*buf):max]
		}
		n, err := syscall.Read(fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil || n == 0:
			return false
		}
		if len(*buf) < max {
			*buf = (*buf)[:len(*buf)+n]
		} else {
			*trunc = true
		}
	}
}
