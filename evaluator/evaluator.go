// Package evaluator is the dmonitor daemon: it schedules every configured
// check, runs its plugin, writes each result to the TSDB and, while this node
// holds the leader lease, decides alerts from the latest results of every
// observer and hands their notifications to the receivers.
package evaluator

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/lock"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/tsdb"
)

// Runner runs one plugin and returns its parsed result.
type Runner interface {
	Run(ctx context.Context, cmd plugin.Command) check.Result
}

// Store is the TSDB as the evaluator uses it: results and alert history go
// in, and the rules' query functions read from it. Alert state is never
// read back from it: anyone who can write to the TSDB could change it.
type Store interface {
	Appender
	rules.Querier
}

// Lease is the leader lease.
type Lease interface {
	// Acquire blocks until this node leads or ctx is done.
	Acquire(ctx context.Context) (lock.Term, error)
	// Release gives the lease up, so a successor takes over at once.
	Release(ctx context.Context) error
}

// Sender queues a notification for a named receiver.
type Sender interface {
	Send(receiver string, n alerting.Notification) error
}

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
	// enough for the nodes to decide among themselves, and since when; the
	// leader raises the alert redis-unreachable while it does.
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
}

// Evaluator is the daemon of one node. Build it with New and run it with Run.
type Evaluator struct {
	cfg       *config.Config
	runner    Runner
	store     Store
	lease     Lease
	receivers map[string]bool
	log       *slog.Logger
	metrics   *metrics
	now       func() time.Time
	grace     time.Duration
	evalEvery time.Duration
	started   time.Time // when Run started; before 2 intervals, no result is not yet unknown

	writer *writer
	live   *live

	share      Share
	state      StateStore
	termSender TermSender
	mode       string
	degraded   func() (bool, time.Time)
	shareDown  atomic.Bool // the other observers cannot be reached; logged once

	// dirty holds the instances whose inputs changed since the leader last
	// looked; wake tells the leader there is something in it.
	dirtyMu sync.Mutex
	dirty   map[instanceKey]struct{}
	wake    chan struct{}

	// jobs are the scheduled targets, for re-checks; filled by schedule
	// before leading starts.
	jobs     map[instanceKey]*job
	checkCtx context.Context
	rechecks sync.WaitGroup // re-checks in flight

	mu    sync.Mutex // guards the engine, its data, epoch and termSend
	epoch int64      // the leader term's epoch; 0 while not leading
	// termStart is when this term began.
	termStart time.Time
	engine    *engine
	data      *rules.Data // the last tick's TSDB data
	// termSend is the current term's Sender when TermSender is set.
	termSend Sender
}

// New returns an Evaluator for o.
func New(o Options) *Evaluator {
	e := &Evaluator{
		cfg: o.Config, runner: o.Runner, store: o.Store, lease: o.Lease,
		share: o.Share, state: o.State, termSender: o.TermSender, mode: o.Mode, degraded: o.Degraded,
		receivers: make(map[string]bool, len(o.Receivers)),
		log:       o.Logger, now: o.Now, grace: o.ShutdownGrace, evalEvery: o.EvalInterval,
		live:   newLive(),
		dirty:  make(map[instanceKey]struct{}),
		wake:   make(chan struct{}, 1),
		engine: newEngine(o.Config, o.Rules, o.RepeatInterval, o.Silences),
		jobs:   make(map[instanceKey]*job, len(o.Config.Targets)),
	}
	for _, r := range o.Receivers {
		e.receivers[r] = true
	}
	if e.lease == nil {
		e.lease = lock.Local{}
	}
	if e.share == nil {
		e.share = alone{o.Config.Observer}
	}
	if e.state == nil {
		e.state = newMemState()
	}
	if e.degraded == nil {
		e.degraded = func() (bool, time.Time) { return false, time.Time{} }
	}
	if e.termSender == nil {
		e.termSender = func(int64) (Sender, func(), error) { return o.Sender, func() {}, nil }
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.grace <= 0 {
		e.grace = 5 * time.Second
	}
	if e.evalEvery <= 0 {
		e.evalEvery = 5 * time.Second
	}
	e.metrics = newMetrics(o.Registerer)
	e.writer = newWriter(o.Store, o.Annotator, e.log, e.metrics)
	return e
}

// Run runs every check on its schedule, and leads while it holds the lease,
// until ctx is done. Then it stops scheduling, lets running plugins finish
// for the shutdown grace and kills the rest, writes every result it has, and
// returns.
func (e *Evaluator) Run(ctx context.Context) error {
	// The plugins get their own context: ctx ending starts the shutdown
	// grace, not the killing.
	checkCtx, killChecks := context.WithCancel(context.WithoutCancel(ctx))
	defer killChecks()
	e.started = e.now()
	e.checkCtx = checkCtx

	// Build the whole schedule before anything runs, so a refusal leaves
	// nothing to stop.
	s, err := gocron.NewScheduler(
		gocron.WithLogger(gocronLogger{e.log}),
		// Long enough for the grace, the kill and the plugins' exit.
		gocron.WithStopTimeout(e.grace+30*time.Second),
	)
	if err != nil {
		return fmt.Errorf("create scheduler: %w", err)
	}
	if err := e.schedule(checkCtx, s, e.now()); err != nil {
		_ = s.Shutdown()
		return err
	}

	writerDone := make(chan struct{})
	go func() { defer close(writerDone); e.writer.run() }()
	// Lead, and listen to the other observers, once the jobs are known:
	// re-checks and confirmations run them.
	leadCtx, stopLeading := context.WithCancel(ctx)
	leadDone := make(chan struct{})
	go func() { defer close(leadDone); e.leadership(leadCtx) }()
	clusterDone := make(chan struct{})
	go func() {
		defer close(clusterDone)
		e.cluster(leadCtx, checkCtx)
	}()
	stopBackground := func() {
		stopLeading()
		<-leadDone
		<-clusterDone
		e.rechecks.Wait()
		close(e.writer.in)
		<-writerDone
	}
	s.Start()
	e.log.Info("evaluator started", "observer", e.cfg.Observer, "checks", len(e.cfg.Targets), "workers", e.cfg.Workers)

	heartbeat := time.NewTicker(e.heartbeatEvery())
	defer heartbeat.Stop()
	e.beat(ctx)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-heartbeat.C:
			e.beat(ctx)
		}
	}

	e.log.Info("stopping: waiting for running checks", "grace", e.grace)
	kill := time.AfterFunc(e.grace, killChecks)
	err = s.Shutdown() // returns once every running job has returned
	kill.Stop()
	stopBackground()
	if err != nil {
		return fmt.Errorf("stop scheduler: %w", err)
	}
	e.log.Info("evaluator stopped")
	return nil
}

// beat records this observer's heartbeat in the TSDB and, in a cluster,
// tells the others.
func (e *Evaluator) beat(ctx context.Context) {
	now := e.now()
	e.writer.write([]tsdb.Point{heartbeatPoint(e.cfg.Observer, now)})
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.share.Heartbeat(hctx, now); err != nil {
		e.shareErr("heartbeat", err)
	}
}

// record takes in one result: it is written to the TSDB and becomes the
// observer's latest view of its instance, which the leader re-evaluates at
// once.
func (e *Evaluator) record(ctx context.Context, r check.Result) {
	e.metrics.checkDone(r.Status)
	e.writer.write(resultPoints(make([]tsdb.Point, 0, 2+len(r.Perf)), &r))
	_, prev, hadPrev := e.live.put(r)
	e.markDirty(instanceKey{r.Host, r.Check})
	e.publish(ctx, r, hadPrev && !prev.Failing())
}

// leadership acquires the lease and leads for as long as the term lasts,
// again and again, until ctx is done. Leader-only work runs under a context
// that ends with the term, and leadership is only given up once that work
// has stopped.
func (e *Evaluator) leadership(ctx context.Context) {
	for {
		term, err := e.lease.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.log.Error("acquire leader lease", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		e.log.Info("leading", "epoch", term.Epoch)
		stopSender, retired, err := e.beginTerm(ctx, term.Epoch)
		if err != nil {
			// Without its state or its queues this node must not decide:
			// give the lease up for another node to try.
			e.log.Error("cannot take over as leader; releasing the lease", "epoch", term.Epoch, "err", err)
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = e.lease.Release(rctx)
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		e.setEpoch(term.Epoch)
		for _, d := range retired {
			e.transition(d)
		}
		termCtx, endTerm := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); e.lead(termCtx) }()
		select {
		case <-term.Lost:
			e.log.Warn("leader lease lost", "epoch", term.Epoch)
		case <-ctx.Done():
		}
		endTerm()
		<-done
		e.setEpoch(0)
		stopSender()
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := e.lease.Release(rctx); err != nil {
				e.log.Warn("release leader lease", "err", err)
			}
			cancel()
			return
		}
	}
}

func (e *Evaluator) setEpoch(epoch int64) {
	e.mu.Lock()
	e.epoch = epoch
	e.mu.Unlock()
	e.metrics.leader.Set(float64(min(epoch, 1)))
}

// beginTerm sets a new term up: it fences the previous leader out, takes
// over the alert state it left (in Redis, on this node's disk, from the
// peers), and opens the term's notification queues. Stored instances that
// the configuration no longer evaluates come back as retired, for the
// caller to resolve once the term's epoch is in force. The returned func
// ends the queues.
func (e *Evaluator) beginTerm(ctx context.Context, epoch int64) (stop func(), retired []decision, err error) {
	if err := e.state.TakeOver(ctx, epoch); err != nil {
		return nil, nil, fmt.Errorf("take over alert state: %w", err)
	}
	stored, err := e.state.LoadAll(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("load alert state: %w", err)
	}
	s, stopSend, err := e.termSender(epoch)
	if err != nil {
		return nil, nil, fmt.Errorf("open notification queues: %w", err)
	}
	now := e.now()
	e.mu.Lock()
	clear(e.engine.instances)
	for _, inst := range stored {
		ik := instKey{inst.Rule, inst.Labels[alerting.LabelHost], inst.Labels[alerting.LabelCheck]}
		if why := e.engine.orphaned(ik); why != "" {
			if d, ok := e.engine.retire(now, inst, why, e.engine.ruleNamed(ik.rule)); ok {
				retired = append(retired, d)
			}
			continue
		}
		e.engine.instances[ik] = inst
	}
	e.termSend = s
	e.termStart = now
	e.mu.Unlock()
	e.log.Info("took over the alert state", "epoch", epoch, "instances", len(stored)-len(retired), "retired", len(retired))
	stop = func() {
		e.mu.Lock()
		e.termSend = nil
		e.mu.Unlock()
		stopSend()
	}
	return stop, retired, nil
}

// lead is the leader's evaluation loop: an instance is evaluated as soon as
// a result changes its inputs, and every instance each EvalInterval, with
// fresh TSDB data for the rules' query functions; that pass is also what
// notices results going stale.
func (e *Evaluator) lead(ctx context.Context) {
	e.tick(ctx)
	tick := time.NewTicker(e.evalEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e.tick(ctx)
		case <-e.wake:
			e.dirtyMu.Lock()
			dirty := slices.Collect(maps.Keys(e.dirty))
			clear(e.dirty)
			e.dirtyMu.Unlock()
			e.mu.Lock()
			data := e.data
			e.mu.Unlock()
			e.evaluate(e.now(), dirty, data)
		}
	}
}

// tick fetches the TSDB data every rule reads, one query per metric and
// window, and evaluates every target.
func (e *Evaluator) tick(ctx context.Context) {
	now := e.now()
	var data *rules.Data
	e.mu.Lock()
	set := e.engine.set
	e.mu.Unlock()
	if set != nil && len(set.Queries()) > 0 {
		qctx, cancel := context.WithTimeout(ctx, e.evalEvery)
		data = set.Prefetch(qctx, e.store, now)
		cancel()
	}
	e.mu.Lock()
	e.data = data
	e.mu.Unlock()
	targets := make([]instanceKey, len(e.cfg.Targets))
	for i, t := range e.cfg.Targets {
		targets[i] = instanceKey{t.Host, t.Check.Name}
	}
	e.evaluate(now, targets, data)
	e.evaluateObservers(ctx, now)
	if e.cfg.Redis.URL != "" {
		degraded, since := e.degraded()
		e.mu.Lock()
		decisions := e.engine.evaluateRedis(now, degraded, since)
		e.mu.Unlock()
		for _, d := range decisions {
			e.transition(d)
		}
	}
}

// heartbeatEvery is how often an observer says it is alive.
func (e *Evaluator) heartbeatEvery() time.Duration { return HeartbeatInterval(e.cfg) }

// HeartbeatInterval is how often an observer of cfg says it is alive: its
// default check interval, at most 10s.
func HeartbeatInterval(cfg *config.Config) time.Duration { return min(cfg.Interval, 10*time.Second) }

// SilentAfter is how long an observer of cfg may go unheard before it is
// silent: three heartbeats missed.
func SilentAfter(cfg *config.Config) time.Duration { return 3 * HeartbeatInterval(cfg) }

// evaluateObservers alerts on the nodes of nodes.txt that went silent:
// three heartbeats missed. Their results go stale on their own and then
// count neither as failing nor as passing.
func (e *Evaluator) evaluateObservers(ctx context.Context, now time.Time) {
	if len(e.cfg.Nodes) == 0 {
		return
	}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	obs, err := e.share.Observers(octx)
	cancel()
	if err != nil {
		return // Redis is down: that is not the observers' silence
	}
	seen := make(map[string]time.Time, len(obs))
	for _, o := range obs {
		seen[o.Name] = o.LastSeen
	}
	e.mu.Lock()
	decisions := e.engine.evaluateObservers(now, seen, SilentAfter(e.cfg), e.termStart)
	e.mu.Unlock()
	for _, d := range decisions {
		e.transition(d)
	}
}

// evaluate decides the instances of targets at now and acts on what
// changed.
func (e *Evaluator) evaluate(now time.Time, targets []instanceKey, data *rules.Data) {
	// Before the first results are due, a target without any is not
	// unknown, just not evaluated yet.
	var due []instanceKey
	for _, k := range targets {
		if c, ok := e.cfg.Checks[k.check]; ok {
			if rs, _ := e.live.latest(k); len(rs) > 0 || now.Sub(e.started) >= 2*c.Interval {
				due = append(due, k)
			}
		}
	}
	if len(due) == 0 {
		return
	}
	e.mu.Lock()
	decisions, rechecks := e.engine.evaluate(now, due, inputs{results: e.live.latest, data: data})
	e.mu.Unlock()
	for _, d := range decisions {
		e.transition(d)
	}
	for _, rc := range rechecks {
		e.recheck(rc)
	}
}

// recheck runs a child's parent checks now, so its decision waits on fresh
// parent results rather than on their next interval.
func (e *Evaluator) recheck(rc recheck) {
	for _, t := range rc.targets {
		j, ok := e.jobs[t]
		if !ok {
			continue
		}
		e.log.Info("re-checking parent before deciding", "rule", rc.child.rule, "host", rc.child.host,
			"check", rc.child.check, "parent_check", t.check)
		e.rechecks.Go(func() { e.runJob(e.checkCtx, j) })
		ctx, cancel := context.WithTimeout(e.checkCtx, 5*time.Second)
		if _, err := e.share.RequestConfirm(ctx, t.host, t.check, e.confirmTTL(t.check)); err != nil {
			e.shareErr("request re-check", err)
		}
		cancel()
	}
}

// transition records a decision in the TSDB and notifies its receivers.
func (e *Evaluator) transition(d decision) {
	inst, tr := d.inst, d.tr
	if tr.From != tr.To {
		e.metrics.transitions.Inc()
		e.log.Info("alert state changed", "rule", inst.Rule, "host", inst.Labels[alerting.LabelHost],
			"check", inst.Labels[alerting.LabelCheck], "from", tr.From, "to", tr.To, "reason", tr.Reason)
		tags := map[string]string{"rule": tsdb.SanitizeTag(inst.Rule),
			"host": tsdb.SanitizeTag(inst.Labels[alerting.LabelHost]), "check": tsdb.SanitizeTag(inst.Labels[alerting.LabelCheck])}
		e.writer.write([]tsdb.Point{{Metric: MetricAlertState, Tags: tags, Time: tr.At, Value: float64(tr.To)}})
		custom := maps.Clone(inst.Labels)
		custom["rule"], custom["from"], custom["to"] = inst.Rule, tr.From.String(), tr.To.String()
		e.writer.annotate(tsdb.Annotation{
			Start: tr.At,
			Description: fmt.Sprintf("%s on %s (%s): %s → %s", inst.Rule, inst.Labels[alerting.LabelHost],
				inst.Labels[alerting.LabelCheck], tr.From, tr.To),
			Notes:  inst.Annotations[alerting.AnnotationSummary],
			Custom: custom,
		})
	}
	// Queue first, then store: a crash in between sends the notification
	// again from the next leader (same id, which a receiver can drop)
	// instead of leaving a stored firing state whose firing was never sent.
	defer e.persist(d)
	n := tr.Notification
	if n == nil {
		return
	}
	e.mu.Lock()
	sender := e.termSend
	e.mu.Unlock()
	for _, r := range receiversOf(d.rule) {
		if sender == nil || !e.receivers[r] {
			e.log.Warn("no receiver configured, notification not sent", "receiver", r, "id", n.ID, "status", n.Status,
				"summary", n.Annotations[alerting.AnnotationSummary])
			continue
		}
		if err := sender.Send(r, *n); err != nil {
			e.log.Error("queue notification", "receiver", r, "id", n.ID, "err", err)
		}
	}
}

// SetRules replaces the rules, as a reload does. Instances that the new
// rules still evaluate keep their state, so a reload neither re-notifies a
// firing alert nor forgets its recovery. Those they no longer evaluate (a
// rule removed, a check now selected by another rule) are retired: an open
// incident is resolved, once, saying why, and never left without its
// resolved notification.
func (e *Evaluator) SetRules(set *rules.Set) {
	now := e.now()
	e.mu.Lock()
	old := e.engine
	e.engine = newEngine(e.cfg, set, old.repeatInterval, old.silences)
	var retired []decision
	for ik, inst := range old.instances {
		if why := e.engine.orphaned(ik); why != "" {
			if d, ok := e.engine.retire(now, inst, why, old.ruleNamed(ik.rule)); ok {
				retired = append(retired, d)
			}
			continue
		}
		e.engine.instances[ik] = inst
	}
	leading := e.epoch > 0
	e.mu.Unlock()
	if !leading {
		// A follower's instances are the leader's business; it takes them
		// over, and retires what it must, when it leads.
		return
	}
	for _, d := range retired {
		e.transition(d)
	}
}

// Acknowledge records that by is on the firing alert of rule on host's
// check: it reads acknowledged and is not repeated until it resolves.
// Errors: control.ErrNotLeader on a node that does not lead (acks are
// leader state), control.ErrNotFiring when the instance is not firing,
// control.ErrUnknownInstance when rule does not apply to that check.
func (e *Evaluator) Acknowledge(rule, host, chk, by, comment string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.epoch == 0 {
		return fmt.Errorf("acknowledge %s on %s (%s): %w", rule, host, chk, control.ErrNotLeader)
	}
	ik := instKey{rule, host, chk}
	if inst, ok := e.engine.instances[ik]; ok {
		acked, ok := inst.Acknowledge(by, comment, e.now())
		if !ok {
			return fmt.Errorf("acknowledge %s on %s (%s): it is %s: %w", rule, host, chk, inst.State, control.ErrNotFiring)
		}
		e.engine.instances[ik] = acked
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.state.Save(ctx, e.epoch, stateKey(ik), acked); err != nil {
			return fmt.Errorf("acknowledge %s on %s (%s): store: %w", rule, host, chk, err)
		}
		e.log.Info("alert acknowledged", "rule", rule, "host", host, "check", chk, "by", by, "comment", comment)
		return nil
	}
	for _, r := range e.engine.rulesFor(instanceKey{host, chk}) {
		if r.Name == rule && e.cfg.Checks[chk] != nil {
			return fmt.Errorf("acknowledge %s on %s (%s): it is ok: %w", rule, host, chk, control.ErrNotFiring)
		}
	}
	return fmt.Errorf("acknowledge %s on %s (%s): %w", rule, host, chk, control.ErrUnknownInstance)
}

// persist stores the instance of d for the next leader, after its
// notification is queued; a refusal means this node no longer leads.
func (e *Evaluator) persist(d decision) {
	e.mu.Lock()
	epoch := e.epoch
	e.mu.Unlock()
	key := stateKey(instKey{d.inst.Rule, d.inst.Labels[alerting.LabelHost], d.inst.Labels[alerting.LabelCheck]})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if d.inst.State == alerting.OK && d.inst.FiredAt.IsZero() && d.inst.ActiveAt.IsZero() {
		err = e.state.Delete(ctx, epoch, key)
	} else {
		err = e.state.Save(ctx, epoch, key, d.inst)
	}
	if err != nil {
		e.log.Error("store alert state", "rule", d.inst.Rule, "host", d.inst.Labels[alerting.LabelHost], "epoch", epoch, "err", err)
	}
}

// InstanceStatus is one rule instance in Status.
type InstanceStatus struct {
	Rule      string           `json:"rule"`
	Host      string           `json:"host"`
	Check     string           `json:"check"`
	State     alerting.State   `json:"state"`
	Since     time.Time        `json:"since,omitzero"`
	Reason    string           `json:"reason,omitempty"`
	Observers []ObserverResult `json:"observers"`
}

// ObserverResult is one observer's latest result in Status.
type ObserverResult struct {
	Observer string       `json:"observer"`
	Status   check.Status `json:"status"`
	Raw      string       `json:"raw"`
	Output   string       `json:"output"`
	At       time.Time    `json:"at"`
}

// ObserverStatus is one observer of the cluster in Status.
type ObserverStatus struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_heartbeat,omitzero"`
	Leader   bool      `json:"leader"`
}

// Status is a snapshot of the node for the control API.
type Status struct {
	Observer string `json:"observer"`
	// Mode is the coordination mode: local, redis or peer; Degraded is
	// true while a redis-mode cluster decides among its peers.
	Mode     string `json:"mode,omitempty"`
	Degraded bool   `json:"degraded,omitempty"`
	Leader   bool   `json:"leader"`
	Epoch    int64  `json:"epoch,omitempty"`
	// LeaderName and LeaderEpoch say who leads the cluster, as the lease
	// says; Observers lists nodes.txt and every observer heard from.
	LeaderName  string           `json:"leader_name,omitempty"`
	LeaderEpoch int64            `json:"leader_epoch,omitempty"`
	Observers   []ObserverStatus `json:"observers,omitempty"`
	Checks      int              `json:"checks"`
	Instances   []InstanceStatus `json:"instances"`
}

// Status returns a snapshot of this node: who it is, whether it leads, and
// every rule instance with the latest result of each observer.
func (e *Evaluator) Status() Status {
	type row struct {
		rule string
		k    instanceKey
		inst alerting.Instance
		ok   bool
	}
	e.mu.Lock()
	st := Status{Observer: e.cfg.Observer, Mode: e.mode, Leader: e.epoch > 0, Epoch: e.epoch, Checks: len(e.cfg.Targets)}
	e.mu.Unlock()
	st.Degraded, _ = e.degraded()
	// A follower shows the leader's decisions, as its state store holds
	// them, not its own idle engine: all observers seeing a check fail
	// while a follower's page says ok would send the operator astray.
	var stored map[string]alerting.Instance
	if !st.Leader {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		stored, _ = e.state.LoadAll(ctx)
		cancel()
	}
	var rows []row
	e.mu.Lock()
	for _, t := range e.cfg.Targets {
		k := instanceKey{t.Host, t.Check.Name}
		for _, r := range e.engine.rulesFor(k) {
			ik := instKey{r.Name, k.host, k.check}
			inst, ok := e.engine.instances[ik]
			if !st.Leader {
				inst, ok = stored[stateKey(ik)]
			}
			rows = append(rows, row{r.Name, k, inst, ok})
		}
	}
	e.mu.Unlock()
	e.clusterStatus(&st)
	for _, r := range rows {
		latest, _ := e.live.latest(r.k)
		is := InstanceStatus{Rule: r.rule, Host: r.k.host, Check: r.k.check, State: alerting.OK}
		if r.ok {
			is.State, is.Reason, is.Since = r.inst.State, r.inst.Reason, r.inst.ActiveAt
		} else if len(latest) == 0 {
			is.State, is.Reason = alerting.Unknown, "no result yet"
		}
		for _, res := range latest {
			is.Observers = append(is.Observers, ObserverResult{Observer: res.Observer, Status: res.Status, Raw: res.Raw, Output: res.Output, At: res.Start})
		}
		st.Instances = append(st.Instances, is)
	}
	return st
}

// leaderReporter is a lease that can say who holds it.
type leaderReporter interface {
	Leader(ctx context.Context) (owner string, epoch int64, ttl time.Duration, err error)
}

// clusterStatus fills in who leads and when each observer was last heard.
func (e *Evaluator) clusterStatus(st *Status) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if lr, ok := e.lease.(leaderReporter); ok {
		if owner, epoch, _, err := lr.Leader(ctx); err == nil {
			st.LeaderName, st.LeaderEpoch = owner, epoch
		}
	} else if st.Leader {
		st.LeaderName, st.LeaderEpoch = e.cfg.Observer, st.Epoch
	}
	seen := make(map[string]time.Time)
	if obs, err := e.share.Observers(ctx); err == nil {
		for _, o := range obs {
			seen[o.Name] = o.LastSeen
		}
	}
	names := append(slices.Clone(e.cfg.Nodes), slices.Collect(maps.Keys(seen))...)
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		st.Observers = append(st.Observers, ObserverStatus{Name: n, LastSeen: seen[n], Leader: n == st.LeaderName})
	}
}

// gocronLogger adapts slog to gocron's logger, one level down: gocron's
// info is our debug.
type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug(msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug(msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn(msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error(msg, args...) }
