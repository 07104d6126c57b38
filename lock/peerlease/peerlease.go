// Package peerlease elects the deciding node of a cluster without Redis, as
// the original dmonitor did: of the nodes in nodes.txt, the live one whose
// name sorts first decides. A node is live while its heartbeats arrive; this
// node is always live to itself.
//
// There is no shared store to make the choice atomic, so it is only as
// good as each node's view: in a partition each side elects its own
// decider, and for up to SilentAfter after a decider dies nobody decides.
// Both are accepted by design (a duplicate notification, same id, rather
// than silence); see docs/ARCHITECTURE.md.
package peerlease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/lock"
)

// ErrReleased is what Acquire returns after Close.
var ErrReleased = errors.New("peer lease closed")

// Options configure a Lease. Self, Nodes and Heard are required.
type Options struct {
	// Self is this node's name, one of Nodes.
	Self string
	// Nodes are every node of nodes.txt, this one included.
	Nodes []string
	// Heard returns when each peer was last heard from, on this node's
	// clock.
	Heard func() map[string]time.Time
	// SilentAfter is how long a peer may go unheard and still count as
	// live: a few heartbeat intervals.
	SilentAfter time.Duration
	// Poll is how often the view is looked at again. Default SilentAfter/10,
	// at least 50ms.
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Lease is the peer-mode leader lease of one node.
type Lease struct {
	o       Options
	nodes   []string // sorted
	started time.Time

	mu        sync.Mutex
	lastEpoch int64
	term      *term
	closed    bool
	watchers  sync.WaitGroup
}

type term struct {
	epoch int64
	lost  chan struct{}
	stop  chan struct{}
	once  sync.Once
}

// New returns the lease of o.Self. The clock of the warm-up starts now: a
// node that has just started decides nothing until it has heard from every
// peer, or SilentAfter has passed.
func New(o Options) *Lease {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = max(o.SilentAfter/10, 50*time.Millisecond)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lease{o: o, nodes: slices.Sorted(slices.Values(o.Nodes)), started: o.Now()}
}

// Decider returns the node that decides in this node's view: the live node
// whose name sorts first. ready is false during the warm-up: for
// SilentAfter after New, until every peer has been heard from. A node that
// has just started knows nothing yet of the others, and one that restarts
// while another decides would otherwise decide beside it until the other
// hears it.
func (l *Lease) Decider() (name string, ready bool) {
	now := l.o.Now()
	heard := l.o.Heard()
	ready = now.Sub(l.started) >= l.o.SilentAfter
	if !ready {
		ready = true
		for _, n := range l.nodes {
			if _, ok := heard[n]; !ok && n != l.o.Self {
				ready = false
			}
		}
	}
	for _, n := range l.nodes {
		if n == l.o.Self {
			return n, ready
		}
		if at, ok := heard[n]; ok && now.Sub(at) <= l.o.SilentAfter {
			return n, ready
		}
	}
	return l.o.Self, ready
}

// Acquire blocks until this node decides, or ctx is done. The term's epoch
// is the time in milliseconds, so a later term anywhere in the cluster has
// a larger epoch (clocks in step to well within a second, which peers
// report when they are not); Lost is closed when a live node sorting
// before this one is heard, or by Release.
func (l *Lease) Acquire(ctx context.Context) (lock.Term, error) {
	tick := time.NewTicker(l.o.Poll)
	defer tick.Stop()
	logged := ""
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return lock.Term{}, ErrReleased
		}
		if t := l.term; t != nil {
			l.mu.Unlock()
			return lock.Term{Epoch: t.epoch, Lost: t.lost}, nil
		}
		l.mu.Unlock()
		name, ready := l.Decider()
		if ready && name == l.o.Self {
			return l.begin()
		}
		if ready && name != logged {
			logged = name
			l.o.Logger.Info("following", "decider", name)
		}
		select {
		case <-ctx.Done():
			return lock.Term{}, fmt.Errorf("acquire peer lease: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (l *Lease) begin() (lock.Term, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Close or another Acquire may have come between the caller's look
	// and this one.
	if l.closed {
		return lock.Term{}, ErrReleased
	}
	if t := l.term; t != nil {
		return lock.Term{Epoch: t.epoch, Lost: t.lost}, nil
	}
	epoch := max(l.o.Now().UnixMilli(), l.lastEpoch+1)
	l.lastEpoch = epoch
	t := &term{epoch: epoch, lost: make(chan struct{}), stop: make(chan struct{})}
	l.term = t
	l.o.Logger.Info("deciding", "self", l.o.Self, "epoch", epoch)
	l.watchers.Go(func() { l.watch(t) })
	return lock.Term{Epoch: epoch, Lost: t.lost}, nil
}

// watch ends t as soon as another node decides in this node's view.
func (l *Lease) watch(t *term) {
	tick := time.NewTicker(l.o.Poll)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		if name, _ := l.Decider(); name != l.o.Self {
			l.o.Logger.Info("stepping down: a node that sorts first is live", "decider", name, "epoch", t.epoch)
			l.end(t)
			return
		}
	}
}

func (l *Lease) end(t *term) {
	t.once.Do(func() {
		close(t.lost)
		close(t.stop)
	})
	l.mu.Lock()
	if l.term == t {
		l.term = nil
	}
	l.mu.Unlock()
}

// Release ends the current term, if any. The next decider is whoever its
// peers see first once this node stops beating.
func (l *Lease) Release(context.Context) error {
	l.mu.Lock()
	t := l.term
	l.mu.Unlock()
	if t != nil {
		l.end(t)
	}
	l.watchers.Wait()
	return nil
}

// Close releases the lease for good: Acquire fails from now on.
func (l *Lease) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Release(context.Background())
}

// Leader reports the decider in this node's view, for status: its name,
// the epoch when it is this node, and no TTL.
func (l *Lease) Leader(context.Context) (owner string, epoch int64, ttl time.Duration, err error) {
	name, _ := l.Decider()
	l.mu.Lock()
	defer l.mu.Unlock()
	if name == l.o.Self && l.term != nil {
		epoch = l.term.epoch
	}
	return name, epoch, 0, nil
}
