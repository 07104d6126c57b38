package alerting

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memJournal is a Journal in memory whose writes all fail with ErrFenced
// once its fence is raised, as a leader's journal does after a takeover.
type memJournal struct {
	fence *atomic.Bool

	mu    sync.Mutex
	calls []string // "append ID", "attempt ID", "done ID", in order; "refused done ID" when fenced
}

func (j *memJournal) record(op, id string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fence.Load() {
		j.calls = append(j.calls, "refused "+op+" "+id)
		return errors.Join(ErrFenced, errors.New(op+" "+id))
	}
	j.calls = append(j.calls, op+" "+id)
	return nil
}

func (j *memJournal) Append(_ context.Context, n *Notification) error {
	return j.record("append", n.ID)
}
func (j *memJournal) Attempt(_ context.Context, id string) error { return j.record("attempt", id) }
func (j *memJournal) Done(_ context.Context, id string) error    { return j.record("done", id) }
func (j *memJournal) Close() error                               { return nil }

func (j *memJournal) log() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

// TestDispatcherFenced takes up a backlog from journals, raises their fence
// while one receiver's attempt is in flight, and checks that the Dispatcher
// delivers nothing more to any receiver: Run returns ErrFenced, the queued
// notification behind the fence is never attempted, and Send refuses.
func TestDispatcherFenced(t *testing.T) {
	fence := &atomic.Bool{}
	journals := map[string]*memJournal{"ops": {fence: fence}, "pager": {fence: fence}}
	backlogs := map[string]Backlog{
		// a was being delivered when the previous holder stopped.
		"ops": {Pending: []Notification{note("a"), note("b")}, Attempted: []string{"a"}, Done: []string{"old"}},
	}
	open := func(_ context.Context, receiver string, remember int) (Journal, Backlog, error) {
		if remember != DefaultQueueSize {
			t.Errorf("journal of %s opened to remember %d ids, want %d", receiver, remember, DefaultQueueSize)
		}
		return journals[receiver], backlogs[receiver], nil
	}
	ops, pager := newHandNotifier(), newHandNotifier()
	d, err := OpenJournaledDispatcher(context.Background(), map[string]Notifier{"ops": ops, "pager": pager}, open, nil, DispatcherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := d.Stats()["ops"]; s.Queued != 2 {
		t.Fatalf("ops after opening: %+v, want the 2 pending queued", s)
	}
	// A done id of the backlog is not queued again.
	if err := d.Send("ops", note("old")); err != nil {
		t.Fatal(err)
	}
	if s := d.Stats()["ops"]; s.Deduplicated != 1 || s.Queued != 2 {
		t.Fatalf("ops after sending a done id: %+v, want it deduplicated", s)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()

	// The attempted one is delivered again first.
	ops.expect(t, "a")
	if err := d.Send("pager", note("p")); err != nil {
		t.Fatal(err)
	}
	pager.expect(t, "p") // in flight, never answered
	// A newer leader takes over while a is being delivered: a reaches the
	// receiver, but its done record is refused, and that deposes d.
	fence.Store(true)
	ops.replies <- reply{}
	select {
	case err := <-ran:
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("Run after the fence moved: %v, want ErrFenced", err)
		}
	case n := <-ops.attempts:
		t.Fatalf("ops: %s attempted after the fence moved", n.ID)
	case n := <-pager.attempts:
		t.Fatalf("pager: %s attempted again after the fence moved", n.ID)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the fence moved")
	}

	// Once refused, d tries nothing more: not even to mark b.
	if got, want := journals["ops"].log(), []string{"attempt a", "refused done a"}; !slices.Equal(got, want) {
		t.Errorf("ops journal %v, want %v", got, want)
	}
	if got, want := journals["pager"].log(), []string{"append p", "attempt p"}; !slices.Equal(got, want) {
		t.Errorf("pager journal %v, want %v", got, want)
	}
	if err := d.Send("ops", note("c")); !errors.Is(err, ErrFenced) {
		t.Errorf("Send after the fence moved: %v, want ErrFenced", err)
	}
	if got := journals["ops"].log(); len(got) != 2 {
		t.Errorf("Send after the fence moved reached the journal: %v", got)
	}
	if err := d.Run(ctx); !errors.Is(err, ErrFenced) {
		t.Errorf("Run again after the fence moved: %v, want ErrFenced", err)
	}
	// b stays queued for nobody: the successor has it in its journal.
	if s := d.Stats()["ops"]; s.Sent != 1 || s.Queued != 1 {
		t.Errorf("ops stats %+v, want a sent and b still queued", s)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
