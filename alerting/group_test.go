package alerting

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// manualClock is a Clock that moves only when the test moves it. Every
// wait begun on it is reported on waits, so that a test knows the
// Dispatcher waits before it moves the clock.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []manualTimer
	waits  chan time.Duration
}

type manualTimer struct {
	at time.Time
	c  chan time.Time
}

func newManualClock() *manualClock {
	return &manualClock{now: base, waits: make(chan time.Duration, 1000)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
	} else {
		c.timers = append(c.timers, manualTimer{c.now.Add(d), ch})
	}
	c.mu.Unlock()
	c.waits <- d
	return ch
}

// advance moves the clock on by d and fires the timers that are due.
func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(t manualTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.c <- c.now
		return true
	})
}

// waiting waits until the Dispatcher begins a wait, and checks it is for d.
func (c *manualClock) waiting(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-c.waits:
		if got != d {
			t.Fatalf("the dispatcher waits %v, want %v", got, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the dispatcher does not wait (for %v)", d)
	}
}

// batchCall is one NotifyBatch call as the notifier saw it.
type batchCall struct {
	group map[string]string
	ids   []string
}

// batchNotifier is a BatchNotifier whose every call the test sees and
// answers, as handNotifier's.
type batchNotifier struct {
	calls   chan batchCall
	replies chan reply
}

func newBatchNotifier() *batchNotifier {
	return &batchNotifier{calls: make(chan batchCall), replies: make(chan reply)}
}

func (b *batchNotifier) Notify(ctx context.Context, n *Notification) (bool, error) {
	return b.NotifyBatch(ctx, nil, []*Notification{n})
}

func (b *batchNotifier) NotifyBatch(ctx context.Context, group map[string]string, ns []*Notification) (bool, error) {
	c := batchCall{group: maps.Clone(group)}
	for _, n := range ns {
		c.ids = append(c.ids, n.ID)
	}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	select {
	case r := <-b.replies:
		return r.retry, r.err
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// expect waits for the next call and checks it is about ids, and, when
// group is not nil, the group labels.
func (b *batchNotifier) expect(t *testing.T, group map[string]string, ids ...string) {
	t.Helper()
	select {
	case c := <-b.calls:
		if !slices.Equal(c.ids, ids) {
			t.Fatalf("call for %v, want %v", c.ids, ids)
		}
		if group != nil && !maps.Equal(c.group, group) {
			t.Errorf("call for %v has group %v, want %v", ids, c.group, group)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no call for %v", ids)
	}
}

// idle checks that no call is being made now: the Dispatcher is waiting.
func (b *batchNotifier) idle(t *testing.T) {
	t.Helper()
	select {
	case c := <-b.calls:
		t.Fatalf("call for %v, want none yet", c.ids)
	default:
	}
}

// instance returns a notification of rule on host with status, its id
// telling all three.
func instance(rule, host string, status Status) Notification {
	n := Notification{ID: rule + "@" + host + ":" + string(status), Rule: rule, Status: status, Severity: "critical",
		Labels: map[string]string{"host": host, "check": "http"}, StartsAt: base, EvaluatedAt: base}
	if status == StatusResolved {
		n.EndsAt, n.EvaluatedAt = base.Add(time.Minute), base.Add(time.Minute)
	}
	return n
}

func ids(ns []Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func send(t *testing.T, d *Dispatcher, receiver string, ns ...Notification) {
	t.Helper()
	for _, n := range ns {
		if err := d.Send(receiver, n); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDispatcherGroupWait: twenty hosts go down at once, and later come
// back at once: the receiver gets two messages, all twenty firing in the
// first, all twenty resolved in the second, none before group_wait has
// passed since the first of each was queued.
func TestDispatcherGroupWait(t *testing.T) {
	clk := newManualClock()
	b := newBatchNotifier()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
		Clock: clk, Metrics: m, Groups: map[string]Grouping{"ops": {Wait: time.Minute}}})
	stop := run(t, d)

	var firing, resolved []Notification
	for i := range 20 {
		firing = append(firing, instance("host-up", fmt.Sprintf("h%02d", i), StatusFiring))
		resolved = append(resolved, instance("host-up", fmt.Sprintf("h%02d", i), StatusResolved))
	}
	send(t, d, "ops", firing[0])
	clk.waiting(t, time.Minute) // the first waits for the others
	clk.advance(30 * time.Second)
	send(t, d, "ops", firing[1:]...)
	clk.advance(29 * time.Second)
	b.idle(t)
	if s := d.Stats()["ops"]; s.Queued != 20 || s.Sent != 0 {
		t.Fatalf("before group_wait: %+v, want 20 queued, none sent", s)
	}
	clk.advance(time.Second)
	b.expect(t, map[string]string{}, ids(firing)...)
	b.replies <- reply{}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 20 && s.Queued == 0 })
	if got := testutil.ToFloat64(m.sent.WithLabelValues("ops")); got != 20 {
		t.Errorf("sent_total = %v, want 20: the metrics count notifications", got)
	}

	send(t, d, "ops", resolved...)
	clk.waiting(t, time.Minute) // measured from the first resolved
	b.idle(t)
	clk.advance(time.Minute)
	b.expect(t, map[string]string{}, ids(resolved)...)
	b.replies <- reply{}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 40 && s.Queued == 0 })

	// Stopping in the middle of a wait leaves the notification queued.
	send(t, d, "ops", instance("host-up", "h99", StatusFiring))
	clk.waiting(t, time.Minute)
	stop()
	if s := d.Stats()["ops"]; s.Queued != 1 || s.Sent != 40 {
		t.Errorf("after stopping during group_wait: %+v, want 1 queued", s)
	}
}

// TestDispatcherGroupBy checks which notifications share a message: those
// with the head's values of the group_by labels, alertname being the rule.
func TestDispatcherGroupBy(t *testing.T) {
	noHost := Notification{ID: "nohost", Rule: "observers", Status: StatusFiring}
	for _, tc := range []struct {
		name  string
		by    []string
		calls []batchCall // in order
	}{
		// No group_by: one group for the whole queue.
		{"none", nil, []batchCall{
			{map[string]string{}, []string{"a@www1:firing", "a@www2:firing", "b@www1:firing", "nohost"}},
		}},
		// By host: a notification without the label is a group of its own.
		{"host", []string{"host"}, []batchCall{
			{map[string]string{"host": "www1"}, []string{"a@www1:firing", "b@www1:firing"}},
			{map[string]string{"host": "www2"}, []string{"a@www2:firing"}},
			{map[string]string{}, []string{"nohost"}},
		}},
		// By alertname: the rule. Names given twice count once.
		{"alertname", []string{"alertname", "alertname"}, []batchCall{
			{map[string]string{"alertname": "a"}, []string{"a@www1:firing", "a@www2:firing"}},
			{map[string]string{"alertname": "b"}, []string{"b@www1:firing"}},
			{map[string]string{"alertname": "observers"}, []string{"nohost"}},
		}},
		// Several labels; severity comes from the notification when its
		// labels lack it.
		{"host and severity", []string{"severity", "host"}, []batchCall{
			{map[string]string{"host": "www1", "severity": "critical"}, []string{"a@www1:firing", "b@www1:firing"}},
			{map[string]string{"host": "www2", "severity": "critical"}, []string{"a@www2:firing"}},
			{map[string]string{}, []string{"nohost"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newManualClock()
			b := newBatchNotifier()
			d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
				Clock: clk, Groups: map[string]Grouping{"ops": {Wait: time.Second, By: tc.by}}})
			send(t, d, "ops", instance("a", "www1", StatusFiring), instance("a", "www2", StatusFiring),
				instance("b", "www1", StatusFiring), noHost)
			stop := run(t, d)
			// All were queued at once: only the first head waits.
			clk.waiting(t, time.Second)
			clk.advance(time.Second)
			for _, c := range tc.calls {
				b.expect(t, c.group, c.ids...)
				b.replies <- reply{}
			}
			waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Queued == 0 })
			stop()
			if s := d.Stats()["ops"]; s.Sent != 4 {
				t.Errorf("stats %+v, want 4 sent", s)
			}
		})
	}
}

// TestDispatcherGroupIncidentOrder: a backlog holding an incident's firing
// and its resolution sends them in two messages, in order; one incident
// appears once per message.
func TestDispatcherGroupIncidentOrder(t *testing.T) {
	clk := newManualClock()
	b := newBatchNotifier()
	d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
		Clock: clk, Groups: map[string]Grouping{"ops": {Wait: time.Second}}})
	f1, r1 := instance("a", "www1", StatusFiring), instance("a", "www1", StatusResolved)
	f2, r2 := instance("a", "www2", StatusFiring), instance("a", "www2", StatusResolved)
	f3 := instance("a", "www3", StatusFiring)
	// www1's incident again, after its resolution: a new incident of the
	// same labels.
	again := instance("a", "www1", StatusFiring)
	again.ID, again.StartsAt = "a@www1:firing-again", base.Add(time.Hour)
	send(t, d, "ops", f1, f2, r1, f3, again, r2)
	stop := run(t, d)
	clk.waiting(t, time.Second)
	clk.advance(time.Second)
	b.expect(t, nil, f1.ID, f2.ID, f3.ID)
	b.replies <- reply{}
	// The next head waited its group_wait already.
	b.expect(t, nil, r1.ID, r2.ID)
	b.replies <- reply{}
	b.expect(t, nil, again.ID)
	b.replies <- reply{}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 6 && s.Queued == 0 })
	stop()
}

// TestDispatcherGroupRetry: a batch that fails retryably is retried after
// the backoff, with what joined its group meanwhile; each notification of
// the failed attempt counts as retried.
func TestDispatcherGroupRetry(t *testing.T) {
	clk := newManualClock()
	b := newBatchNotifier()
	d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
		Clock: clk, InitialBackoff: 10 * time.Second, Groups: map[string]Grouping{"ops": {Wait: time.Second}}})
	a1, a2, a3 := instance("a", "h1", StatusFiring), instance("a", "h2", StatusFiring), instance("a", "h3", StatusFiring)
	send(t, d, "ops", a1, a2)
	stop := run(t, d)
	clk.waiting(t, time.Second)
	clk.advance(time.Second)
	b.expect(t, nil, a1.ID, a2.ID)
	b.replies <- reply{retry: true, err: errors.New("503 busy")}
	clk.waiting(t, 10*time.Second)
	send(t, d, "ops", a3)
	clk.advance(10 * time.Second)
	b.expect(t, nil, a1.ID, a2.ID, a3.ID)
	b.replies <- reply{}
	s := waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 3 })
	stop()
	if want := (ReceiverStats{Sent: 3, Retried: 2}); s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	if f := d.Failing(1); len(f) != 0 {
		t.Errorf("Failing after the delivery: %v", f)
	}
}

// TestDispatcherGroupRefused: a batch refused for good is not dropped
// whole: each of its notifications is tried alone, and only the one the
// receiver refuses alone is dropped.
func TestDispatcherGroupRefused(t *testing.T) {
	clk := newManualClock()
	b := newBatchNotifier()
	d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
		Clock: clk, Groups: map[string]Grouping{"ops": {Wait: time.Second}}})
	a1, a2, a3 := instance("a", "h1", StatusFiring), instance("a", "h2", StatusFiring), instance("a", "h3", StatusFiring)
	send(t, d, "ops", a1, a2, a3)
	stop := run(t, d)
	clk.waiting(t, time.Second)
	clk.advance(time.Second)
	b.expect(t, nil, a1.ID, a2.ID, a3.ID)
	b.replies <- reply{err: errors.New("400 bad label")}
	b.expect(t, nil, a1.ID)
	b.replies <- reply{}
	b.expect(t, nil, a2.ID)
	b.replies <- reply{err: errors.New("400 bad label")}
	b.expect(t, nil, a3.ID)
	b.replies <- reply{}
	// What comes next is grouped again.
	a4, a5 := instance("a", "h4", StatusFiring), instance("a", "h5", StatusFiring)
	send(t, d, "ops", a4, a5)
	clk.waiting(t, time.Second)
	clk.advance(time.Second)
	b.expect(t, nil, a4.ID, a5.ID)
	b.replies <- reply{}
	s := waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Queued == 0 })
	stop()
	if want := (ReceiverStats{Sent: 4, Failed: 1}); s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
}

// TestDispatcherGroupMaxBatch: a backlog larger than MaxBatch goes out in
// several messages, in order.
func TestDispatcherGroupMaxBatch(t *testing.T) {
	clk := newManualClock()
	b := newBatchNotifier()
	d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
		Clock: clk, MaxBatch: 10, Groups: map[string]Grouping{"ops": {Wait: time.Second}}})
	var all []Notification
	for i := range 25 {
		all = append(all, instance("a", fmt.Sprintf("h%02d", i), StatusFiring))
	}
	send(t, d, "ops", all...)
	stop := run(t, d)
	clk.waiting(t, time.Second)
	clk.advance(time.Second)
	for _, part := range [][]Notification{all[:10], all[10:20], all[20:]} {
		b.expect(t, nil, ids(part)...)
		b.replies <- reply{}
	}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 25 && s.Queued == 0 })
	stop()
}

// TestDispatcherGroupNotBatching: a queue whose notifier cannot send
// batches (exec) delivers one by one and does not wait, whatever its
// Grouping says.
func TestDispatcherGroupNotBatching(t *testing.T) {
	clk := newManualClock()
	rec := &recordingNotifier{}
	d := NewDispatcher(map[string]Notifier{"script": rec}, nil, DispatcherOptions{
		Clock: clk, Groups: map[string]Grouping{"script": {Wait: time.Hour}}})
	a1, a2 := instance("a", "h1", StatusFiring), instance("a", "h2", StatusFiring)
	send(t, d, "script", a1, a2)
	stop := run(t, d)
	waitStats(t, d, "script", func(s ReceiverStats) bool { return s.Sent == 2 })
	stop()
	if got := rec.ids(); !slices.Equal(got, []string{a1.ID, a2.ID}) {
		t.Errorf("delivered %v", got)
	}
	select {
	case w := <-clk.waits:
		t.Errorf("the dispatcher waited %v", w)
	default:
	}
}

// TestDispatcherGroupJournal: a grouping Dispatcher stopped with a backlog
// takes it up after a restart and still sends it as one message; every
// notification of the message is recorded done on its own, so after
// another restart none is owed and each is dropped as a duplicate.
func TestDispatcherGroupJournal(t *testing.T) {
	dir := t.TempDir()
	groups := map[string]Grouping{"ops": {Wait: time.Minute, By: []string{"alertname"}}}
	var firing []Notification
	for i := range 20 {
		firing = append(firing, instance("host-up", fmt.Sprintf("h%02d", i), StatusFiring))
	}
	clk := newManualClock()
	d := open(t, dir, map[string]Notifier{"ops": newBatchNotifier()}, DispatcherOptions{Clock: clk, Groups: groups})
	send(t, d, "ops", firing[:12]...)
	stop := run(t, d)
	clk.waiting(t, time.Minute)
	stop() // dmonitor stops within group_wait
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	clk = newManualClock()
	b := newBatchNotifier()
	d = open(t, dir, map[string]Notifier{"ops": b}, DispatcherOptions{Clock: clk, Groups: groups})
	if s := d.Stats()["ops"]; s.Queued != 12 {
		t.Fatalf("after the restart: %+v, want 12 queued", s)
	}
	stop = run(t, d)
	// The backlog waits group_wait again, from the restart, and what comes
	// meanwhile joins it.
	clk.waiting(t, time.Minute)
	send(t, d, "ops", firing[12:]...)
	clk.advance(time.Minute)
	b.expect(t, map[string]string{"alertname": "host-up"}, ids(firing)...)
	b.replies <- reply{}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 20 && s.Queued == 0 })
	stop()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = open(t, dir, map[string]Notifier{"ops": newBatchNotifier()}, DispatcherOptions{Clock: newManualClock(), Groups: groups})
	if s := d.Stats()["ops"]; s.Queued != 0 {
		t.Fatalf("after the second restart: %+v, want nothing owed", s)
	}
	send(t, d, "ops", firing...)
	if s := d.Stats()["ops"]; s.Deduplicated != 20 || s.Queued != 0 {
		t.Errorf("the delivered notifications sent again: %+v, want 20 deduplicated", s)
	}
}

// TestDispatcherGroupReplica: the Replica hears of each notification of a
// batch, queued and done, one by one.
func TestDispatcherGroupReplica(t *testing.T) {
	clk := newManualClock()
	b := newBatchNotifier()
	rep := &replicaLog{}
	d := NewDispatcher(map[string]Notifier{"ops": b}, nil, DispatcherOptions{
		Clock: clk, Replica: rep, Groups: map[string]Grouping{"ops": {Wait: time.Second}}})
	a, b2 := instance("a", "h1", StatusFiring), instance("a", "h2", StatusFiring)
	send(t, d, "ops", a, b2)
	stop := run(t, d)
	clk.waiting(t, time.Second)
	clk.advance(time.Second)
	b.expect(t, nil, a.ID, b2.ID)
	b.replies <- reply{}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 2 })
	stop()
	want := []string{"queued ops " + a.ID, "queued ops " + b2.ID, "done ops " + a.ID, "done ops " + b2.ID}
	if got := rep.all(); !slices.Equal(got, want) {
		t.Errorf("replica heard %v, want %v", got, want)
	}
}

// TestDispatcherGroupQueuesIndependent: one receiver waiting for its group
// delays no other.
func TestDispatcherGroupQueuesIndependent(t *testing.T) {
	clk := newManualClock()
	grouped, plain := newBatchNotifier(), newHandNotifier()
	d := NewDispatcher(map[string]Notifier{"grouped": grouped, "plain": plain}, nil, DispatcherOptions{
		Clock: clk, Groups: map[string]Grouping{"grouped": {Wait: time.Hour}}})
	stop := run(t, d)
	send(t, d, "grouped", note("g"))
	clk.waiting(t, time.Hour)
	send(t, d, "plain", note("p"))
	plain.expect(t, "p")
	plain.replies <- reply{}
	waitStats(t, d, "plain", func(s ReceiverStats) bool { return s.Sent == 1 })
	grouped.idle(t)
	stop()
	if s := d.Stats()["grouped"]; s.Queued != 1 {
		t.Errorf("grouped: %+v, want its notification still queued", s)
	}
}
