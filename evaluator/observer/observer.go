// Package observer is the observer side of a dmonitor node: it schedules
// every configured check, runs its plugin, records the result (the TSDB,
// the latest-result table, the other observers) and runs the checks the
// others ask it to confirm. It decides nothing: the leader side
// (evaluator/leader) reads the table it keeps.
package observer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/tsdb"
)

// Runner runs one plugin and returns its parsed result.
type Runner interface {
	Run(ctx context.Context, cmd plugin.Command) check.Result
}

// Share is how this observer reaches the others: its results and
// heartbeats go out; theirs, and their requests to confirm a failure now,
// come in.
type Share interface {
	// Publish makes r every observer's to see.
	Publish(ctx context.Context, r check.Result) error
	// Subscribe delivers every published result, the current state first,
	// until ctx is done; it reconnects on its own.
	Subscribe(ctx context.Context, fn func(check.Result)) error
	// Heartbeat says this observer is alive at at.
	Heartbeat(ctx context.Context, at time.Time) error
	// RequestConfirm asks the other observers to run host's check now; it
	// reports whether a round started (false: one is already under way for
	// that check within ttl).
	RequestConfirm(ctx context.Context, host, check string, ttl time.Duration) (bool, error)
	// Confirmations delivers the other observers' requests until ctx is done.
	Confirmations(ctx context.Context, fn func(host, check, from string)) error
}

// Options are what an Observer is built from. Config, Runner, Writer and
// Share are required.
type Options struct {
	Config *config.Config
	Runner Runner
	// Writer takes the results' datapoints; its owner runs and closes it.
	Writer *Writer
	Share  Share
	// Changed is told of every target whose results changed, this
	// observer's or another's: the leader's cue to look at it again.
	Changed func(host, check string)
	Logger  *slog.Logger
	// Registerer takes the observer's metrics; nil skips them.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ShutdownGrace is how long running checks may go on after shutdown
	// starts before their plugins are killed. Default 5s.
	ShutdownGrace time.Duration
	// SelfChecks report this node's own health, run with every heartbeat;
	// see SelfTSDB and the others.
	SelfChecks []SelfCheck
}

// Observer is the observer side of one node. Build it with New, then
// Schedule, then Run.
type Observer struct {
	cfg     *config.Config
	runner  Runner
	writer  *Writer
	share   Share
	changed func(host, check string)
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	grace   time.Duration

	live      *live
	series    *seriesLimit
	self      []SelfCheck
	late      lateness
	jobs      map[instanceKey]*job
	scheduler gocron.Scheduler
	shareDown atomic.Bool // the other observers cannot be reached; logged once

	// out is what waits to be published, the newest per target; one
	// goroutine sends it, so no check waits on the share.
	outMu   sync.Mutex
	out     map[instanceKey]outgoing
	outWake chan struct{}
	// outSpare is the last batch the publishing goroutine sent, emptied,
	// to take the queue's place at its next batch: a new map each time
	// grew anew with every result queued, a third of a kilobyte each.
	// The publishing goroutine's own.
	outSpare map[instanceKey]outgoing

	// checkCtx is the plugins' context: shutdown cancels it after the
	// grace, not at once. Set by Schedule.
	checkCtx   context.Context
	killChecks context.CancelFunc
	rechecks   sync.WaitGroup // re-checks and confirmations in flight
}

// New returns the Observer of o.
func New(o Options) *Observer {
	ob := &Observer{
		cfg: o.Config, runner: o.Runner, writer: o.Writer, share: o.Share, changed: o.Changed,
		log: o.Logger, now: o.Now, grace: o.ShutdownGrace, self: o.SelfChecks,
		live: newLive(), jobs: make(map[instanceKey]*job, len(o.Config.Targets)),
		out: make(map[instanceKey]outgoing), outWake: make(chan struct{}, 1),
	}
	// The observer's own self check: only it sees runs skipped.
	ob.self = append(slices.Clip(ob.self), ob.late.check(ob.cfg.Workers, ob.cfg.ProbeWorkers))
	if ob.changed == nil {
		ob.changed = func(string, string) {}
	}
	if ob.log == nil {
		ob.log = slog.New(slog.DiscardHandler)
	}
	if ob.now == nil {
		ob.now = time.Now
	}
	if ob.grace <= 0 {
		ob.grace = 5 * time.Second
	}
	ob.metrics = newMetrics(o.Registerer)
	ob.series = newSeriesLimit(o.Config.Limits.SeriesPerCheck, ob.metrics.limitHits, ob.log)
	return ob
}

// Schedule builds the whole schedule, running nothing yet, so a refusal
// leaves nothing to stop.
func (ob *Observer) Schedule() error {
	ob.checkCtx, ob.killChecks = context.WithCancel(context.Background())
	s, err := gocron.NewScheduler(
		gocron.WithLogger(gocronLogger{ob.log}),
		// Long enough for the grace, the kill and the plugins' exit.
		gocron.WithStopTimeout(ob.grace+30*time.Second),
	)
	if err != nil {
		return fmt.Errorf("create scheduler: %w", err)
	}
	if err := ob.schedule(ob.checkCtx, s, ob.now()); err != nil {
		_ = s.Shutdown()
		return err
	}
	ob.scheduler = s
	return nil
}

// Run runs every check on its schedule, beats the heart, takes in the
// other observers' results and runs the checks they ask to confirm, until
// ctx is done. Then it stops scheduling, lets running plugins finish for
// the shutdown grace and kills the rest, and returns once every scheduled
// run has recorded its result. Schedule must have been called; Drain must
// follow.
func (ob *Observer) Run(ctx context.Context) error {
	listenCtx, stopListening := context.WithCancel(ctx)
	var listeners sync.WaitGroup
	listeners.Go(func() { ob.listen(listenCtx) })
	listeners.Go(func() { ob.publishLoop(listenCtx) })

	ob.scheduler.Start()
	ob.log.Info("evaluator started", "observer", ob.cfg.Observer, "checks", len(ob.cfg.Targets), "workers", ob.cfg.Workers)
	heartbeat := time.NewTicker(HeartbeatInterval(ob.cfg))
	defer heartbeat.Stop()
	ob.beat(ctx)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-heartbeat.C:
			ob.beat(ctx)
		}
	}

	ob.log.Info("stopping: waiting for running checks", "grace", ob.grace)
	kill := time.AfterFunc(ob.grace, ob.killChecks)
	err := ob.scheduler.Shutdown() // returns once every running job has returned
	kill.Stop()
	stopListening()
	listeners.Wait()
	if err != nil {
		return fmt.Errorf("stop scheduler: %w", err)
	}
	return nil
}

// Drain waits for the re-checks still running, for the shutdown grace,
// and kills the rest. Call it after Run has returned and once nothing
// calls Recheck any more (the leader has stopped).
func (ob *Observer) Drain() {
	kill := time.AfterFunc(ob.grace, ob.killChecks)
	ob.rechecks.Wait()
	kill.Stop()
	ob.killChecks()
}

// HeartbeatInterval is how often an observer of cfg says it is alive: its
// default check interval, at most 10s.
func HeartbeatInterval(cfg *config.Config) time.Duration { return min(cfg.Interval, 10*time.Second) }

// SilentAfter is how long an observer of cfg may go unheard before it is
// silent: three heartbeats missed.
func SilentAfter(cfg *config.Config) time.Duration { return 3 * HeartbeatInterval(cfg) }

// beat records this observer's heartbeat in the TSDB and tells the others.
func (ob *Observer) beat(ctx context.Context) {
	now := ob.now()
	ob.writer.Write([]tsdb.Point{heartbeatPoint(ob.cfg.Observer, now)})
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ob.share.Heartbeat(hctx, now); err != nil {
		ob.shareErr("heartbeat", err)
	}
	ob.runSelfChecks(hctx)
}

// record takes in one result: it is written to the TSDB and becomes the
// observer's latest view of its target, which the leader looks at again.
// A status other than this observer's previous one for the target is
// logged at info, as is a first result that is not OK; the rest at debug.
func (ob *Observer) record(r check.Result) {
	ob.metrics.checkDone(r.Status)
	ob.writer.Write(ob.series.admit(r.Host, r.Check, ResultPoints(make([]tsdb.Point, 0, 2+len(r.Perf)), &r)))
	isNew, prev, hadPrev := ob.live.put(r)
	switch {
	case isNew && hadPrev && prev != r.Status:
		ob.log.Info("check state changed", "host", r.Host, "check", r.Check, "from", prev, "to", r.Status, "output", r.Output)
	case isNew && !hadPrev && r.Status != check.OK:
		// Nothing to change from after a start, but a check failing from
		// the first run on is what someone reading the log looks for.
		ob.log.Info("check state changed", "host", r.Host, "check", r.Check, "from", "none", "to", r.Status, "output", r.Output)
	default:
		ob.log.Debug("check result", "host", r.Host, "check", r.Check, "status", r.Status, "output", r.Output)
	}
	ob.changed(r.Host, r.Check)
	ob.queuePublish(r, hadPrev && !prev.Failing())
}

// AppendLatest appends the latest result of each observer for host's
// check to rs, sorted by observer name, and each one's earlier statuses,
// newest first, to hs, reusing the status slices hs holds past its length:
// the leader passes the same buffers for every instance of a pass, and
// keeps none of what an earlier call gave. Nil buffers are fine.
func (ob *Observer) AppendLatest(rs []check.Result, hs [][]check.Status, host, chk string) ([]check.Result, [][]check.Status) {
	return ob.live.appendLatest(rs, hs, instanceKey{host, chk})
}

// Observed returns how many observers' results AppendLatest would append for
// host's check.
func (ob *Observer) Observed(host, chk string) int {
	return ob.live.count(instanceKey{host, chk})
}

// Recheck runs host's check now, here and on the other observers, so that
// a decision waiting on it need not wait for its next interval. It reports
// whether this observer runs that check.
func (ob *Observer) Recheck(host, chk string) bool {
	j, ok := ob.jobs[instanceKey{host, chk}]
	if !ok {
		return false
	}
	ob.rechecks.Go(func() { ob.runJob(ob.checkCtx, j) })
	ob.queueConfirm(host, chk)
	return true
}

// confirmTTL is how long one confirmation round of a check holds off the
// next: the spacing of the observers' staggered runs (interval/N), at
// least a second. Longer would make an outage that starts soon after the
// previous one wait for the next scheduled run instead of being confirmed
// at once; shorter would let every observer start a round.
func (ob *Observer) confirmTTL(chk string) time.Duration {
	iv := ob.cfg.Interval
	if c, ok := ob.cfg.Checks[chk]; ok {
		iv = c.Interval
	}
	return max(iv/time.Duration(max(len(ob.cfg.Nodes), 1)), time.Second)
}

// shareErr logs a failure to reach the other observers once per change
// from working to failing, not once per result.
func (ob *Observer) shareErr(what string, err error) {
	if ob.shareDown.CompareAndSwap(false, true) {
		ob.log.Error("cannot reach the other observers; results stay local until it recovers", "op", what, "err", err)
	}
}

// listen takes in the other observers' results and runs the checks they
// ask this one to confirm, until ctx is done.
func (ob *Observer) listen(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		err := ob.share.Subscribe(ctx, func(r check.Result) {
			if r.Observer == ob.cfg.Observer {
				return // recorded when it ran
			}
			ob.shareDown.Store(false)
			if isNew, _, _ := ob.live.put(r); isNew {
				ob.changed(r.Host, r.Check)
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			ob.log.Error("results subscription ended", "err", err)
		}
	})
	wg.Go(func() {
		err := ob.share.Confirmations(ctx, func(host, chk, from string) {
			j, ok := ob.jobs[instanceKey{host, chk}]
			if !ok {
				return
			}
			ob.log.Info("confirming for another observer", "host", host, "check", chk, "from", from)
			ob.rechecks.Go(func() { ob.runJob(ob.checkCtx, j) })
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			ob.log.Error("confirmation subscription ended", "err", err)
		}
	})
	wg.Wait()
}

// gocronLogger adapts slog to gocron's logger, one level down: gocron's
// info is our debug.
type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug(msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug(msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn(msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error(msg, args...) }
