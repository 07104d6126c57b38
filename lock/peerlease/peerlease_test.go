package peerlease_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/fakeclock"
	"github.com/dmonitor/dmonitor/lock"
	"github.com/dmonitor/dmonitor/lock/peerlease"
)

// silentAfter is how long a node may go unheard and still count as live,
// in every test.
const silentAfter = 30 * time.Second

// t0 is where the fake clock starts: the lease's warm-up begins here.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

// view is what this node has heard of its peers, as the peer exchange
// would report it, and how often the lease has looked.
type view struct {
	mu    sync.Mutex
	heard map[string]time.Time
	looks int
	// gate, when set, runs at every look before it answers: a test holds
	// the lease there.
	gate func()
}

func (v *view) Heard() map[string]time.Time {
	v.mu.Lock()
	v.looks++
	heard, gate := maps.Clone(v.heard), v.gate
	v.mu.Unlock()
	if gate != nil {
		gate()
	}
	return heard
}

func (v *view) hear(name string, at time.Time) {
	v.mu.Lock()
	if v.heard == nil {
		v.heard = make(map[string]time.Time)
	}
	v.heard[name] = at
	v.mu.Unlock()
}

func (v *view) looked() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.looks
}

// awaitLooks returns once the lease has looked at v n more times: it has
// polled, and what it does on a poll is done for those before.
func (v *view) awaitLooks(t *testing.T, n int) {
	t.Helper()
	from := v.looked()
	await.Until(t, "the lease to poll its view", func() bool { return v.looked() >= from+n })
}

// newLease returns the lease of self among nodes a, b and c (given out of
// order: the lease sorts them), closed when the test ends.
func newLease(t *testing.T, self string, c *fakeclock.Clock, v *view) *peerlease.Lease {
	t.Helper()
	l := peerlease.New(peerlease.Options{
		Self: self, Nodes: []string{"c", "a", "b"}, Heard: v.Heard,
		SilentAfter: silentAfter, Poll: time.Millisecond, Now: c.Now,
	})
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// acquired is what one Acquire returned.
type acquired struct {
	term lock.Term
	err  error
}

// acquire calls l.Acquire in a goroutine, and delivers its return. The call
// is cancelled, and waited for, when the test ends.
func acquire(t *testing.T, l *peerlease.Lease) <-chan acquired {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan acquired, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		term, err := l.Acquire(ctx)
		out <- acquired{term, err}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

// receive waits for Acquire's return, failing the test after 10s.
func receive(t *testing.T, ch <-chan acquired, what string) acquired {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatalf("not within 10s: %s", what)
		return acquired{}
	}
}

// notYet fails the test if Acquire has returned.
func notYet(t *testing.T, ch <-chan acquired, why string) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("Acquire returned (epoch %d, err %v), but %s", a.term.Epoch, a.err, why)
	default:
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestDecider: the live node whose name sorts first decides, once the
// warm-up is over.
func TestDecider(t *testing.T) {
	const never = -1 // in heard: that node was never heard from
	cases := []struct {
		name    string
		self    string
		elapsed time.Duration            // since New
		heard   map[string]time.Duration // how long ago each node was heard
		want    string                   // checked only when ready
		ready   bool
	}{
		// a sorts first and is live: a decides, not b.
		{"a live", "b", silentAfter, map[string]time.Duration{"a": 0, "c": 0}, "a", true},
		// SilentAfter exactly is still live.
		{"a at the edge of silence", "b", silentAfter, map[string]time.Duration{"a": silentAfter, "c": 0}, "a", true},
		// a silent beyond SilentAfter: b is the first live node.
		{"a silent", "b", silentAfter, map[string]time.Duration{"a": silentAfter + time.Millisecond, "c": 0}, "b", true},
		// a never heard, warm-up still running: nobody may decide yet.
		{"a never heard during warm-up", "b", time.Second, map[string]time.Duration{"c": 0}, "", false},
		// The warm-up ends SilentAfter after New: b decides without a.
		{"a never heard after warm-up", "b", silentAfter, map[string]time.Duration{"c": 0}, "b", true},
		// The warm-up is not over a nanosecond early.
		{"warm-up a moment short", "b", silentAfter - time.Nanosecond, map[string]time.Duration{"c": 0}, "", false},
		// Nothing heard at all: b alone decides after the warm-up.
		{"nobody heard after warm-up", "b", silentAfter, nil, "b", true},
		// Every peer heard: the warm-up ends early, and a decides.
		{"every peer heard early", "b", time.Second, map[string]time.Duration{"a": 0, "c": 0}, "a", true},
		// A name outside nodes.txt does not decide, however first it sorts.
		{"a stranger sorting first", "b", silentAfter, map[string]time.Duration{"0": 0, "a": never, "c": 0}, "b", true},
		// a decides whoever else is live, once ready.
		{"self a with every peer live", "a", silentAfter, map[string]time.Duration{"b": 0, "c": 0}, "a", true},
		// a decides alone too.
		{"self a alone", "a", silentAfter, nil, "a", true},
		// a during warm-up, c not heard yet: not ready.
		{"self a during warm-up", "a", time.Second, map[string]time.Duration{"b": 0}, "", false},
		// a as soon as every peer was heard.
		{"self a, every peer heard early", "a", time.Second, map[string]time.Duration{"b": 0, "c": 0}, "a", true},
		// c decides only when both before it are silent.
		{"self c, b live", "c", silentAfter, map[string]time.Duration{"a": silentAfter + time.Second, "b": 0}, "b", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeclock.New(t0)
			v := &view{}
			l := newLease(t, tc.self, c, v)
			c.Advance(tc.elapsed)
			for n, ago := range tc.heard {
				if ago != never {
					v.hear(n, c.Now().Add(-ago))
				}
			}
			name, ready := l.Decider()
			if ready != tc.ready {
				t.Fatalf("Decider() ready = %v, want %v", ready, tc.ready)
			}
			if ready && name != tc.want {
				t.Errorf("Decider() = %q, want %q", name, tc.want)
			}
		})
	}
}

// TestAcquireWaitsForTheDecider: b's Acquire blocks while a is live, and
// returns once a goes silent, with an epoch from the clock that grows term
// after term.
func TestAcquireWaitsForTheDecider(t *testing.T) {
	c := fakeclock.New(t0)
	v := &view{}
	v.hear("a", t0)
	v.hear("c", t0)
	l := newLease(t, "b", c, v)

	got := acquire(t, l)
	v.awaitLooks(t, 5)
	notYet(t, got, "a is live and sorts first")
	if owner, epoch, _, _ := l.Leader(context.Background()); owner != "a" || epoch != 0 {
		t.Errorf("Leader() = %q, epoch %d; want a, 0", owner, epoch)
	}

	c.Advance(silentAfter + time.Millisecond)
	a := receive(t, got, "Acquire to return once a is silent")
	if a.err != nil {
		t.Fatalf("Acquire: %v", a.err)
	}
	if a.term.Epoch < c.Now().UnixMilli() {
		t.Errorf("epoch %d, want at least the clock's %d ms", a.term.Epoch, c.Now().UnixMilli())
	}
	if closed(a.term.Lost) {
		t.Fatal("Lost closed at the start of the term")
	}
	owner, epoch, ttl, err := l.Leader(context.Background())
	if err != nil || owner != "b" || epoch != a.term.Epoch || ttl != 0 {
		t.Errorf("Leader() = %q, %d, %v, %v; want b, %d, 0, nil", owner, epoch, ttl, err, a.term.Epoch)
	}
	// Acquire while the term holds returns that term.
	if again, err := l.Acquire(context.Background()); err != nil || again.Epoch != a.term.Epoch {
		t.Errorf("Acquire during the term = epoch %d, %v; want the same term, epoch %d", again.Epoch, err, a.term.Epoch)
	}

	// A second term, the clock unmoved, still has a larger epoch: state
	// written in the first can be told from the second's.
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := receive(t, acquire(t, l), "the second term")
	if second.err != nil {
		t.Fatalf("second Acquire: %v", second.err)
	}
	if second.term.Epoch <= a.term.Epoch {
		t.Errorf("second epoch %d, want more than the first %d", second.term.Epoch, a.term.Epoch)
	}
}

// TestLostWhenAFirstNodeIsLive: the term ends as soon as a node that sorts
// first is heard again, and only then.
func TestLostWhenAFirstNodeIsLive(t *testing.T) {
	c := fakeclock.New(t0)
	v := &view{}
	v.hear("a", t0)
	v.hear("c", t0)
	l := newLease(t, "b", c, v)
	c.Advance(silentAfter + time.Second) // a and c silent
	got := receive(t, acquire(t, l), "Acquire with a silent")
	if got.err != nil {
		t.Fatalf("Acquire: %v", got.err)
	}

	// c sorts after b: its return changes nothing.
	v.hear("c", c.Now())
	v.awaitLooks(t, 5)
	if closed(got.term.Lost) {
		t.Fatal("Lost closed when c, which sorts after b, came back")
	}

	v.hear("a", c.Now())
	await.Until(t, "Lost to close once a is live", func() bool { return closed(got.term.Lost) })
	if owner, epoch, _, _ := l.Leader(context.Background()); owner != "a" || epoch != 0 {
		t.Errorf("Leader() = %q, epoch %d; want a, 0", owner, epoch)
	}
	// The next Acquire waits for a again.
	next := acquire(t, l)
	v.awaitLooks(t, 5)
	notYet(t, next, "a is live again")
}

// TestRelease: Release ends the term at once; the lease can be acquired
// again.
func TestRelease(t *testing.T) {
	c := fakeclock.New(t0)
	v := &view{}
	l := newLease(t, "a", c, v)
	c.Advance(silentAfter)
	got := receive(t, acquire(t, l), "Acquire by a")
	if got.err != nil {
		t.Fatalf("Acquire: %v", got.err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !closed(got.term.Lost) {
		t.Error("Lost still open after Release returned")
	}
	if owner, epoch, _, _ := l.Leader(context.Background()); owner != "a" || epoch != 0 {
		t.Errorf("Leader() after Release = %q, epoch %d; want a (it would decide), 0 (no term)", owner, epoch)
	}
	// Release without a term does nothing.
	if err := l.Release(context.Background()); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

// TestClose: Close ends the term, wakes a waiting Acquire with
// ErrReleased, and makes every later Acquire fail.
func TestClose(t *testing.T) {
	t.Run("term held", func(t *testing.T) {
		c := fakeclock.New(t0)
		v := &view{}
		l := newLease(t, "a", c, v)
		c.Advance(silentAfter)
		got := receive(t, acquire(t, l), "Acquire by a")
		if got.err != nil {
			t.Fatalf("Acquire: %v", got.err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if !closed(got.term.Lost) {
			t.Error("Lost still open after Close")
		}
		if _, err := l.Acquire(context.Background()); !errors.Is(err, peerlease.ErrReleased) {
			t.Errorf("Acquire after Close = %v, want ErrReleased", err)
		}
	})
	t.Run("Acquire waiting", func(t *testing.T) {
		c := fakeclock.New(t0)
		v := &view{}
		v.hear("a", t0)
		v.hear("c", t0)
		l := newLease(t, "b", c, v)
		got := acquire(t, l)
		v.awaitLooks(t, 2)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if a := receive(t, got, "the waiting Acquire to fail"); !errors.Is(a.err, peerlease.ErrReleased) {
			t.Errorf("waiting Acquire = %v, want ErrReleased", a.err)
		}
		// Even when this node would decide.
		c.Advance(silentAfter + time.Second)
		if _, err := l.Acquire(context.Background()); !errors.Is(err, peerlease.ErrReleased) {
			t.Errorf("Acquire after Close = %v, want ErrReleased", err)
		}
	})
}

// TestCloseDuringAcquire: Close while a waiting Acquire is looking at the
// view (past its check of Close, before it starts a term) still makes that
// Acquire fail: no term may begin after Close.
func TestCloseDuringAcquire(t *testing.T) {
	c := fakeclock.New(t0)
	v := &view{}
	l := newLease(t, "a", c, v)
	c.Advance(silentAfter) // a decides as soon as it looks
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	v.gate = func() { once.Do(func() { close(entered); <-release }) }

	got := acquire(t, l)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not look at the view within 10s")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	a := receive(t, got, "Acquire to return")
	if !errors.Is(a.err, peerlease.ErrReleased) {
		t.Errorf("Acquire that was looking when Close ran = epoch %d, err %v; want ErrReleased", a.term.Epoch, a.err)
	}
	if owner, epoch, _, _ := l.Leader(context.Background()); epoch != 0 {
		t.Errorf("Leader() after Close = %q, epoch %d: a term outlived Close", owner, epoch)
	}
}

// TestAcquireEndsWithItsContext: a waiting Acquire gives up when its
// context ends, saying why.
func TestAcquireEndsWithItsContext(t *testing.T) {
	c := fakeclock.New(t0)
	v := &view{}
	v.hear("a", t0)
	v.hear("c", t0)
	l := newLease(t, "b", c, v)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := l.Acquire(ctx); done <- err }()
	v.awaitLooks(t, 2)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Acquire = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not return within 10s of its context's end")
	}
}

// TestLeader: status reports the decider in this node's view, and the
// epoch only while this node holds a term.
func TestLeader(t *testing.T) {
	cases := []struct {
		name      string
		heardA    bool // a heard just now, else never
		acquire   bool // b takes a term first
		wantOwner string
	}{
		// a live: a decides, b has no epoch to show.
		{"a live", true, false, "a"},
		// a never heard: b would decide, but holds no term yet.
		{"b decides, no term", false, false, "b"},
		// b holds a term: its epoch shows.
		{"b holds a term", false, true, "b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeclock.New(t0)
			v := &view{}
			l := newLease(t, "b", c, v)
			c.Advance(silentAfter)
			if tc.heardA {
				v.hear("a", c.Now())
			}
			var wantEpoch int64
			if tc.acquire {
				got := receive(t, acquire(t, l), "Acquire by b")
				if got.err != nil {
					t.Fatalf("Acquire: %v", got.err)
				}
				wantEpoch = got.term.Epoch
			}
			owner, epoch, ttl, err := l.Leader(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if owner != tc.wantOwner || epoch != wantEpoch || ttl != 0 {
				t.Errorf("Leader() = %q, %d, %v; want %q, %d, 0", owner, epoch, ttl, tc.wantOwner, wantEpoch)
			}
		})
	}
}
