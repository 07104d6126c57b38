package smtp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/smtp"
	"github.com/dmonitor/dmonitor/internal/alertingtest"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// backlog returns, in order, the notifications of incidents on three hosts:
// each fires and resolves; the queue interleaves them.
func backlog() []*alerting.Notification {
	f1, r1 := incident("www1", t0)
	f2, r2 := incident("www2", t0.Add(time.Minute))
	f3, r3 := incident("www3", t0.Add(2*time.Minute))
	return []*alerting.Notification{f1, f2, r1, f3, r2, r3}
}

// startDispatcher runs a Dispatcher with one receiver "ops" mailing through
// addr, with a backoff small enough that tests do not wait on it.
func startDispatcher(t *testing.T, addr string) (d *alerting.Dispatcher, stop func()) {
	t.Helper()
	n := newNotifier(t, smtp.Config{Addr: addr, Timeout: 5 * time.Second})
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	d = alerting.NewDispatcher(map[string]alerting.Notifier{"ops": n}, logger,
		alerting.DispatcherOptions{InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return d, stop
}

// waitStats polls the stats of "ops" until ok accepts them.
func waitStats(t *testing.T, d *alerting.Dispatcher, ok func(alerting.ReceiverStats) bool) alerting.ReceiverStats {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := d.Stats()["ops"]
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats of ops: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

// expectInOrderOnce reads one message per notification and checks they came
// in order, then, once the dispatcher has stopped, that nothing else came.
func expectInOrderOnce(t *testing.T, srv *smtptest.Server, d *alerting.Dispatcher, stop func(), want []*alerting.Notification) {
	t.Helper()
	for i, n := range want {
		got := srv.Next(t)
		if id := got.Msg.Header.Get("X-Dmonitor-Notification-Id"); id != n.ID {
			t.Fatalf("message %d: id %s (%s), want %s (%s)", i, id, got.Msg.Header.Get("Subject"), n.ID, smtp.Subject(n))
		}
		// Delivered late, but dated when it happened.
		if date, err := got.Msg.Header.Date(); err != nil || !date.Equal(n.EvaluatedAt) {
			t.Errorf("message %d: Date %v (%v), want %v", i, date, err, n.EvaluatedAt)
		}
	}
	s := waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Sent == uint64(len(want)) && s.Queued == 0 })
	stop()
	select {
	case m := <-srv.Received:
		t.Errorf("extra message after the backlog: %s %s", m.Msg.Header.Get("X-Dmonitor-Notification-Id"), m.Msg.Header.Get("Subject"))
	default:
	}
	if s.Failed != 0 || s.Overflowed != 0 {
		t.Errorf("stats %+v: nothing may be failed or dropped", s)
	}
}

func TestDispatcherRelayDownThenUp(t *testing.T) {
	addr := loopback.FreeAddr(t)
	d, stop := startDispatcher(t, addr)
	want := backlog()
	for _, n := range want {
		if err := d.Send("ops", *n); err != nil {
			t.Fatal(err)
		}
	}
	// The relay is down: the first notification is retried, the rest wait.
	waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Retried >= 3 })
	if s := d.Stats()["ops"]; s.Sent != 0 || s.Queued != len(want) {
		t.Fatalf("while the relay is down: %+v", s)
	}

	// The relay comes up on its address.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not take the reserved port back: %v", err)
	}
	srv := smtptest.Serve(t, l, "", "")
	expectInOrderOnce(t, srv, d, stop, want)
}

func TestDispatcherRelayRefusesThenAccepts(t *testing.T) {
	srv := smtptest.Start(t, "127.0.0.1:0")
	// 451 for the first three attempts, after the data each time, then
	// accept everything.
	refusals := 3
	srv.Refuse(func(stage string) *gosmtp.SMTPError {
		if stage != "data" || refusals == 0 {
			return nil
		}
		refusals--
		return &gosmtp.SMTPError{Code: 451, Message: "try again later"}
	})
	d, stop := startDispatcher(t, srv.Addr)
	want := backlog()
	for _, n := range want {
		if err := d.Send("ops", *n); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case code := <-srv.Refused:
			if code != 451 {
				t.Fatalf("refused with %d", code)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the relay was not asked three times")
		}
	}
	expectInOrderOnce(t, srv, d, stop, want)
	if s := d.Stats()["ops"]; s.Retried != 3 {
		t.Errorf("retried %d times, want 3", s.Retried)
	}
}

// TestDispatcherGroupsHosts: twenty hosts go down at once and come back:
// two mails, the first listing the twenty firing alerts, the second the
// twenty resolved ones, with every id in the header.
func TestDispatcherGroupsHosts(t *testing.T) {
	srv := smtptest.Start(t, "127.0.0.1:0")
	n := newNotifier(t, smtp.Config{Addr: srv.Addr, Timeout: 5 * time.Second})
	open := alertingtest.NewGate(t0)
	d := alerting.NewDispatcher(map[string]alerting.Notifier{"ops": n}, nil, alerting.DispatcherOptions{
		Clock: open, Groups: map[string]alerting.Grouping{"ops": {Wait: time.Second}}})
	var firing, resolved []*alerting.Notification
	for i := range 20 {
		f, r := incident(fmt.Sprintf("www%02d", i), t0)
		firing, resolved = append(firing, f), append(resolved, r)
	}
	alertingtest.Dispatch(t, d, open, "ops", append(slices.Clone(firing), resolved...))

	for _, want := range []struct {
		subject string
		ns      []*alerting.Notification
	}{
		{"[FIRING:20] www-http on 20 hosts (http)", firing},
		{"[RESOLVED:20] www-http on 20 hosts (http)", resolved},
	} {
		m := srv.Next(t)
		if got := m.Msg.Header.Get("Subject"); got != want.subject {
			t.Errorf("subject %q, want %q", got, want.subject)
		}
		ids := make([]string, len(want.ns))
		for i, n := range want.ns {
			ids[i] = n.ID
			if !strings.Contains(m.Body, "Id:          "+n.ID) {
				t.Errorf("%s: body does not list %s", want.subject, n.ID)
			}
		}
		if got := m.Msg.Header.Get("X-Dmonitor-Notification-Id"); got != strings.Join(ids, ", ") {
			t.Errorf("%s: X-Dmonitor-Notification-Id %q, want the 20 ids", want.subject, got)
		}
	}
	waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Sent == 40 && s.Queued == 0 })
	select {
	case m := <-srv.Received:
		t.Errorf("a third mail: %s", m.Msg.Header.Get("Subject"))
	default:
	}
}
