package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/redisstate"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/lock/redislease"
	"github.com/dmonitor/dmonitor/share/redisshare"
)

// cluster is what a node of a cluster shares through Redis: the lease, the
// results, the alert state and the notification queues.
type cluster struct {
	client redis.UniversalClient
	lease  *redislease.Lease
	share  shareAdapter
	state  *redisstate.Store
}

// openCluster connects to cfg's Redis. It does not wait for Redis to
// answer: a node whose Redis is down still runs its checks and writes its
// results, and leads once Redis answers and the lease is its.
func openCluster(cfg *config.Config, log *slog.Logger) (*cluster, error) {
	// go-redis logs its reconnects to stderr on its own; ours say it once
	// per change, so its lines go to debug.
	redis.SetLogger(redisLogger{log.With("component", "redis")})
	client, err := redislease.NewClient(cfg.Redis.URL)
	if err != nil {
		return nil, err
	}
	return &cluster{
		client: client,
		lease: redislease.New(client, redislease.Options{TTL: cfg.Redis.LeaseTTL, Owner: cfg.Observer,
			Logger: log.With("component", "lease")}),
		share: shareAdapter{redisshare.New(client, redisshare.Options{Observer: cfg.Observer,
			Logger: log.With("component", "share")})},
		state: redisstate.New(client, redisstate.Options{}),
	}, nil
}

func (c *cluster) close() error {
	return errors.Join(c.lease.Close(), c.client.Close())
}

// termSender opens each leader term's notification queues in Redis,
// fenced by the term's epoch, and runs them until the term ends.
func (c *cluster) termSender(rs receivers, metrics *alerting.Metrics, log *slog.Logger) evaluator.TermSender {
	return func(epoch int64) (evaluator.Sender, func(), error) {
		ctx, cancel := context.WithCancel(context.Background())
		d, err := c.state.OpenDispatcher(ctx, epoch, rs.queues, log.With("component", "notify", "epoch", epoch),
			rs.options(alerting.DispatcherOptions{Metrics: metrics}))
		if err != nil {
			cancel()
			return nil, nil, fmt.Errorf("notification queues of term %d: %w", epoch, err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("notification queues stopped", "epoch", epoch, "err", err)
			}
		}()
		stop := func() {
			cancel()
			<-done
			if err := d.Close(); err != nil {
				log.Warn("close notification queues", "epoch", epoch, "err", err)
			}
		}
		return router{d, rs.routes}, stop, nil
	}
}

// shareAdapter gives the evaluator the observers in its own terms.
type shareAdapter struct{ *redisshare.Exchange }

func (s shareAdapter) Observers(ctx context.Context) ([]evaluator.ObserverSeen, error) {
	obs, err := s.Exchange.Observers(ctx)
	out := make([]evaluator.ObserverSeen, len(obs))
	for i, o := range obs {
		out[i] = evaluator.ObserverSeen{Name: o.Name, LastSeen: o.LastSeen}
	}
	return out, err
}

var (
	_ evaluator.Share      = shareAdapter{}
	_ evaluator.StateStore = (*redisstate.Store)(nil)
	_ evaluator.Lease      = (*redislease.Lease)(nil)
)

// redisLogger hands go-redis's log lines to slog at debug level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
