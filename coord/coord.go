// Package coord holds the pieces that make dmonitor's coordination modes
// out of their adapters (lock/..., share/..., alerting/...): the alert
// state of peer mode, of redis mode with its local mirror, and of degraded
// mode, and the sharing of degraded mode through Redis and the peers at
// once. cmd/dmonitor picks one set per mode; docs/ARCHITECTURE.md says
// what each guarantees.
package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/lock/failover"
	"github.com/dmonitor/dmonitor/share/peershare"
	"github.com/dmonitor/dmonitor/silence"
)

// PeerShare gives the evaluator the peers in its own terms.
type PeerShare struct{ *peershare.Exchange }

func (s PeerShare) Observers(ctx context.Context) ([]evaluator.ObserverSeen, error) {
	obs, err := s.Exchange.Observers(ctx)
	out := make([]evaluator.ObserverSeen, len(obs))
	for i, o := range obs {
		out[i] = evaluator.ObserverSeen{Name: o.Name, LastSeen: o.LastSeen}
	}
	return out, err
}

// PeerState is the alert state in peer mode: this node's copy, which the
// decider's writes reach on every peer. A node that starts deciding first
// takes in the copies of the peers that answer, newest record first, so it
// resumes where the last decider stopped even if it was down meanwhile.
type PeerState struct {
	*localstate.Store
	Exchange *peershare.Exchange
	// Queues take the notifications the last decider left undelivered.
	Queues Queues
	// Silences take the peers' silences; nil when they are not shared
	// through the peers (degraded mode keeps them in Redis).
	Silences *silence.Store
	Log      *slog.Logger // nil discards
}

// Queues are this node's notification queues, by destination ("ops/email").
type Queues interface {
	Send(receiver string, n alerting.Notification) error
}

// TakeOver fetches the peers' copies, merges them into this node's and
// takes the local store over; the notifications the peers hold for a
// decider that did not report them done are queued here, under their own
// ids (a receiver drops one it has). A peer that does not answer within a
// few seconds is skipped: it may be the decider that died.
func (p PeerState) TakeOver(ctx context.Context, epoch int64) error {
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	f := p.Exchange.FetchState(fctx)
	cancel()
	applied, err := p.Store.Merge(ctx, f.Records)
	if err != nil {
		return fmt.Errorf("merge the peers' alert state: %w", err)
	}
	p.takeSilences(f.Silences)
	for _, q := range f.Queued {
		if err := p.Queues.Send(q.Receiver, q.Notification); err != nil {
			orDiscard(p.Log).Error("queue a notification the last decider left undelivered", "receiver", q.Receiver,
				"id", q.Notification.ID, "err", err)
		}
	}
	orDiscard(p.Log).Info("took in the peers' alert state", "peers_answering", f.Answered, "records", len(f.Records),
		"newer", len(applied), "notifications_taken_over", len(f.Queued))
	return p.Store.TakeOver(ctx, epoch)
}

// takeSilences merges the peers' silences into this node's.
func (p PeerState) takeSilences(sils []silence.Silence) {
	if p.Silences == nil || len(sils) == 0 {
		return
	}
	if _, err := p.Silences.Merge(sils); err != nil {
		orDiscard(p.Log).Error("take the peers' silences", "err", err)
	}
}

// CatchUp takes in, once, what the peers hold of the alert state and the
// silences, so that a node that was down shows and applies them before it
// ever decides. It asks every few seconds until one peer answers, or ctx
// is done.
func (p PeerState) CatchUp(ctx context.Context) {
	for {
		fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		f := p.Exchange.FetchState(fctx)
		cancel()
		if f.Answered > 0 {
			if _, err := p.Store.Merge(ctx, f.Records); err != nil {
				orDiscard(p.Log).Warn("take in the peers' alert state", "err", err)
			}
			p.takeSilences(f.Silences)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
	}
}

var _ evaluator.StateStore = PeerState{}

// MirrorState is the alert state in redis mode: Redis is the truth while
// it has it, and every write also goes to this node's own copy, which
// fills Redis again when it comes back empty (restarted without
// persistence, or flushed), so an incident already paged is neither paged
// again under a new id nor left without its resolved notification.
type MirrorState struct {
	Primary Primary
	Local   *localstate.Store
	Log     *slog.Logger // nil discards
}

// Primary is the store MirrorState mirrors: Redis (redisstate.Store).
type Primary interface {
	evaluator.StateStore
	// Settle records that the leader of epoch is done reconciling the
	// store after its TakeOver; followers copy it only from then on.
	Settle(ctx context.Context, epoch int64) error
}

// TakeOver fences Redis for epoch and reconciles: an instance this node's
// copy holds and Redis lacks, or holds older (by evaluation time), is
// written back to Redis. Then it settles Redis, so the other nodes copy it
// again.
func (m MirrorState) TakeOver(ctx context.Context, epoch int64) error {
	if err := m.Primary.TakeOver(ctx, epoch); err != nil {
		return err
	}
	if err := m.Local.TakeOver(ctx, epoch); err != nil {
		return err
	}
	remote, err := m.Primary.LoadAll(ctx)
	if err != nil {
		return err
	}
	mine, err := m.Local.Records(ctx)
	if err != nil {
		return err
	}
	restored, dropped := 0, 0
	for _, rec := range mine {
		r, inRedis := remote[rec.Key]
		switch {
		case rec.Deleted:
			// Resolved here (while degraded, say) after Redis last heard
			// of it: Redis must not bring the incident back.
			if inRedis && rec.Updated.After(r.LastEval) {
				if err := m.Primary.Delete(ctx, epoch, rec.Key); err != nil {
					return fmt.Errorf("restore alert state to redis: %w", err)
				}
				dropped++
			}
		case !inRedis || r.LastEval.Before(rec.Instance.LastEval):
			if err := m.Primary.Save(ctx, epoch, rec.Key, rec.Instance); err != nil {
				return fmt.Errorf("restore alert state to redis: %w", err)
			}
			restored++
		}
	}
	if restored+dropped > 0 {
		orDiscard(m.Log).Warn("redis lacked alert state this node kept; restored it from the local copy",
			"instances", restored, "resolved", dropped)
	}
	return m.Primary.Settle(ctx, epoch)
}

func (m MirrorState) LoadAll(ctx context.Context) (map[string]alerting.Instance, error) {
	return m.Primary.LoadAll(ctx)
}

// Save writes Redis first: a write it refuses (a newer leader) must not
// land in the local copy either.
func (m MirrorState) Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error {
	if err := m.Primary.Save(ctx, epoch, key, inst); err != nil {
		return err
	}
	if err := m.Local.Save(ctx, epoch, key, inst); err != nil {
		orDiscard(m.Log).Warn("keep alert state on this node", "key", key, "err", err)
	}
	return nil
}

func (m MirrorState) Delete(ctx context.Context, epoch int64, key string) error {
	if err := m.Primary.Delete(ctx, epoch, key); err != nil {
		return err
	}
	if err := m.Local.Delete(ctx, epoch, key); err != nil {
		orDiscard(m.Log).Warn("keep alert state on this node", "key", key, "err", err)
	}
	return nil
}

var _ evaluator.StateStore = MirrorState{}

// Leader says whether this node holds the Redis lease now.
type Leader interface{ Leading() bool }

// Snapshotter reads Redis's alert state and whether it is settled: the
// current leader has reconciled it after its takeover
// (redisstate.Store.Snapshot).
type Snapshotter interface {
	Snapshot(ctx context.Context) (insts map[string]alerting.Instance, settled bool, err error)
}

// MirrorFollower keeps this node's copy of the alert state in step with
// Redis while another node leads, every lease TTL, so that whichever node
// leads after Redis comes back empty still knows what was paged.
func MirrorFollower(ctx context.Context, lease Leader, redis Snapshotter, st *localstate.Store, every time.Duration, log *slog.Logger) {
	log = orDiscard(log)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if lease.Leading() {
			continue // the leader writes through MirrorState
		}
		qctx, cancel := context.WithTimeout(ctx, every)
		err := mirrorOnce(qctx, redis, st)
		cancel()
		if err != nil {
			log.Warn("copy the leader's alert state", "err", err)
		}
	}
}

// mirrorOnce copies Redis's alert state into st, if it is settled: an
// empty Redis no leader has reconciled yet is a lost state, not a cluster
// without incidents, and a node that took it for one would, leading next,
// never resolve what was paged. An instance st holds and Redis does not is
// marked resolved as of the snapshot, so what this node writes meanwhile
// (it may have just begun to lead) stays.
func mirrorOnce(ctx context.Context, redis Snapshotter, st *localstate.Store) error {
	at := time.Now().UTC()
	remote, settled, err := redis.Snapshot(ctx)
	if err != nil || !settled {
		return nil // Redis being away is the failover lease's to report
	}
	recs, err := st.Records(ctx)
	if err != nil {
		return fmt.Errorf("read the local alert state: %w", err)
	}
	var merge []localstate.Record
	for key, inst := range remote {
		merge = append(merge, localstate.Record{Key: key, Instance: inst, Updated: inst.LastEval})
	}
	for _, r := range recs {
		if _, ok := remote[r.Key]; !ok && !r.Deleted {
			merge = append(merge, localstate.Record{Key: r.Key, Deleted: true, Updated: at})
		}
	}
	_, err = st.Merge(ctx, merge)
	return err
}

// FailoverState is the alert state in degraded-capable redis mode: each
// term keeps it where its lease was won, Redis (mirrored on every node) or
// the peers' copies.
type FailoverState struct {
	Lease *failover.Lease
	Redis MirrorState
	Peers PeerState
}

func (f FailoverState) current() evaluator.StateStore {
	if f.Lease.Fallback() {
		return f.Peers
	}
	return f.Redis
}

func (f FailoverState) TakeOver(ctx context.Context, epoch int64) error {
	return f.current().TakeOver(ctx, epoch)
}

// LoadAll reads the current side; a follower asks for status, and while
// degraded only the local copy answers.
func (f FailoverState) LoadAll(ctx context.Context) (map[string]alerting.Instance, error) {
	if d, _ := f.Lease.Degraded(); d {
		return f.Peers.LoadAll(ctx)
	}
	return f.current().LoadAll(ctx)
}

func (f FailoverState) Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error {
	return f.current().Save(ctx, epoch, key, inst)
}

func (f FailoverState) Delete(ctx context.Context, epoch int64, key string) error {
	return f.current().Delete(ctx, epoch, key)
}

// DualShare shares through Redis and with the peers at once, so that
// nothing changes for the checks when Redis goes away: a result arrives
// twice while both work, and the newer-wins table keeps one.
type DualShare struct {
	Redis evaluator.Share
	Peers PeerShare
	// Degraded, when set, says Redis is known to be away: it is then
	// not tried at all. A client retrying a dead Redis takes the best
	// part of a second per call, and the results, which go out one
	// after the other, would reach the peers that much later.
	Degraded func() (bool, time.Time)
}

// redisAway says whether Redis is known to be away.
func (d DualShare) redisAway() bool {
	if d.Degraded == nil {
		return false
	}
	away, _ := d.Degraded()
	return away
}

func (d DualShare) Publish(ctx context.Context, r check.Result) error {
	_ = d.Peers.Publish(ctx, r)
	if !d.redisAway() {
		_ = d.Redis.Publish(ctx, r) // unreachable Redis is the failover lease's to report
	}
	return nil
}

// PublishAll is Publish for many results: one round trip to Redis when
// its share pipelines them (see observer's batchPublisher).
func (d DualShare) PublishAll(ctx context.Context, rs []check.Result) error {
	for _, r := range rs {
		_ = d.Peers.Publish(ctx, r)
	}
	if d.redisAway() {
		return nil
	}
	if bp, ok := d.Redis.(interface {
		PublishAll(context.Context, []check.Result) error
	}); ok {
		_ = bp.PublishAll(ctx, rs) // unreachable Redis is the failover lease's to report
		return nil
	}
	for _, r := range rs {
		_ = d.Redis.Publish(ctx, r)
	}
	return nil
}

func (d DualShare) Subscribe(ctx context.Context, fn func(check.Result)) error {
	var mu sync.Mutex
	one := func(r check.Result) { mu.Lock(); defer mu.Unlock(); fn(r) }
	errc := make(chan error, 1)
	go func() { errc <- d.Redis.Subscribe(ctx, one) }()
	err := d.Peers.Subscribe(ctx, one)
	return errors.Join(err, <-errc)
}

func (d DualShare) Heartbeat(ctx context.Context, at time.Time) error {
	_ = d.Peers.Heartbeat(ctx, at)
	if !d.redisAway() {
		_ = d.Redis.Heartbeat(ctx, at)
	}
	return nil
}

// Observers merges both views, the later heartbeat winning, so an observer
// heard by either is alive.
func (d DualShare) Observers(ctx context.Context) ([]evaluator.ObserverSeen, error) {
	var fromRedis []evaluator.ObserverSeen
	if !d.redisAway() {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		fromRedis, _ = d.Redis.Observers(rctx)
		cancel()
	}
	fromPeers, err := d.Peers.Observers(ctx)
	last := make(map[string]time.Time)
	for _, o := range append(fromRedis, fromPeers...) {
		if o.LastSeen.After(last[o.Name]) {
			last[o.Name] = o.LastSeen
		}
	}
	out := make([]evaluator.ObserverSeen, 0, len(last))
	for _, n := range slices.Sorted(maps.Keys(last)) {
		out = append(out, evaluator.ObserverSeen{Name: n, LastSeen: last[n]})
	}
	return out, err
}

func (d DualShare) RequestConfirm(ctx context.Context, host, chk string, ttl time.Duration) (bool, error) {
	if d.redisAway() {
		return d.Peers.RequestConfirm(ctx, host, chk, ttl)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	viaRedis, rerr := d.Redis.RequestConfirm(rctx, host, chk, ttl)
	cancel()
	if rerr == nil {
		// Redis takes the round cluster-wide; the peers hear it too, so a
		// node cut off from Redis still confirms.
		if viaRedis {
			_, _ = d.Peers.RequestConfirm(ctx, host, chk, ttl)
		}
		return viaRedis, nil
	}
	return d.Peers.RequestConfirm(ctx, host, chk, ttl)
}

func (d DualShare) Confirmations(ctx context.Context, fn func(host, check, from string)) error {
	errc := make(chan error, 1)
	go func() { errc <- d.Redis.Confirmations(ctx, fn) }()
	err := d.Peers.Confirmations(ctx, fn)
	return errors.Join(err, <-errc)
}

var _ evaluator.Share = DualShare{}

// orDiscard is l, or a logger that discards when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
