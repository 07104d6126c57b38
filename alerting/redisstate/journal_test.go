package redisstate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/internal/redistest"
)

// journalState is everything a receiver's journal holds in Redis.
type journalState struct {
	Queue, Done, Attempted []string
	Notes                  map[string]string
}

func snapshot(t *testing.T, st *Store, receiver string) journalState {
	t.Helper()
	ctx := context.Background()
	j := st.journal(receiver, "0", 1)
	var s journalState
	var err error
	if s.Queue, err = st.client.LRange(ctx, j.queue, 0, -1).Result(); err != nil {
		t.Fatal(err)
	}
	if s.Done, err = st.client.LRange(ctx, j.done, 0, -1).Result(); err != nil {
		t.Fatal(err)
	}
	if s.Attempted, err = st.client.SMembers(ctx, j.attempted).Result(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(s.Attempted)
	if s.Notes, err = st.client.HGetAll(ctx, j.notes).Result(); err != nil {
		t.Fatal(err)
	}
	return s
}

// delivery is one notification a receiver got, and which leader sent it.
type delivery struct {
	by string
	n  alerting.Notification
}

// receiver is one destination shared by every leader's dispatcher: while
// down it refuses every attempt as worth retrying; while up it takes and
// records each one. Each leader talks to it through its own Notifier.
type receiver struct {
	mu    sync.Mutex
	up    bool
	got   []delivery
	after func(by string, n *alerting.Notification) // called after a delivery, before Notify returns
}

func (r *receiver) setUp(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up = up
}

func (r *receiver) as(by string) alerting.Notifier {
	return notifierFunc(func(_ context.Context, n *alerting.Notification) (bool, error) {
		r.mu.Lock()
		if !r.up {
			r.mu.Unlock()
			return true, errors.New("connection refused")
		}
		r.got = append(r.got, delivery{by, *n})
		after := r.after
		r.mu.Unlock()
		if after != nil {
			after(by, n)
		}
		return false, nil
	})
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

type notifierFunc func(ctx context.Context, n *alerting.Notification) (bool, error)

func (f notifierFunc) Notify(ctx context.Context, n *alerting.Notification) (bool, error) {
	return f(ctx, n)
}

// numbered returns the i-th notification of a backlog, each with its own
// labels and times, so a test can check all of it survives a takeover.
func numbered(i int) alerting.Notification {
	at := base.Add(time.Duration(i) * time.Second)
	labels := map[string]string{"host": fmt.Sprintf("www%d", i), "check": "http", "severity": "critical"}
	return alerting.Notification{
		ID: alerting.NotificationID("www-http", labels, alerting.StatusFiring, at.Add(-time.Minute)), Status: alerting.StatusFiring,
		Rule: "www-http", Labels: labels, Annotations: map[string]string{"summary": fmt.Sprintf("www%d http down", i)},
		Severity: "critical", StartsAt: at.Add(-time.Minute), EvaluatedAt: at,
	}
}

// equalNotification compares n and m as a receiver would see them.
func equalNotification(n, m alerting.Notification) bool {
	return n.ID == m.ID && n.Status == m.Status && n.Rule == m.Rule && n.Severity == m.Severity &&
		maps.Equal(n.Labels, m.Labels) && maps.Equal(n.Annotations, m.Annotations) &&
		n.StartsAt.Equal(m.StartsAt) && n.EndsAt.Equal(m.EndsAt) && n.EvaluatedAt.Equal(m.EvaluatedAt) && n.Repeat == m.Repeat
}

// checkDeliveries compares what a receiver got with want, in order.
func checkDeliveries(t *testing.T, got, want []delivery) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].by == want[i].by && equalNotification(got[i].n, want[i].n)
	}
	if !ok {
		describe := func(ds []delivery) (s []string) {
			for _, d := range ds {
				s = append(s, d.by+":"+d.n.ID[:8])
			}
			return s
		}
		t.Errorf("receiver got %v, want %v", describe(got), describe(want))
	}
}

// leader is one node's dispatcher for the epoch of its term.
func leader(t *testing.T, st *Store, epoch int64, receivers map[string]alerting.Notifier) *alerting.Dispatcher {
	t.Helper()
	d, err := st.OpenDispatcher(context.Background(), epoch, receivers, nil,
		alerting.DispatcherOptions{InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// run starts d.Run and returns a function that stops it and returns what
// Run returned, and a channel that gets Run's result if it returns alone.
func run(t *testing.T, d *alerting.Dispatcher) (stop func() error, ran <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}, done
}

// waitStats polls d's stats for receiver until ok accepts them.
func waitStats(t *testing.T, d *alerting.Dispatcher, receiver string, ok func(alerting.ReceiverStats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s := d.Stats()[receiver]; !ok(s); s = d.Stats()[receiver] {
		if time.Now().After(deadline) {
			t.Fatalf("stats of %s: %+v", receiver, s)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitRun waits for Run to return by itself and returns its error.
func waitRun(t *testing.T, ran <-chan error) error {
	t.Helper()
	select {
	case err := <-ran:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// TestTakeoverResume: leader 1 queues three notifications for a receiver
// that is down and dies; leader 2 takes over and delivers all three, in
// order, once the receiver is up; leader 1, woken up late, can neither
// deliver nor record anything.
func TestTakeoverResume(t *testing.T) {
	ctx := context.Background()
	client := redistest.Start(t).Client(t)
	rx := &receiver{}
	want := []alerting.Notification{numbered(0), numbered(1), numbered(2)}

	st1 := New(client, Options{})
	if err := st1.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	d1 := leader(t, st1, 1, map[string]alerting.Notifier{"ops": rx.as("leader1")})
	for _, n := range want {
		if err := d1.Send("ops", n); err != nil {
			t.Fatal(err)
		}
	}
	stop, _ := run(t, d1)
	waitStats(t, d1, "ops", func(s alerting.ReceiverStats) bool { return s.Retried >= 2 })
	// Leader 1 dies: it stops without draining, closing nothing.
	if err := stop(); err != nil {
		t.Fatalf("Run of leader 1: %v", err)
	}

	st2 := New(client, Options{})
	if err := st2.TakeOver(ctx, 2); err != nil {
		t.Fatal(err)
	}
	d2 := leader(t, st2, 2, map[string]alerting.Notifier{"ops": rx.as("leader2")})
	if s := d2.Stats()["ops"]; s.Queued != 3 {
		t.Fatalf("leader 2 took up %+v, want 3 queued", s)
	}
	rx.setUp(true)
	stop, _ = run(t, d2)
	waitStats(t, d2, "ops", func(s alerting.ReceiverStats) bool { return s.Sent == 3 && s.Queued == 0 })
	if err := stop(); err != nil {
		t.Fatalf("Run of leader 2: %v", err)
	}
	var wantGot []delivery
	for _, n := range want {
		wantGot = append(wantGot, delivery{"leader2", n})
	}
	checkDeliveries(t, rx.deliveries(), wantGot)
	before := snapshot(t, st2, "ops")
	if len(before.Queue) != 0 || len(before.Notes) != 0 || len(before.Attempted) != 0 ||
		!slices.Equal(before.Done, []string{want[0].ID, want[1].ID, want[2].ID}) {
		t.Errorf("journal after leader 2 delivered: %+v, want only the three done", before)
	}

	// Leader 1 wakes up late, its three notifications still in memory, and
	// one more to send.
	_, ran := run(t, d1)
	if err := waitRun(t, ran); !errors.Is(err, ErrFenced) {
		t.Errorf("Run of leader 1 after the takeover: %v, want ErrFenced", err)
	}
	if err := d1.Send("ops", numbered(3)); !errors.Is(err, ErrFenced) {
		t.Errorf("Send of leader 1 after the takeover: %v, want ErrFenced", err)
	}
	checkDeliveries(t, rx.deliveries(), wantGot)
	if after := snapshot(t, st2, "ops"); !reflect.DeepEqual(after, before) {
		t.Errorf("leader 1 changed the journal after the takeover:\nbefore %+v\nafter  %+v", before, after)
	}
}

// TestAttemptedDeliveredAgain: leader 1 delivers a notification and the
// fence moves before it records that (it paused, or died, in between). Its
// successor finds it marked as being delivered and not done, and delivers
// it again with the same id: the one duplicate a receiver drops. Leader 1
// delivers nothing after that; what it recorded as done is not repeated.
func TestAttemptedDeliveredAgain(t *testing.T) {
	ctx := context.Background()
	client := redistest.Start(t).Client(t)
	want := []alerting.Notification{numbered(0), numbered(1), numbered(2)}
	st1, st2 := New(client, Options{}), New(client, Options{})
	rx := &receiver{up: true}
	rx.after = func(by string, n *alerting.Notification) {
		if by == "leader1" && n.ID == want[1].ID {
			if err := st2.TakeOver(ctx, 2); err != nil {
				t.Errorf("TakeOver(2): %v", err)
			}
		}
	}

	if err := st1.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	d1 := leader(t, st1, 1, map[string]alerting.Notifier{"ops": rx.as("leader1")})
	for _, n := range want {
		if err := d1.Send("ops", n); err != nil {
			t.Fatal(err)
		}
	}
	_, ran := run(t, d1)
	if err := waitRun(t, ran); !errors.Is(err, ErrFenced) {
		t.Fatalf("Run of leader 1: %v, want ErrFenced once the fence moved", err)
	}
	checkDeliveries(t, rx.deliveries(), []delivery{{"leader1", want[0]}, {"leader1", want[1]}})
	if s := snapshot(t, st2, "ops"); !slices.Equal(s.Attempted, []string{want[1].ID}) || !slices.Equal(s.Done, []string{want[0].ID}) {
		t.Errorf("journal at the takeover: %+v, want %s attempted and %s done", s, want[1].ID, want[0].ID)
	}

	d2 := leader(t, st2, 2, map[string]alerting.Notifier{"ops": rx.as("leader2")})
	// The evaluator of leader 2 hands over the first firing again, as a
	// transition it re-derived: it was done, so it is not queued.
	if err := d2.Send("ops", want[0]); err != nil {
		t.Fatal(err)
	}
	stop, _ := run(t, d2)
	waitStats(t, d2, "ops", func(s alerting.ReceiverStats) bool { return s.Sent == 2 && s.Queued == 0 })
	if err := stop(); err != nil {
		t.Fatalf("Run of leader 2: %v", err)
	}
	if s := d2.Stats()["ops"]; s.Deduplicated != 1 {
		t.Errorf("leader 2 stats %+v, want the done one deduplicated", s)
	}
	got := rx.deliveries()
	checkDeliveries(t, got, []delivery{{"leader1", want[0]}, {"leader1", want[1]}, {"leader2", want[1]}, {"leader2", want[2]}})
	seen := map[string]int{}
	for _, d := range got {
		seen[d.n.ID]++
	}
	if dups := len(got) - len(seen); dups != 1 || seen[want[1].ID] != 2 {
		t.Errorf("receiver saw %v; want exactly one duplicate, of %s", seen, want[1].ID)
	}
}
