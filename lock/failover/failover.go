// Package failover is the lease of degraded mode: the Redis lease while
// Redis answers, and the peers' election when it has not answered for
// longer than the lease's TTL, so that a cluster whose Redis is down still
// decides and pages. When Redis answers again, a term won among the peers
// ends, and the Redis lease decides again.
package failover

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/lock"
)

// Side is one side of the failover: the Redis lease or the peers'.
type Side interface {
	Acquire(ctx context.Context) (lock.Term, error)
	Release(ctx context.Context) error
}

// Options configure a failover Lease. Primary, Fallback and Healthy are
// required.
type Options struct {
	Primary  Side
	Fallback Side
	// Healthy probes the primary's store (a Redis PING).
	Healthy func(ctx context.Context) error
	// After is how long the primary may fail every probe before the
	// fallback takes over: the lease TTL, so no Redis term can still be
	// held anywhere when the peers elect.
	After time.Duration
	// Probe is the period of the probe; default After/4.
	Probe time.Duration
	// OnChange is called (from Run's goroutine) each time degraded mode
	// begins or ends.
	OnChange func(degraded bool, cause error)
	Logger   *slog.Logger
}

// Lease is the lease of degraded mode. Run must run for it to notice
// anything.
type Lease struct {
	o Options

	mu       sync.Mutex
	degraded bool
	since    time.Time
	changed  chan struct{} // closed and replaced at each change of degraded
	fallback bool          // the term held was won among the peers
}

// New returns the failover lease of o. It starts out not degraded.
func New(o Options) *Lease {
	if o.Probe <= 0 {
		o.Probe = max(o.After/4, 50*time.Millisecond)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnChange == nil {
		o.OnChange = func(bool, error) {}
	}
	return &Lease{o: o, changed: make(chan struct{})}
}

// Degraded reports whether the primary has failed for longer than After,
// and since when.
func (l *Lease) Degraded() (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.degraded, l.since
}

// Fallback reports whether the term held now (or last) was won among the
// peers rather than through the primary.
func (l *Lease) Fallback() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fallback
}

// state returns degraded and the channel closed at its next change.
func (l *Lease) state() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.degraded, l.changed
}

// Run probes the primary until ctx is done.
func (l *Lease) Run(ctx context.Context) error {
	tick := time.NewTicker(l.o.Probe)
	defer tick.Stop()
	lastOK := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, l.o.Probe)
		err := l.o.Healthy(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := time.Now()
		if err == nil {
			lastOK = now
		}
		l.set(err != nil && now.Sub(lastOK) > l.o.After, err, now)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (l *Lease) set(degraded bool, cause error, now time.Time) {
	l.mu.Lock()
	if l.degraded == degraded {
		l.mu.Unlock()
		return
	}
	l.degraded, l.since = degraded, now
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	if degraded {
		l.o.Logger.Warn("DEGRADED: redis unreachable for longer than the lease TTL; the nodes decide among themselves (peer mode) until it answers",
			"after", l.o.After, "err", cause)
	} else {
		l.o.Logger.Warn("redis answers again: leaving degraded mode, the redis lease decides")
	}
	l.o.OnChange(degraded, cause)
}

// Acquire blocks until this node leads, through the primary while it is
// healthy or among the peers while degraded, or until ctx is done. A term
// won among the peers ends when the primary is healthy again.
func (l *Lease) Acquire(ctx context.Context) (lock.Term, error) {
	for {
		degraded, changed := l.state()
		side := l.o.Primary
		if degraded {
			side = l.o.Fallback
		}
		actx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-actx.Done():
			}
		}()
		t, err := side.Acquire(actx)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return lock.Term{}, ctx.Err()
			}
			select {
			case <-changed:
				continue // the mode changed under the attempt: try the other side
			default:
			}
			cancel()
			return lock.Term{}, err
		}
		l.mu.Lock()
		l.fallback = degraded
		l.mu.Unlock()
		if !degraded {
			cancel()
			return t, nil
		}
		// A peers' term also ends when the primary is back.
		lost := make(chan struct{})
		go func() {
			defer cancel()
			select {
			case <-t.Lost:
			case <-changed:
				_ = l.o.Fallback.Release(context.Background())
			case <-ctx.Done():
			}
			close(lost)
		}()
		return lock.Term{Epoch: t.Epoch, Lost: lost}, nil
	}
}

// Release gives up whichever term is held.
func (l *Lease) Release(ctx context.Context) error {
	return errors.Join(l.o.Primary.Release(ctx), l.o.Fallback.Release(ctx))
}

// leaderReporter is a side that can say who leads.
type leaderReporter interface {
	Leader(ctx context.Context) (owner string, epoch int64, ttl time.Duration, err error)
}

// Leader reports who leads on the side in force: the peers' while
// degraded, the primary's otherwise.
func (l *Lease) Leader(ctx context.Context) (owner string, epoch int64, ttl time.Duration, err error) {
	side := l.o.Primary
	if d, _ := l.Degraded(); d {
		side = l.o.Fallback
	}
	if lr, ok := side.(leaderReporter); ok {
		return lr.Leader(ctx)
	}
	return "", 0, 0, nil
}
