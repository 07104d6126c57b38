// Package evaluator is the dmonitor daemon of one node, put together from
// its two sides: the observer side (evaluator/observer) schedules every
// configured check, runs its plugin and records the result; the leader side
// (evaluator/leader), while this node holds the lease, decides alerts from
// the latest results of every observer and hands their notifications to the
// receivers. How the node coordinates with the others (the lease, the
// sharing of results, the alert state, the notification queues) is given to
// it, one implementation per mode; see docs/ARCHITECTURE.md.
package evaluator

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/lock"
	"github.com/dmonitor/dmonitor/rules"
)

// The consumer interfaces of the two sides, under the names the daemon's
// wiring uses.
type (
	Runner     = observer.Runner
	Appender   = observer.Appender
	Annotator  = observer.Annotator
	Lease      = leader.Lease
	Sender     = leader.Sender
	StateStore = leader.StateStore
	TermSender = leader.TermSender
	Silences   = leader.Silences
	// ObserverSeen is an observer and its last heartbeat.
	ObserverSeen = leader.ObserverSeen
	// Status is a snapshot of the node for the control API.
	Status = leader.Status
)

// Share is how the observers see each other: every result and heartbeat is
// published, every node receives the others', and the leader asks who was
// heard from when.
type Share interface {
	observer.Share
	leader.Observers
}

// Store is the TSDB as the evaluator uses it: results and alert history go
// in, and the rules' query functions read from it. Alert state is never
// read back from it: anyone who can write to the TSDB could change it.
type Store interface {
	Appender
	rules.Querier
}

// The metric names of the TSDB contract.
const (
	MetricCheckStatus   = observer.MetricCheckStatus
	MetricCheckDuration = observer.MetricCheckDuration
	MetricCheckPerf     = observer.MetricCheckPerf
	MetricAlertState    = observer.MetricAlertState
	MetricObserverUp    = observer.MetricObserverUp
)

// Options are what an Evaluator is built from. Config, Runner and Store are
// required.
type Options struct {
	Config *config.Config
	Runner Runner
	Store  Store
	// Lease, Share, State and TermSender are how this node coordinates
	// with the others: one implementation of each per coordination mode
	// (local, redis, peer; see docs/ARCHITECTURE.md). Lease defaults to
	// lock.Local: a single node is its own leader.
	Lease Lease
	// Rules are the rules of rules.d; nil gives every check the default
	// rule.
	Rules *rules.Set
	// RepeatInterval re-notifies a firing alert that nobody acknowledged;
	// 0 never repeats.
	RepeatInterval time.Duration
	// Silences, when set, hold back the alerts an operator silenced.
	Silences Silences
	// Share connects this observer to the others; nil for a node on its
	// own.
	Share Share
	// State keeps the alert state for the next term, on this node after a
	// restart or on the next leader; nil keeps it in memory only.
	State StateStore
	// TermSender opens each leader term's notification queues; nil hands
	// every term's notifications to Sender.
	TermSender TermSender
	// Annotator, when set, gets every alert transition as a global
	// annotation, so Grafana and the OpenTSDB UI can overlay them.
	Annotator Annotator
	// Mode names the coordination mode, for status.
	Mode string
	// Degraded, when set, reports whether Redis has been unreachable long
	// enough for the nodes to decide among themselves, and since when.
	Degraded func() (bool, time.Time)
	// Sender receives notifications when TermSender is nil; nil only logs
	// them.
	Sender Sender
	// Receivers are the receiver names Sender knows; a rule's notification
	// for any other receiver is logged and not sent.
	Receivers []string
	Logger    *slog.Logger
	// Registerer takes the evaluator's Prometheus metrics; nil skips them.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ShutdownGrace is how long running checks may go on after shutdown
	// starts before their plugins are killed. Default 5s.
	ShutdownGrace time.Duration
	// EvalInterval is the period of the full evaluation that catches
	// results going stale. Default 5s.
	EvalInterval time.Duration
	// FlushTimeout bounds how long shutdown waits, after the checks have
	// stopped, for the store to take the points queued for it; what is
	// left is dropped and counted. Default DefaultFlushTimeout.
	FlushTimeout time.Duration
	// MaxQueuedPoints bounds the points queued for the store; see
	// observer.WriterOptions.
	MaxQueuedPoints int
	// SelfChecks report this node's own health; see observer.SelfCheck.
	SelfChecks []observer.SelfCheck
	// Fallback and NoLeaderAfter: see leader.Options.
	Fallback      Sender
	NoLeaderAfter time.Duration
}

// Evaluator is the daemon of one node. Build it with New and run it with Run.
type Evaluator struct {
	writer       *observer.Writer
	observer     *observer.Observer
	leader       *leader.Leader
	log          *slog.Logger
	flushTimeout time.Duration
}

// DefaultFlushTimeout is how long shutdown waits for the store to take
// what is queued for it.
const DefaultFlushTimeout = 10 * time.Second

// New returns an Evaluator for o.
func New(o Options) *Evaluator {
	if o.Lease == nil {
		o.Lease = lock.Local{}
	}
	if o.Share == nil {
		o.Share = alone{}
	}
	if o.State == nil {
		o.State = leader.NewMemState()
	}
	if o.TermSender == nil {
		o.TermSender = func(int64) (Sender, func(), error) { return o.Sender, func() {}, nil }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	e := &Evaluator{log: o.Logger, flushTimeout: o.FlushTimeout}
	e.writer = observer.NewWriter(o.Store, o.Annotator, observer.WriterOptions{
		MaxQueuedPoints: o.MaxQueuedPoints, Logger: o.Logger, Registerer: o.Registerer})
	e.observer = observer.New(observer.Options{
		Config: o.Config, Runner: o.Runner, Writer: e.writer, Share: o.Share,
		// The leader is built next, and before Run anything calls this.
		Changed: func(host, chk string) { e.leader.Changed(host, chk) },
		Logger:  o.Logger, Registerer: o.Registerer, Now: o.Now, ShutdownGrace: o.ShutdownGrace,
		SelfChecks: o.SelfChecks,
	})
	e.leader = leader.New(leader.Options{
		Config: o.Config, Rules: o.Rules, RepeatInterval: o.RepeatInterval, Silences: o.Silences,
		Lease: o.Lease, State: o.State, TermSender: o.TermSender, Observers: o.Share, Results: e.observer,
		History: e.writer, Querier: o.Store, Receivers: o.Receivers, Mode: o.Mode, Degraded: o.Degraded,
		Logger: o.Logger, Registerer: o.Registerer, Now: o.Now, EvalInterval: o.EvalInterval,
		Fallback: o.Fallback, NoLeaderAfter: o.NoLeaderAfter,
	})
	return e
}

// Run runs every check on its schedule, and leads while it holds the lease,
// until ctx is done. Then it stops scheduling, lets running plugins finish
// for the shutdown grace and kills the rest, stops leading, writes every
// result it has, and returns.
func (e *Evaluator) Run(ctx context.Context) error {
	// Build the whole schedule before anything runs, so a refusal leaves
	// nothing to stop.
	if err := e.observer.Schedule(); err != nil {
		return err
	}
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); e.writer.Run() }()
	leadCtx, stopLeading := context.WithCancel(ctx)
	leadDone := make(chan struct{})
	go func() { defer close(leadDone); e.leader.Run(leadCtx) }()

	err := e.observer.Run(ctx)
	// The leader stops after the checks, so their last results are
	// decided on, and before the writer, so its last transitions are
	// written.
	stopLeading()
	<-leadDone
	e.observer.Drain()
	flushCtx, cancel := context.WithTimeout(context.Background(), e.flushTimeout)
	e.writer.Close(flushCtx)
	cancel()
	<-writerDone
	if err != nil {
		return err
	}
	e.log.Info("evaluator stopped")
	return nil
}

// SetRules replaces the rules, as a reload does; see leader.Leader.SetRules.
func (e *Evaluator) SetRules(set *rules.Set) { e.leader.SetRules(set) }

// Acknowledge records that by is on the firing alert of rule on host's
// check; see leader.Leader.Acknowledge for its errors.
func (e *Evaluator) Acknowledge(rule, host, chk, by, comment string) error {
	return e.leader.Acknowledge(rule, host, chk, by, comment)
}

// Acks returns the acknowledgements of the open incidents; see
// leader.Leader.Acks.
func (e *Evaluator) Acks(ctx context.Context) ([]control.Ack, error) { return e.leader.Acks(ctx) }

// Status returns a snapshot of this node: who it is, whether it leads, and
// every rule instance with the latest result of each observer.
func (e *Evaluator) Status() Status { return e.leader.Status() }

// SilentAfter is how long an observer of cfg may go unheard before it is
// silent: three heartbeats missed.
func SilentAfter(cfg *config.Config) time.Duration { return observer.SilentAfter(cfg) }

// ReplayOptions, ReplayResult: see leader.Replay.
type (
	ReplayOptions = leader.ReplayOptions
	ReplayResult  = leader.ReplayResult
)

// Replay evaluates the rules over the TSDB's history with the engine the
// daemon runs; see leader.Replay.
func Replay(ctx context.Context, cfg *config.Config, set *rules.Set, q rules.Querier, opt ReplayOptions) (*ReplayResult, error) {
	return leader.Replay(ctx, cfg, set, q, opt)
}

// alone is the Share of a node on its own: nothing to tell, nobody to hear
// from but itself.
type alone struct{}

func (alone) Publish(context.Context, check.Result) error { return nil }

// PublishAll spares the observer a call, and a context, per result.
func (alone) PublishAll(context.Context, []check.Result) error { return nil }

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

func (alone) Heartbeat(context.Context, time.Time) error { return nil }

func (alone) Observers(context.Context) ([]ObserverSeen, error) { return nil, nil }
