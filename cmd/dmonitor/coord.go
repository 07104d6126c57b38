package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/coord"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/internal/httpserve"
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
	// fallback is where a node that does not lead says that nobody does
	// (leader.NoLeaderRule); nil where some node always leads.
	fallback evaluator.Sender
	// run is what runs beside the evaluator: the peer senders, the
	// failover probe, catching up with the peers, mirroring Redis.
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
	metrics := alerting.NewMetrics(reg)
	dopts := rs.options(alerting.DispatcherOptions{Dir: filepath.Join(cfg.DataDir, "notify"), Metrics: metrics})
	if peers {
		var shared peershare.SilenceStore
		if c.mode == config.ModePeer {
			shared = fileSilences
		}
		if exchange, err = newPeerExchange(cfg, token, st, shared, reg, log); err != nil {
			return nil, errors.Join(err, c.close())
		}
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
	var ps coord.PeerState
	if peers {
		ps = coord.PeerState{Store: st, Exchange: exchange, Queues: c.dispatcher, Log: log.With("component", "state")}
		if c.mode == config.ModePeer {
			ps.Silences = fileSilences
			c.run = append(c.run, func(ctx context.Context) error { ps.CatchUp(ctx); return nil })
		}
	}

	switch c.mode {
	case config.ModeLocal:
		c.lease, c.state, c.termSender = lock.Local{}, st, fixed
	case config.ModePeer:
		c.share = coord.PeerShare{Exchange: exchange}
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
		mirror := coord.MirrorState{Primary: cl.state, Local: st, Log: log.With("component", "state")}
		c.state = mirror
		c.termSender = cl.termSender(rs, metrics, log)
		c.run = append(c.run, func(ctx context.Context) error {
			coord.MirrorFollower(ctx, cl.lease, cl.state, st, cfg.Redis.LeaseTTL, log.With("component", "state"))
			return nil
		})
		if !degradable(cfg, token) {
			// No queues on this node's disk: those of the terms live
			// in Redis. Saying that no node leads must not need Redis.
			d := alerting.NewDispatcher(rs.queues, log.With("component", "notify", "queues", "fallback"),
				rs.options(alerting.DispatcherOptions{Metrics: metrics}))
			c.fallback = router{d, rs.routes}
			c.run = append(c.run, d.Run)
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
		c.share = coord.DualShare{Redis: cl.share, Peers: coord.PeerShare{Exchange: exchange}, Degraded: fl.Degraded}
		c.state = coord.FailoverState{Lease: fl, Redis: mirror, Peers: ps}
		redisTerms := c.termSender
		c.fallback = local
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
func newPeerExchange(cfg *config.Config, token string, st *localstate.Store, sils peershare.SilenceStore, reg prometheus.Registerer, log *slog.Logger) (*peershare.Exchange, error) {
	scheme := "http"
	var tc *tls.Config
	if cfg.Control.TLSCertFile != "" {
		scheme = "https"
		var err error
		if tc, err = httpserve.ClientTLS(cfg.Control.TLSCAFile); err != nil {
			return nil, fmt.Errorf("control.tls_ca_file: %w", err)
		}
	}
	var peers []peershare.Peer
	for _, n := range cfg.Nodes {
		if n != cfg.Observer {
			peers = append(peers, peershare.Peer{Name: n, URL: scheme + "://" + config.PeerAddr(n)})
		}
	}
	plog := log.With("component", "peers")
	return peershare.New(peershare.Options{
		Self: cfg.Observer, Peers: peers, Token: token, TLS: tc,
		Known: func(host, chk string) bool {
			_, ok := cfg.Target(host, chk)
			return ok || observer.IsSelfCheck(chk) && slices.Contains(cfg.Nodes, host)
		},
		State: st, Silences: sils,
		OnState: func(ctx context.Context, recs []localstate.Record) {
			if _, err := st.Merge(ctx, recs); err != nil {
				plog.Error("keep the decider's alert state", "records", len(recs), "err", err)
			}
		},
		Logger: plog, Registerer: reg,
	}), nil
}

// degradable reports whether cfg's redis mode can fall back to peer mode
// while Redis is down: the nodes of nodes.txt are addressable peers that
// share a token and a control port.
func degradable(cfg *config.Config, token string) bool {
	return cfg.Mode() == config.ModeRedis && len(cfg.Nodes) >= 2 && token != "" && cfg.Control.Listen != ""
}
