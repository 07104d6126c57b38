package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/lock"
	"github.com/dmonitor/dmonitor/lock/failover"
	"github.com/dmonitor/dmonitor/lock/peerlease"
	"github.com/dmonitor/dmonitor/share/peershare"
	"github.com/dmonitor/dmonitor/silence"
	"github.com/dmonitor/dmonitor/silence/redissilence"
)

// coordination is how this node works with the others, built for the
// configuration's mode (docs/ARCHITECTURE.md): the evaluator's lease,
// share, alert state and notification queues, and what runs beside them.
type coordination struct {
	mode       config.Mode
	lease      evaluator.Lease
	share      evaluator.Share // nil: alone
	state      evaluator.StateStore
	termSender evaluator.TermSender
	// peerAPI is served on the control port in peer mode; nil otherwise.
	peerAPI http.Handler
	// silences are the operators' silences: in Redis in redis mode, in a
	// file on every node otherwise, shared with the peers in peer mode.
	silences silenceStore
	// failover is the lease of degraded-capable redis mode; nil otherwise.
	failover *failover.Lease
	// dispatcher is the notification queues on this node's disk, which
	// local and peer mode send through in every term, and redis mode
	// while degraded; nil in redis mode without degraded mode, whose
	// queues are opened in Redis per term. The caller runs it.
	dispatcher *alerting.Dispatcher
	// run is what runs beside the evaluator (the peer senders).
	run    []func(context.Context) error
	closes []func() error
}

func (c *coordination) close() error {
	var errs []error
	for i := len(c.closes) - 1; i >= 0; i-- {
		errs = append(errs, c.closes[i]())
	}
	return errors.Join(errs...)
}

// statePath is where a node keeps its copy of the alert state.
func statePath(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "state.db") }

// openCoordination builds the coordination of cfg's mode, with rs's
// notification queues.
func openCoordination(cfg *config.Config, token string, rs receivers, reg prometheus.Registerer, log *slog.Logger) (*coordination, error) {
	c := &coordination{mode: cfg.Mode()}
	peers := c.mode == config.ModePeer || degradable(cfg, token)

	// The peer exchange is made after the state store it serves, and the
	// store hands it every write: the hook reads it once it is set, before
	// anything is written.
	var exchange *peershare.Exchange
	var written func(localstate.Record)
	if peers {
		written = func(r localstate.Record) { exchange.PushState(r) }
	}
	st, err := localstate.Open(statePath(cfg), localstate.Options{Logger: log.With("component", "state"), Written: written})
	if err != nil {
		return nil, err
	}
	c.closes = append(c.closes, st.Close)
	// In peer mode each node keeps the silences in a file and hands the
	// ones its operators set to its peers; in redis mode they live in
	// Redis (below).
	var fileSilences *silence.Store
	if c.mode != config.ModeRedis {
		var sopts silence.Options
		if c.mode == config.ModePeer {
			sopts.Changed = func(sils []silence.Silence) { exchange.PushSilences(sils) }
		}
		if fileSilences, err = silence.Open(filepath.Join(cfg.DataDir, "silences.json"), sopts); err != nil {
			return nil, errors.Join(err, c.close())
		}
		c.silences = fileSilences
	}
	dopts := alerting.DispatcherOptions{Dir: filepath.Join(cfg.DataDir, "notify")}
	if peers {
		var shared peershare.SilenceStore
		if c.mode == config.ModePeer {
			shared = fileSilences
		}
		exchange = newPeerExchange(cfg, token, st, shared, reg, log)
		c.peerAPI = exchange.Handler()
		c.run = append(c.run, exchange.Run)
		// The peers hold what the queues hold, so a decider that dies with
		// a notification undelivered leaves it to the next one.
		dopts.Replica = exchange
	}
	var local evaluator.Sender
	if c.mode != config.ModeRedis || peers {
		d, err := alerting.OpenDispatcher(rs.queues, log.With("component", "notify"), dopts)
		if err != nil {
			return nil, errors.Join(err, c.close())
		}
		c.dispatcher = d
		c.closes = append(c.closes, d.Close)
		local = router{d, rs.routes}
	}
	fixed := func(int64) (evaluator.Sender, func(), error) { return local, func() {}, nil }
	var ps peerState
	if peers {
		ps = peerState{Store: st, x: exchange, queues: c.dispatcher, log: log.With("component", "state")}
		if c.mode == config.ModePeer {
			ps.silences = fileSilences
			c.run = append(c.run, func(ctx context.Context) error { ps.catchUp(ctx); return nil })
		}
	}

	switch c.mode {
	case config.ModeLocal:
		c.lease, c.state, c.termSender = lock.Local{}, st, fixed
	case config.ModePeer:
		c.share = peerShare{exchange}
		c.state = ps
		c.termSender = fixed
		pl := newPeerLease(cfg, exchange, log)
		c.lease = pl
		c.closes = append(c.closes, pl.Close)
		log.Info("peer mode: deciding with the nodes of nodes.txt, no Redis", "nodes", cfg.Nodes,
			"decider", "the live node whose name sorts first")
	case config.ModeRedis:
		cl, err := openCluster(cfg, log)
		if err != nil {
			return nil, errors.Join(err, c.close())
		}
		c.closes = append(c.closes, cl.close)
		c.silences = redissilence.New(cl.client, redissilence.Options{Logger: log.With("component", "silences")})
		c.lease, c.share = cl.lease, cl.share
		mirror := mirrorState{primary: cl.state, local: st, log: log.With("component", "state")}
		c.state = mirror
		c.termSender = cl.termSender(rs, log)
		c.run = append(c.run, func(ctx context.Context) error {
			mirrorFollower(ctx, cl, st, cfg.Redis.LeaseTTL, log.With("component", "state"))
			return nil
		})
		if !degradable(cfg, token) {
			break
		}
		// Degraded mode: the peers stay in touch over the control port
		// all along, so when Redis goes away they decide among
		// themselves, from alert state every node already holds.
		pl := newPeerLease(cfg, exchange, log)
		fl := failover.New(failover.Options{
			Primary: cl.lease, Fallback: pl, After: cfg.Redis.LeaseTTL,
			Healthy: func(ctx context.Context) error { return cl.client.Ping(ctx).Err() },
			Logger:  log.With("component", "failover"),
		})
		c.failover = fl
		c.lease = fl
		c.share = dualShare{redis: cl.share, peers: peerShare{exchange}}
		c.state = failoverState{lease: fl, redis: mirror, peers: ps}
		redisTerms := c.termSender
		c.termSender = func(epoch int64) (evaluator.Sender, func(), error) {
			if fl.Fallback() {
				return local, func() {}, nil
			}
			return redisTerms(epoch)
		}
		c.closes = append(c.closes, pl.Close)
		c.run = append(c.run, fl.Run)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "dmonitor_degraded", Help: "1 while Redis is unreachable and the nodes decide among themselves (peer mode).",
		}, func() float64 {
			if d, _ := fl.Degraded(); d {
				return 1
			}
			return 0
		}))
		log.Info("redis mode, degraded to peer mode while redis is unreachable", "nodes", cfg.Nodes, "after", cfg.Redis.LeaseTTL)
	default:
		return nil, errors.Join(fmt.Errorf("coordination mode %q is not known", c.mode), c.close())
	}
	return c, nil
}

// newPeerLease is the election among the nodes of nodes.txt, over what
// the peer exchange has heard.
func newPeerLease(cfg *config.Config, x *peershare.Exchange, log *slog.Logger) *peerlease.Lease {
	return peerlease.New(peerlease.Options{
		Self: cfg.Observer, Nodes: cfg.Nodes, SilentAfter: evaluator.SilentAfter(cfg),
		Heard: func() map[string]time.Time {
			obs, _ := x.Observers(context.Background())
			m := make(map[string]time.Time, len(obs))
			for _, o := range obs {
				m[o.Name] = o.LastSeen
			}
			return m
		},
		Logger: log.With("component", "lease"),
	})
}

// newPeerExchange builds the peer exchange of cfg's node: every other
// entry of nodes.txt is a peer at its control address.
func newPeerExchange(cfg *config.Config, token string, st *localstate.Store, sils peershare.SilenceStore, reg prometheus.Registerer, log *slog.Logger) *peershare.Exchange {
	var peers []peershare.Peer
	for _, n := range cfg.Nodes {
		if n != cfg.Observer {
			peers = append(peers, peershare.Peer{Name: n, URL: "http://" + config.PeerAddr(n)})
		}
	}
	plog := log.With("component", "peers")
	return peershare.New(peershare.Options{
		Self: cfg.Observer, Peers: peers, Token: token,
		Known: func(host, chk string) bool { _, ok := cfg.Target(host, chk); return ok },
		State: st, Silences: sils,
		OnState: func(ctx context.Context, recs []localstate.Record) {
			if _, err := st.Merge(ctx, recs); err != nil {
				plog.Error("keep the decider's alert state", "records", len(recs), "err", err)
			}
		},
		Logger: plog, Registerer: reg,
	})
}

// peerShare gives the evaluator the peers in its own terms.
type peerShare struct{ *peershare.Exchange }

func (s peerShare) Observers(ctx context.Context) ([]evaluator.ObserverSeen, error) {
	obs, err := s.Exchange.Observers(ctx)
	out := make([]evaluator.ObserverSeen, len(obs))
	for i, o := range obs {
		out[i] = evaluator.ObserverSeen{Name: o.Name, LastSeen: o.LastSeen}
	}
	return out, err
}

// peerState is the alert state in peer mode: this node's copy, which the
// decider's writes reach on every peer. A node that starts deciding first
// takes in the copies of the peers that answer, newest record first, so it
// resumes where the last decider stopped even if it was down meanwhile.
type peerState struct {
	*localstate.Store
	x *peershare.Exchange
	// queues take the notifications the last decider left undelivered.
	queues *alerting.Dispatcher
	// silences take the peers' silences; nil when they are not shared
	// through the peers (degraded mode keeps them in Redis).
	silences *silence.Store
	log      *slog.Logger
}

// TakeOver fetches the peers' copies, merges them into this node's and
// takes the local store over; the notifications the peers hold for a
// decider that did not report them done are queued here, under their own
// ids (a receiver drops one it has). A peer that does not answer within a
// few seconds is skipped: it may be the decider that died.
func (p peerState) TakeOver(ctx context.Context, epoch int64) error {
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	f := p.x.FetchState(fctx)
	cancel()
	applied, err := p.Store.Merge(ctx, f.Records)
	if err != nil {
		return fmt.Errorf("merge the peers' alert state: %w", err)
	}
	p.takeSilences(f.Silences)
	for _, q := range f.Queued {
		if err := p.queues.Send(q.Receiver, q.Notification); err != nil {
			p.log.Error("queue a notification the last decider left undelivered", "receiver", q.Receiver,
				"id", q.Notification.ID, "err", err)
		}
	}
	p.log.Info("took in the peers' alert state", "peers_answering", f.Answered, "records", len(f.Records),
		"newer", len(applied), "notifications_taken_over", len(f.Queued))
	return p.Store.TakeOver(ctx, epoch)
}

// takeSilences merges the peers' silences into this node's.
func (p peerState) takeSilences(sils []silence.Silence) {
	if p.silences == nil || len(sils) == 0 {
		return
	}
	if _, err := p.silences.Merge(sils); err != nil {
		p.log.Error("take the peers' silences", "err", err)
	}
}

// catchUp takes in, once, what the peers hold of the alert state and the
// silences, so that a node that was down shows and applies them before it
// ever decides. It asks every few seconds until one peer answers, or ctx
// is done.
func (p peerState) catchUp(ctx context.Context) {
	for {
		fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		f := p.x.FetchState(fctx)
		cancel()
		if f.Answered > 0 {
			if _, err := p.Store.Merge(ctx, f.Records); err != nil {
				p.log.Warn("take in the peers' alert state", "err", err)
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

var _ evaluator.StateStore = peerState{}

// mirrorState is the alert state in redis mode: Redis is the truth while
// it has it, and every write also goes to this node's own copy, which
// fills Redis again when it comes back empty (restarted without
// persistence, or flushed), so an incident already paged is neither paged
// again under a new id nor left without its resolved notification.
type mirrorState struct {
	primary evaluator.StateStore
	local   *localstate.Store
	log     *slog.Logger
}

// TakeOver fences Redis for epoch and reconciles: an instance this node's
// copy holds and Redis lacks, or holds older (by evaluation time), is
// written back to Redis.
func (m mirrorState) TakeOver(ctx context.Context, epoch int64) error {
	if err := m.primary.TakeOver(ctx, epoch); err != nil {
		return err
	}
	if err := m.local.TakeOver(ctx, epoch); err != nil {
		return err
	}
	remote, err := m.primary.LoadAll(ctx)
	if err != nil {
		return err
	}
	mine, err := m.local.Records(ctx)
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
				if err := m.primary.Delete(ctx, epoch, rec.Key); err != nil {
					return fmt.Errorf("restore alert state to redis: %w", err)
				}
				dropped++
			}
		case !inRedis || r.LastEval.Before(rec.Instance.LastEval):
			if err := m.primary.Save(ctx, epoch, rec.Key, rec.Instance); err != nil {
				return fmt.Errorf("restore alert state to redis: %w", err)
			}
			restored++
		}
	}
	if restored+dropped > 0 {
		m.log.Warn("redis lacked alert state this node kept; restored it from the local copy",
			"instances", restored, "resolved", dropped)
	}
	return nil
}

func (m mirrorState) LoadAll(ctx context.Context) (map[string]alerting.Instance, error) {
	return m.primary.LoadAll(ctx)
}

// Save writes Redis first: a write it refuses (a newer leader) must not
// land in the local copy either.
func (m mirrorState) Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error {
	if err := m.primary.Save(ctx, epoch, key, inst); err != nil {
		return err
	}
	if err := m.local.Save(ctx, epoch, key, inst); err != nil {
		m.log.Warn("keep alert state on this node", "key", key, "err", err)
	}
	return nil
}

func (m mirrorState) Delete(ctx context.Context, epoch int64, key string) error {
	if err := m.primary.Delete(ctx, epoch, key); err != nil {
		return err
	}
	if err := m.local.Delete(ctx, epoch, key); err != nil {
		m.log.Warn("keep alert state on this node", "key", key, "err", err)
	}
	return nil
}

var _ evaluator.StateStore = mirrorState{}

// mirrorFollower keeps this node's copy of the alert state in step with
// Redis while another node leads, every lease TTL, so that whichever node
// leads after Redis comes back empty still knows what was paged. It copies
// only while Redis holds a leader's fence: an empty Redis is a lost state,
// not a cluster without incidents.
func mirrorFollower(ctx context.Context, cl *cluster, st *localstate.Store, every time.Duration, log *slog.Logger) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if cl.lease.Leading() {
			continue // the leader writes through mirrorState
		}
		qctx, cancel := context.WithTimeout(ctx, every)
		remote, fenced, err := cl.state.Snapshot(qctx)
		cancel()
		if err != nil || !fenced {
			continue
		}
		recs, err := st.Records(ctx)
		if err != nil {
			log.Warn("read the local alert state", "err", err)
			continue
		}
		now := time.Now().UTC()
		var merge []localstate.Record
		for key, inst := range remote {
			merge = append(merge, localstate.Record{Key: key, Instance: inst, Updated: inst.LastEval})
		}
		for _, r := range recs {
			if _, ok := remote[r.Key]; !ok && !r.Deleted {
				merge = append(merge, localstate.Record{Key: r.Key, Deleted: true, Updated: now})
			}
		}
		if _, err := st.Merge(ctx, merge); err != nil {
			log.Warn("copy the leader's alert state", "err", err)
		}
	}
}

// degradable reports whether cfg's redis mode can fall back to peer mode
// while Redis is down: the nodes of nodes.txt are addressable peers that
// share a token and a control port.
func degradable(cfg *config.Config, token string) bool {
	return cfg.Mode() == config.ModeRedis && len(cfg.Nodes) >= 2 && token != "" && cfg.Control.Listen != ""
}

// failoverState is the alert state in degraded-capable redis mode: each
// term keeps it where its lease was won, Redis (mirrored on every node) or
// the peers' copies.
type failoverState struct {
	lease *failover.Lease
	redis mirrorState
	peers peerState
}

func (f failoverState) current() evaluator.StateStore {
	if f.lease.Fallback() {
		return f.peers
	}
	return f.redis
}

func (f failoverState) TakeOver(ctx context.Context, epoch int64) error {
	return f.current().TakeOver(ctx, epoch)
}

// LoadAll reads the current side; a follower asks for status, and while
// degraded only the local copy answers.
func (f failoverState) LoadAll(ctx context.Context) (map[string]alerting.Instance, error) {
	if d, _ := f.lease.Degraded(); d {
		return f.peers.LoadAll(ctx)
	}
	return f.current().LoadAll(ctx)
}

func (f failoverState) Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error {
	return f.current().Save(ctx, epoch, key, inst)
}

func (f failoverState) Delete(ctx context.Context, epoch int64, key string) error {
	return f.current().Delete(ctx, epoch, key)
}

// dualShare shares through Redis and with the peers at once, so that
// nothing changes for the checks when Redis goes away: a result arrives
// twice while both work, and the newer-wins table keeps one.
type dualShare struct {
	redis shareAdapter
	peers peerShare
}

func (d dualShare) Publish(ctx context.Context, r check.Result) error {
	_ = d.peers.Publish(ctx, r)
	_ = d.redis.Publish(ctx, r) // unreachable Redis is the failover lease's to report
	return nil
}

func (d dualShare) Subscribe(ctx context.Context, fn func(check.Result)) error {
	var mu sync.Mutex
	one := func(r check.Result) { mu.Lock(); defer mu.Unlock(); fn(r) }
	errc := make(chan error, 1)
	go func() { errc <- d.redis.Subscribe(ctx, one) }()
	err := d.peers.Subscribe(ctx, one)
	return errors.Join(err, <-errc)
}

func (d dualShare) Heartbeat(ctx context.Context, at time.Time) error {
	_ = d.peers.Heartbeat(ctx, at)
	_ = d.redis.Heartbeat(ctx, at)
	return nil
}

// Observers merges both views, the later heartbeat winning, so an observer
// heard by either is alive.
func (d dualShare) Observers(ctx context.Context) ([]evaluator.ObserverSeen, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	fromRedis, _ := d.redis.Observers(rctx)
	cancel()
	fromPeers, err := d.peers.Observers(ctx)
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

func (d dualShare) RequestConfirm(ctx context.Context, host, chk string, ttl time.Duration) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	viaRedis, rerr := d.redis.RequestConfirm(rctx, host, chk, ttl)
	cancel()
	if rerr == nil {
		// Redis takes the round cluster-wide; the peers hear it too, so a
		// node cut off from Redis still confirms.
		if viaRedis {
			_, _ = d.peers.RequestConfirm(ctx, host, chk, ttl)
		}
		return viaRedis, nil
	}
	return d.peers.RequestConfirm(ctx, host, chk, ttl)
}

func (d dualShare) Confirmations(ctx context.Context, fn func(host, check, from string)) error {
	errc := make(chan error, 1)
	go func() { errc <- d.redis.Confirmations(ctx, fn) }()
	err := d.peers.Confirmations(ctx, fn)
	return errors.Join(err, <-errc)
}

var _ evaluator.Share = dualShare{}
