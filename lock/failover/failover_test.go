package failover

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/lock"
)

// side is a lease the test grants by hand: Acquire blocks until grant is
// called (or ctx ends), and each term's Lost closes on Release.
type side struct {
	mu       sync.Mutex
	grants   chan int64
	lost     chan struct{}
	released atomic.Int32
	waiting  atomic.Int32 // Acquires blocked now
}

func newSide() *side { return &side{grants: make(chan int64, 1)} }

func (s *side) grant(epoch int64) { s.grants <- epoch }

func (s *side) Acquire(ctx context.Context) (lock.Term, error) {
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	select {
	case <-ctx.Done():
		return lock.Term{}, ctx.Err()
	case e := <-s.grants:
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lost = make(chan struct{})
		return lock.Term{Epoch: e, Lost: s.lost}, nil
	}
}

func (s *side) Release(context.Context) error {
	s.released.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost != nil {
		close(s.lost)
		s.lost = nil
	}
	return nil
}

// setup runs a failover lease over two hand-granted sides and a health
// probe the test switches.
func setup(t *testing.T) (l *Lease, primary, fallback *side, healthy *atomic.Bool, changes chan bool) {
	t.Helper()
	primary, fallback = newSide(), newSide()
	healthy = new(atomic.Bool)
	healthy.Store(true)
	changes = make(chan bool, 10)
	l = New(Options{
		Primary: primary, Fallback: fallback, After: 50 * time.Millisecond, Probe: 5 * time.Millisecond,
		Healthy: func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("connection refused")
		},
		OnChange: func(degraded bool, _ error) { changes <- degraded },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, primary, fallback, healthy, changes
}

func acquire(ctx context.Context, l *Lease) <-chan lock.Term {
	got := make(chan lock.Term, 1)
	go func() {
		t, err := l.Acquire(ctx)
		if err == nil {
			got <- t
		}
		close(got)
	}()
	return got
}

// While the primary is healthy, its term is the lease's.
func TestPrimaryWhileHealthy(t *testing.T) {
	l, primary, _, _, _ := setup(t)
	got := acquire(context.Background(), l)
	primary.grant(7)
	term := <-got
	if term.Epoch != 7 || l.Fallback() {
		t.Fatalf("term %d (fallback %v), want the primary's 7", term.Epoch, l.Fallback())
	}
	if d, _ := l.Degraded(); d {
		t.Fatal("degraded while the primary answers")
	}
}

// The primary failing for longer than After makes the lease degraded: an
// Acquire waiting on the primary moves to the fallback; the fallback's term
// ends when the primary answers again, and the next Acquire is the
// primary's again.
func TestDegradedAndBack(t *testing.T) {
	l, primary, fallback, healthy, changes := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := acquire(ctx, l)
	await.Until(t, "an Acquire waiting on the primary", func() bool { return primary.waiting.Load() == 1 })

	healthy.Store(false)
	if d := <-changes; !d {
		t.Fatal("OnChange(false) first, want degraded")
	}
	await.Until(t, "the Acquire moved to the fallback", func() bool { return fallback.waiting.Load() == 1 })
	if primary.waiting.Load() != 0 {
		t.Fatal("still waiting on the primary while degraded")
	}
	fallback.grant(1700000000000)
	term := <-got
	if term.Epoch != 1700000000000 || !l.Fallback() {
		t.Fatalf("term %d (fallback %v), want the fallback's", term.Epoch, l.Fallback())
	}

	healthy.Store(true)
	if d := <-changes; d {
		t.Fatal("OnChange(true) again, want the end of degraded mode")
	}
	select {
	case <-term.Lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the fallback's term outlived the primary's return")
	}
	if fallback.released.Load() == 0 {
		t.Error("the fallback's term was not released")
	}
	got = acquire(ctx, l)
	primary.grant(8)
	if term := <-got; term.Epoch != 8 || l.Fallback() {
		t.Fatalf("after the primary's return: term %d (fallback %v), want the primary's 8", term.Epoch, l.Fallback())
	}
}

// A probe that fails for less than After changes nothing.
func TestShortFailureIsNotDegraded(t *testing.T) {
	primary, fallback := newSide(), newSide()
	var calls atomic.Int32
	l := New(Options{Primary: primary, Fallback: fallback, After: time.Hour, Probe: 5 * time.Millisecond,
		Healthy: func(context.Context) error { calls.Add(1); return errors.New("down") }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	await.Until(t, "several failed probes", func() bool { return calls.Load() >= 5 })
	cancel()
	<-done
	if d, _ := l.Degraded(); d {
		t.Fatal("degraded before After passed")
	}
}

// Acquire ends with its context.
func TestAcquireEndsWithContext(t *testing.T) {
	l, primary, _, _, _ := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := acquire(ctx, l)
	await.Until(t, "an Acquire waiting", func() bool { return primary.waiting.Load() == 1 })
	cancel()
	if _, ok := <-got; ok {
		t.Fatal("Acquire returned a term after its context ended")
	}
}
