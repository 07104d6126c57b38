package alerting

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// handNotifier is a Notifier whose every attempt the test sees and answers:
// Notify reports the notification on attempts and returns whatever the test
// sends on replies, or gives up when ctx ends.
type handNotifier struct {
	attempts chan Notification
	replies  chan reply
}

type reply struct {
	retry bool
	err   error
}

func newHandNotifier() *handNotifier {
	return &handNotifier{attempts: make(chan Notification), replies: make(chan reply)}
}

func (h *handNotifier) Notify(ctx context.Context, n *Notification) (bool, error) {
	select {
	case h.attempts <- *n:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	select {
	case r := <-h.replies:
		return r.retry, r.err
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// expect waits for the next attempt and checks it is about id.
func (h *handNotifier) expect(t *testing.T, id string) {
	t.Helper()
	select {
	case n := <-h.attempts:
		if n.ID != id {
			t.Fatalf("attempt for %s, want %s", n.ID, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no attempt for %s", id)
	}
}

// recordHandler keeps every log record, so a test can read what was logged.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) attrs(msg, key string) []slog.Value {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Value
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value)
			}
			return true
		})
	}
	return out
}

// run starts d.Run and returns a function that stops it and waits for it.
func run(t *testing.T, d *Dispatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(cancel)
	return stop
}

// waitStats polls d's stats for receiver until ok accepts them.
func waitStats(t *testing.T, d *Dispatcher, receiver string, ok func(ReceiverStats) bool) ReceiverStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := d.Stats()[receiver]
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats of %s: %+v", receiver, s)
		}
		time.Sleep(time.Millisecond)
	}
}

func note(id string) Notification {
	return Notification{ID: id, Rule: "www-http", Status: StatusFiring}
}

func TestDispatcherOrderRetryDrop(t *testing.T) {
	h := newHandNotifier()
	logs := &recordHandler{}
	d := NewDispatcher(map[string]Notifier{"ops": h}, slog.New(logs),
		DispatcherOptions{InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	for _, id := range []string{"a", "b", "c"} {
		if err := d.Send("ops", note(id)); err != nil {
			t.Fatal(err)
		}
	}
	stop := run(t, d)

	// a fails four times retryably: nothing behind it may overtake it.
	for range 4 {
		h.expect(t, "a")
		h.replies <- reply{retry: true, err: errors.New("connection refused")}
	}
	h.expect(t, "a")
	h.replies <- reply{}
	// b is refused for good: dropped, and c follows.
	h.expect(t, "b")
	h.replies <- reply{retry: false, err: errors.New("550 no such user")}
	h.expect(t, "c")
	h.replies <- reply{}

	s := waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 2 })
	want := ReceiverStats{Sent: 2, Failed: 1, Retried: 4}
	if s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	stop()

	// The backoff doubled from InitialBackoff and stopped at MaxBackoff.
	var got []time.Duration
	for _, v := range logs.attrs("notification failed, will retry", "backoff") {
		got = append(got, v.Duration())
	}
	wantBackoff := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond}
	if len(got) != len(wantBackoff) {
		t.Fatalf("logged backoffs %v, want %v", got, wantBackoff)
	}
	for i := range got {
		if got[i] != wantBackoff[i] {
			t.Errorf("logged backoffs %v, want %v", got, wantBackoff)
			break
		}
	}
	if ids := logs.attrs("notification failed permanently, dropped", "id"); len(ids) != 1 || ids[0].String() != "b" {
		t.Errorf("dropped-notification log names %v, want [b]", ids)
	}
}

func TestDispatcherReceiversIndependent(t *testing.T) {
	slow, fast := newHandNotifier(), newHandNotifier()
	d := NewDispatcher(map[string]Notifier{"slow": slow, "fast": fast}, nil, DispatcherOptions{})
	stop := run(t, d)

	if err := d.Send("slow", note("s1")); err != nil {
		t.Fatal(err)
	}
	slow.expect(t, "s1") // and never answered: slow hangs
	if err := d.Send("fast", note("f1")); err != nil {
		t.Fatal(err)
	}
	fast.expect(t, "f1")
	fast.replies <- reply{}
	waitStats(t, d, "fast", func(s ReceiverStats) bool { return s.Sent == 1 })

	// Only one Run at a time: a second would break the order.
	if err := d.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}

	// Stopping cancels the hung attempt; its notification is not counted
	// as failed and stays queued.
	stop()
	if s := d.Stats()["slow"]; s != (ReceiverStats{Queued: 1}) {
		t.Errorf("slow after stop: %+v, want only Queued 1", s)
	}

	// A later Run picks it up again.
	stop = run(t, d)
	slow.expect(t, "s1")
	slow.replies <- reply{}
	waitStats(t, d, "slow", func(s ReceiverStats) bool { return s.Sent == 1 && s.Queued == 0 })
	stop()
}

func TestDispatcherSendErrors(t *testing.T) {
	logs := &recordHandler{}
	d := NewDispatcher(map[string]Notifier{"ops": newHandNotifier()}, slog.New(logs), DispatcherOptions{QueueSize: 2})

	if err := d.Send("nobody", note("x")); !errors.Is(err, ErrUnknownReceiver) {
		t.Errorf("Send to unknown receiver: %v, want ErrUnknownReceiver", err)
	}
	for _, id := range []string{"a", "b"} {
		if err := d.Send("ops", note(id)); err != nil {
			t.Fatalf("Send %s: %v", id, err)
		}
	}
	// Overflow is refused loudly: an error, a counter and a log line.
	if err := d.Send("ops", note("c")); !errors.Is(err, ErrQueueFull) {
		t.Errorf("Send beyond QueueSize: %v, want ErrQueueFull", err)
	}
	if s := d.Stats()["ops"]; s != (ReceiverStats{Overflowed: 1, Queued: 2}) {
		t.Errorf("stats %+v, want Overflowed 1, Queued 2", s)
	}
	if ids := logs.attrs("notification queue full, notification dropped", "id"); len(ids) != 1 || ids[0].String() != "c" {
		t.Errorf("overflow log names %v, want [c]", ids)
	}
}
