package evaluator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
)

// Share is how the observers of a cluster see each other: every result and
// heartbeat is published, and the leader (every node, in fact, so a new
// leader starts warm) receives them all.
type Share interface {
	// Publish makes r every observer's to see.
	Publish(ctx context.Context, r check.Result) error
	// Subscribe delivers every published result, the current state first,
	// until ctx is done; it reconnects on its own.
	Subscribe(ctx context.Context, fn func(check.Result)) error
	// Heartbeat says this observer is alive at at.
	Heartbeat(ctx context.Context, at time.Time) error
	// Observers returns every observer's last heartbeat.
	Observers(ctx context.Context) ([]ObserverSeen, error)
	// RequestConfirm asks the other observers to run host's check now; it
	// reports whether a round started (false: one is already under way for
	// that check, cluster-wide, within ttl).
	RequestConfirm(ctx context.Context, host, check string, ttl time.Duration) (bool, error)
	// Confirmations delivers the other observers' requests until ctx is done.
	Confirmations(ctx context.Context, fn func(host, check, from string)) error
}

// ObserverSeen is an observer and its last heartbeat.
type ObserverSeen struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_seen"`
}

// StateStore keeps the leader's alert state where its successor finds it.
// Every write carries the writer's epoch and is refused once a newer
// leader has taken over, so a deposed leader that wakes up late cannot
// overwrite newer state.
type StateStore interface {
	// TakeOver makes epoch the only one allowed to write.
	TakeOver(ctx context.Context, epoch int64) error
	// LoadAll returns every stored instance.
	LoadAll(ctx context.Context) (map[string]alerting.Instance, error)
	Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error
	Delete(ctx context.Context, epoch int64, key string) error
}

// TermSender opens, at the start of a leader term, the notification queues
// of that term, fenced by its epoch, so a deposed leader sends nothing its
// successor also sends. stop ends them and waits for them to stop.
type TermSender func(epoch int64) (s Sender, stop func(), err error)

// stateKey is the key of an instance in the StateStore.
func stateKey(ik instKey) string { return ik.rule + "\x00" + ik.host + "\x00" + ik.check }

// publish hands r to the other observers, and asks them to confirm a check
// this observer has just seen go from passing to failing, so an outage is
// confirmed in about one plugin run rather than one interval.
func (e *Evaluator) publish(ctx context.Context, r check.Result, wasPassing bool) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.share.Publish(pctx, r); err != nil {
		e.shareErr("publish result", err)
		return
	}
	if wasPassing && r.Status.Failing() {
		if started, err := e.share.RequestConfirm(pctx, r.Host, r.Check, e.confirmTTL(r.Check)); err != nil {
			e.shareErr("request confirmation", err)
		} else if started {
			e.metrics.confirmations.Inc()
			e.log.Info("asked the other observers to confirm", "host", r.Host, "check", r.Check)
		}
	}
}

// confirmTTL is how long one confirmation round of a check holds off the
// next, cluster-wide: the spacing of the observers' staggered runs
// (interval/N), at least a second. Longer would make an outage that starts
// soon after the previous one wait for the next scheduled run instead of
// being confirmed at once; shorter would let every observer start a round.
func (e *Evaluator) confirmTTL(chk string) time.Duration {
	iv := e.cfg.Interval
	if c, ok := e.cfg.Checks[chk]; ok {
		iv = c.Interval
	}
	return max(iv/time.Duration(max(len(e.cfg.Nodes), 1)), time.Second)
}

// shareErr logs a failure to reach the other observers once per change
// from working to failing, not once per result.
func (e *Evaluator) shareErr(what string, err error) {
	if e.shareDown.CompareAndSwap(false, true) {
		e.log.Error("cannot reach the other observers; results stay local until it recovers", "op", what, "err", err)
	}
}

// cluster runs what a node of a cluster does beside its checks: it takes
// in the other observers' results, runs the checks they ask it to confirm,
// and beats its heart, until ctx is done.
func (e *Evaluator) cluster(ctx context.Context, checkCtx context.Context) {
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		err := e.share.Subscribe(ctx, func(r check.Result) {
			if r.Observer == e.cfg.Observer {
				return // recorded when it ran
			}
			e.shareDown.Store(false)
			if isNew, _, _ := e.live.put(r); isNew {
				e.markDirty(instanceKey{r.Host, r.Check})
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			e.log.Error("results subscription ended", "err", err)
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		err := e.share.Confirmations(ctx, func(host, chk, from string) {
			j, ok := e.jobs[instanceKey{host, chk}]
			if !ok {
				return
			}
			e.log.Info("confirming for another observer", "host", host, "check", chk, "from", from)
			e.rechecks.Go(func() { e.runJob(checkCtx, j) })
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			e.log.Error("confirmation subscription ended", "err", err)
		}
	}()
	<-done
	<-done
}

// markDirty queues k for the leader's next look.
func (e *Evaluator) markDirty(k instanceKey) {
	e.dirtyMu.Lock()
	e.dirty[k] = struct{}{}
	e.dirtyMu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// alone is the Share of a node on its own: nothing to tell, nobody to hear
// from but itself.
type alone struct{ observer string }

func (alone) Publish(context.Context, check.Result) error { return nil }
func (alone) RequestConfirm(context.Context, string, string, time.Duration) (bool, error) {
	return false, nil
}

func (alone) Subscribe(ctx context.Context, _ func(check.Result)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (alone) Confirmations(ctx context.Context, _ func(host, check, from string)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (a alone) Heartbeat(context.Context, time.Time) error { return nil }

func (a alone) Observers(context.Context) ([]ObserverSeen, error) { return nil, nil }

// memState is the StateStore of an evaluator given none: the state lives
// as long as the process. The daemon always gives one on disk.
type memState struct {
	mu    sync.Mutex
	epoch int64
	insts map[string]alerting.Instance
}

func newMemState() *memState { return &memState{insts: make(map[string]alerting.Instance)} }

func (m *memState) TakeOver(_ context.Context, epoch int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch = epoch
	return nil
}

func (m *memState) LoadAll(context.Context) (map[string]alerting.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.insts), nil
}

func (m *memState) Save(_ context.Context, epoch int64, key string, inst alerting.Instance) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch != m.epoch {
		return fmt.Errorf("save %q under epoch %d, current %d: %w", key, epoch, m.epoch, alerting.ErrFenced)
	}
	m.insts[key] = inst
	return nil
}

func (m *memState) Delete(_ context.Context, epoch int64, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch != m.epoch {
		return fmt.Errorf("delete %q under epoch %d, current %d: %w", key, epoch, m.epoch, alerting.ErrFenced)
	}
	delete(m.insts, key)
	return nil
}
