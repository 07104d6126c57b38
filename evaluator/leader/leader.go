// Package leader is the leader side of a dmonitor node: while this node
// holds the lease, it takes over the alert state, evaluates every rule
// instance from the observers' latest results (the clock-free engine of
// engine.go, which `dmonitor rules test` also drives), moves each through
// the pure state machine of alerting, persists it, and hands the
// notifications to the term's queues. See docs/ARCHITECTURE.md.
package leader

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/lock"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/tsdb"
)

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

// StateStore keeps the leader's alert state where the next term finds it.
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
// of that term, fenced by its epoch where the mode allows it, so a deposed
// leader sends nothing its successor also sends. stop ends them and waits
// for them to stop.
type TermSender func(epoch int64) (s Sender, stop func(), err error)

// ObserverSeen is an observer and its last heartbeat.
type ObserverSeen struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_seen"`
}

// Observers says when each observer was last heard from.
type Observers interface {
	Observers(ctx context.Context) ([]ObserverSeen, error)
}

// Results are the observers' latest results, as the observer side keeps
// them.
type Results interface {
	// AppendLatest appends the latest result of each observer for host's
	// check to rs, and each one's earlier statuses to hs, whose slices past
	// its length it may reuse.
	AppendLatest(rs []check.Result, hs [][]check.Status, host, check string) ([]check.Result, [][]check.Status)
	// Observed returns how many observers' results AppendLatest would
	// append, without copying them.
	Observed(host, check string) int
	// Recheck runs host's check now on every observer; false when this
	// node does not run it.
	Recheck(host, check string) bool
}

// History is where alert transitions are written: dmonitor.alert.state
// points and annotations, for graphs, never read back.
type History interface {
	Write(points []tsdb.Point)
	Annotate(a tsdb.Annotation)
}

// Options are what a Leader is built from. Config, Lease, State,
// TermSender, Observers, Results, History and Querier are required.
type Options struct {
	Config *config.Config
	// Rules are the rules of rules.d; nil gives every check the default
	// rule.
	Rules *rules.Set
	// RepeatInterval re-notifies a firing alert that nobody acknowledged;
	// 0 never repeats.
	RepeatInterval time.Duration
	Silences       Silences
	Lease          Lease
	State          StateStore
	TermSender     TermSender
	Observers      Observers
	Results        Results
	History        History
	// Querier answers the rules' TSDB functions.
	Querier rules.Querier
	// Receivers are the receiver names the term's Sender knows; a rule's
	// notification for any other receiver is logged and not sent.
	Receivers []string
	// Mode names the coordination mode, for status.
	Mode string
	// Degraded, when set, reports whether Redis has been unreachable long
	// enough for the nodes to decide among themselves, and since when; the
	// leader raises the alert redis-unreachable while it does.
	Degraded   func() (bool, time.Time)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// EvalInterval is the period of the full evaluation that catches
	// results going stale. Default 5s.
	EvalInterval time.Duration
	// Fallback, when set, is where this node says, while it does not
	// lead, that no node has led for longer than NoLeaderAfter (see
	// NoLeaderRule): a sender of its own, which works without the lease.
	Fallback      Sender
	NoLeaderAfter time.Duration
}

// Leader is the leader side of one node. Build it with New and run it
// with Run.
type Leader struct {
	cfg        *config.Config
	targets    []instanceKey // every target of cfg, for each tick; read only
	due        []instanceKey // evaluate's scratch, the lead goroutine's own
	lease      Lease
	state      StateStore
	termSender TermSender
	observers  Observers
	results    Results
	history    History
	store      rules.Querier
	receivers  map[string]bool
	mode       string
	degraded   func() (bool, time.Time)
	log        *slog.Logger
	now        func() time.Time
	evalEvery  time.Duration
	started    time.Time // before 2 intervals after it, no result is not yet unknown
	fallback   Sender
	noLeader   time.Duration

	transitions prometheus.Counter
	leading     prometheus.Gauge

	// dirty holds the instances whose inputs changed since the leader last
	// looked; wake tells the leader there is something in it.
	dirtyMu sync.Mutex
	dirty   map[instanceKey]struct{}
	wake    chan struct{}

	mu     sync.Mutex // guards the engine, its data, epoch and termSend
	epoch  int64      // the leader term's epoch; 0 while not leading
	engine *engine
	data   *rules.Data // the last tick's TSDB data
	// termSend is the current term's Sender.
	termSend Sender
	// termStart is when this term began.
	termStart time.Time
}

// New returns the Leader of o.
func New(o Options) *Leader {
	l := &Leader{
		cfg: o.Config, lease: o.Lease, state: o.State, termSender: o.TermSender, observers: o.Observers,
		results: o.Results, history: o.History, store: o.Querier, mode: o.Mode, degraded: o.Degraded,
		receivers: make(map[string]bool, len(o.Receivers)),
		log:       o.Logger, now: o.Now, evalEvery: o.EvalInterval, fallback: o.Fallback, noLeader: o.NoLeaderAfter,
		dirty:  make(map[instanceKey]struct{}),
		wake:   make(chan struct{}, 1),
		engine: newEngine(o.Config, o.Rules, o.RepeatInterval, o.Silences),
		transitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_alert_transitions_total", Help: "Alert state transitions decided by this node as leader.",
		}),
		leading: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dmonitor_leader", Help: "1 while this node holds the leader lease.",
		}),
	}
	for _, r := range o.Receivers {
		l.receivers[r] = true
	}
	l.targets = make([]instanceKey, len(l.cfg.Targets))
	for i, t := range l.cfg.Targets {
		l.targets[i] = instanceKey{t.Host, t.Check.Name}
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.evalEvery <= 0 {
		l.evalEvery = 5 * time.Second
	}
	if l.degraded == nil {
		l.degraded = func() (bool, time.Time) { return false, time.Time{} }
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(l.transitions, l.leading)
	}
	return l
}

// Run leads whenever this node holds the lease, until ctx is done. The
// results it evaluates before two intervals have passed since Run began
// are not yet missing, just not in.
func (l *Leader) Run(ctx context.Context) {
	l.started = l.now()
	var wg sync.WaitGroup
	wg.Go(func() { l.watch(ctx, l.fallback, l.noLeader) })
	l.leadership(ctx)
	wg.Wait()
}

// Changed tells the leader that the results of host's check changed: it
// looks at its instances again at once.
func (l *Leader) Changed(host, chk string) {
	l.dirtyMu.Lock()
	l.dirty[instanceKey{host, chk}] = struct{}{}
	l.dirtyMu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// latest is the engine's view of the observers' results (see inputs).
func (l *Leader) latest(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status) {
	return l.results.AppendLatest(rs, hs, k.host, k.check)
}

// instanceKey names a target: one host×check, the inputs of its rule
// instances.
type instanceKey struct{ host, check string }

// stateKey is the key of an instance in the StateStore.
func stateKey(ik instKey) string { return ik.rule + "\x00" + ik.host + "\x00" + ik.check }

// leadership acquires the lease and leads for as long as the term lasts,
// again and again, until ctx is done. Leader-only work runs under a context
// that ends with the term, and leadership is only given up once that work
// has stopped.
func (l *Leader) leadership(ctx context.Context) {
	for {
		term, err := l.lease.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.log.Error("acquire leader lease", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		l.log.Info("leading", "epoch", term.Epoch)
		stopSender, outboxes, retired, err := l.beginTerm(ctx, term.Epoch)
		if err != nil {
			// Without its state or its queues this node must not decide:
			// give the lease up for another node to try.
			l.log.Error("cannot take over as leader; releasing the lease", "epoch", term.Epoch, "err", err)
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = l.lease.Release(rctx)
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		l.setEpoch(term.Epoch)
		for _, inst := range outboxes {
			l.flushOutbox(inst)
		}
		for _, d := range retired {
			l.transition(d)
		}
		termCtx, endTerm := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); l.lead(termCtx) }()
		select {
		case <-term.Lost:
			l.log.Warn("leader lease lost", "epoch", term.Epoch)
		case <-ctx.Done():
		}
		endTerm()
		<-done
		l.setEpoch(0)
		stopSender()
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := l.lease.Release(rctx); err != nil {
				l.log.Warn("release leader lease", "err", err)
			}
			cancel()
			return
		}
	}
}

func (l *Leader) setEpoch(epoch int64) {
	l.mu.Lock()
	l.epoch = epoch
	l.mu.Unlock()
	l.leading.Set(float64(min(epoch, 1)))
}

// beginTerm sets a new term up: it fences the previous leader out, takes
// over the alert state it left (in Redis, on this node's disk, from the
// peers), and opens the term's notification queues. Stored instances with
// a notification in their outbox come back as outboxes, and those that the
// configuration no longer evaluates as retired, for the caller to flush
// and resolve once the term's epoch is in force. The returned func ends
// the queues.
func (l *Leader) beginTerm(ctx context.Context, epoch int64) (stop func(), outboxes []alerting.Instance, retired []decision, err error) {
	if err := l.state.TakeOver(ctx, epoch); err != nil {
		return nil, nil, nil, fmt.Errorf("take over alert state: %w", err)
	}
	stored, err := l.state.LoadAll(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load alert state: %w", err)
	}
	s, stopSend, err := l.termSender(epoch)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open notification queues: %w", err)
	}
	now := l.now()
	l.mu.Lock()
	clear(l.engine.instances)
	clear(l.engine.holds) // a previous term's waits say nothing of this one's state
	clear(l.engine.waited)
	clear(l.engine.held)
	for _, inst := range stored {
		if inst.Outbox != nil {
			outboxes = append(outboxes, inst)
			inst.Outbox = nil
		}
		ik := instKey{inst.Rule, inst.Labels[alerting.LabelHost], inst.Labels[alerting.LabelCheck]}
		if why := l.engine.orphaned(ik); why != "" {
			if d, ok := l.engine.retire(now, inst, why, l.engine.ruleNamed(ik.rule)); ok {
				retired = append(retired, d)
			}
			continue
		}
		l.engine.instances[ik] = inst
	}
	l.termSend = s
	l.termStart = now
	l.mu.Unlock()
	l.log.Info("took over the alert state", "epoch", epoch, "instances", len(stored)-len(retired), "retired", len(retired),
		"outboxes", len(outboxes))
	stop = func() {
		l.mu.Lock()
		l.termSend = nil
		l.mu.Unlock()
		stopSend()
	}
	return stop, outboxes, retired, nil
}

// lead is the leader's evaluation loop: an instance is evaluated as soon as
// a result changes its inputs, and every instance each EvalInterval, with
// fresh TSDB data for the rules' query functions; that pass is also what
// notices results going stale.
func (l *Leader) lead(ctx context.Context) {
	l.tick(ctx)
	tick := time.NewTicker(l.evalEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			l.tick(ctx)
		case <-l.wake:
			l.dirtyMu.Lock()
			dirty := slices.Collect(maps.Keys(l.dirty))
			clear(l.dirty)
			l.dirtyMu.Unlock()
			l.mu.Lock()
			data := l.data
			l.mu.Unlock()
			l.evaluate(l.now(), dirty, data)
		}
	}
}

// tick fetches the TSDB data every rule reads, one query per metric and
// window, and evaluates every target.
func (l *Leader) tick(ctx context.Context) {
	now := l.now()
	var data *rules.Data
	l.mu.Lock()
	set := l.engine.set
	l.mu.Unlock()
	if set != nil && len(set.Queries()) > 0 {
		qctx, cancel := context.WithTimeout(ctx, l.evalEvery)
		data = set.Prefetch(qctx, l.store, now)
		cancel()
	}
	l.mu.Lock()
	l.data = data
	l.mu.Unlock()
	l.evaluate(now, l.targets, data)
	l.evaluateObservers(ctx, now)
	l.evaluateSelf(ctx, now)
	if l.cfg.Redis.URL != "" {
		degraded, since := l.degraded()
		l.mu.Lock()
		decisions := l.engine.evaluateRedis(now, degraded, since)
		l.mu.Unlock()
		for _, d := range decisions {
			l.transition(d)
		}
	}
}

// evaluateSelf alerts on what the nodes report of their own health, and on
// this term's receivers that keep failing.
func (l *Leader) evaluateSelf(ctx context.Context, now time.Time) {
	nodes := l.cfg.Nodes
	switch {
	case len(nodes) == 0 && l.cfg.Redis.URL != "":
		// Observers join through Redis: those heard from.
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		obs, _ := l.observers.Observers(octx)
		cancel()
		for _, o := range obs {
			nodes = append(nodes, o.Name)
		}
	case len(nodes) == 0:
		nodes = []string{l.cfg.Observer}
	}
	fresh := observer.SilentAfter(l.cfg)
	reports := make(map[string][]selfReport)
	var own check.Result
	for _, s := range nodeSelfRules {
		for _, node := range nodes {
			rs, _ := l.results.AppendLatest(nil, nil, node, s.check)
			for _, r := range rs {
				if r.Observer != node || now.Sub(r.Start) > fresh {
					continue
				}
				reports[s.check] = append(reports[s.check], selfReport{node: node, result: r})
				if s.check == observer.SelfConfig && node == l.cfg.Observer {
					own = r
				}
			}
		}
	}
	l.mu.Lock()
	sender := l.termSend
	l.mu.Unlock()
	var failing map[string]string
	if h, ok := sender.(ReceiverHealth); ok {
		failing = h.Failing(failingAttempts)
	}
	l.mu.Lock()
	decisions := l.engine.evaluateSelf(now, reports, own, failing)
	l.mu.Unlock()
	for _, d := range decisions {
		l.transition(d)
	}
}

// evaluateObservers alerts on the nodes of nodes.txt that went silent:
// three heartbeats missed. Their results go stale on their own and then
// count neither as failing nor as passing.
func (l *Leader) evaluateObservers(ctx context.Context, now time.Time) {
	if len(l.cfg.Nodes) == 0 {
		return
	}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	obs, err := l.observers.Observers(octx)
	cancel()
	if err != nil {
		return // Redis is down: that is not the observers' silence
	}
	seen := make(map[string]time.Time, len(obs))
	for _, o := range obs {
		seen[o.Name] = o.LastSeen
	}
	l.mu.Lock()
	decisions := l.engine.evaluateObservers(now, seen, observer.SilentAfter(l.cfg), l.termStart)
	l.mu.Unlock()
	for _, d := range decisions {
		l.transition(d)
	}
}

// evaluate decides the instances of targets at now and acts on what
// changed.
func (l *Leader) evaluate(now time.Time, targets []instanceKey, data *rules.Data) {
	// Before the first results are due, a target with fewer than a
	// quorum of them is not unknown, just not evaluated yet: a node that
	// has just started (and may lead at once) has heard only from itself.
	due := l.due[:0]
	for _, k := range targets {
		if c, ok := l.cfg.Checks[k.check]; ok {
			if now.Sub(l.started) >= 2*c.Interval || l.results.Observed(k.host, k.check) >= c.Quorum {
				due = append(due, k)
			}
		}
	}
	l.due = due
	if len(due) == 0 {
		return
	}
	l.mu.Lock()
	decisions, rechecks := l.engine.evaluate(now, due, inputs{results: l.latest, data: data})
	l.mu.Unlock()
	for _, d := range decisions {
		l.transition(d)
	}
	for _, rc := range rechecks {
		l.recheck(rc)
	}
}

// recheck runs the checks an instance's decision waits on now (a child's
// parents, a parent's dependents) rather than at their next interval.
func (l *Leader) recheck(rc recheck) {
	for _, t := range rc.targets {
		if l.results.Recheck(t.host, t.check) {
			l.log.Info("re-checking before deciding", "rule", rc.child.rule, "host", rc.child.host,
				"check", rc.child.check, "rerun", t.check)
		}
	}
}

// transition records a decision in the TSDB and notifies its receivers.
func (l *Leader) transition(d decision) {
	inst, tr := d.inst, d.tr
	if tr == nil {
		l.persist(inst)
		return
	}
	if tr.From != tr.To {
		l.transitions.Inc()
		l.log.Info("alert state changed", "rule", inst.Rule, "host", inst.Labels[alerting.LabelHost],
			"check", inst.Labels[alerting.LabelCheck], "from", tr.From, "to", tr.To, "reason", tr.Reason)
		tags := map[string]string{"rule": tsdb.SanitizeTag(inst.Rule),
			"host": tsdb.SanitizeTag(inst.Labels[alerting.LabelHost]), "check": tsdb.SanitizeTag(inst.Labels[alerting.LabelCheck])}
		l.history.Write([]tsdb.Point{{Metric: observer.MetricAlertState, Tags: tags, Time: tr.At, Value: float64(tr.To)}})
		custom := maps.Clone(inst.Labels)
		custom["rule"], custom["from"], custom["to"] = inst.Rule, tr.From.String(), tr.To.String()
		l.history.Annotate(tsdb.Annotation{
			Start: tr.At,
			Description: fmt.Sprintf("%s on %s (%s): %s → %s", inst.Rule, inst.Labels[alerting.LabelHost],
				inst.Labels[alerting.LabelCheck], tr.From, tr.To),
			Notes:  inst.Annotations[alerting.AnnotationSummary],
			Custom: custom,
		})
	}
	n := tr.Notification
	if n != nil {
		// Store first, with the notification in the instance's outbox,
		// then queue it, then store the instance without it: a crash
		// anywhere in between leaves either nothing decided, or the
		// notification to whoever takes over next (queued again under its
		// own id, which the queues drop if they have it). Queueing first
		// would lose the incident's start, and with it the id: a page sent
		// and then decided again after a crash comes under a new id, and
		// the first is never resolved.
		out := d.inst
		out.Outbox = n
		l.persist(out)
		l.send(d.rule, n)
	}
	l.persist(d.inst)
}

// send queues n for the receivers of rule r in this term.
func (l *Leader) send(r *rules.Rule, n *alerting.Notification) {
	l.mu.Lock()
	sender := l.termSend
	l.mu.Unlock()
	for _, rcv := range receiversOf(r) {
		if sender == nil || !l.receivers[rcv] {
			l.log.Warn("no receiver configured, notification not sent", "receiver", rcv, "id", n.ID, "status", n.Status,
				"summary", n.Annotations[alerting.AnnotationSummary])
			continue
		}
		if err := sender.Send(rcv, *n); err != nil {
			l.log.Error("queue notification", "receiver", rcv, "id", n.ID, "err", err)
		}
	}
}

// flushOutbox queues the notification a previous term stored in inst's
// outbox and did not clear (it died in between), and stores inst without
// it.
func (l *Leader) flushOutbox(inst alerting.Instance) {
	n := inst.Outbox
	inst.Outbox = nil
	l.log.Warn("queueing again a notification the last term stored and may not have queued",
		"rule", inst.Rule, "host", inst.Labels[alerting.LabelHost], "check", inst.Labels[alerting.LabelCheck], "id", n.ID, "status", n.Status)
	r := l.engine.ruleNamed(inst.Rule)
	if r == nil {
		r = l.engine.def
	}
	l.send(r, n)
	l.persist(inst)
}

// SetRules replaces the rules, as a reload does. Instances that the new
// rules still evaluate keep their state, so a reload neither re-notifies a
// firing alert nor forgets its recovery. Those they no longer evaluate (a
// rule removed, a check now selected by another rule) are retired: an open
// incident is resolved, once, saying why, and never left without its
// resolved notification.
func (l *Leader) SetRules(set *rules.Set) {
	now := l.now()
	l.mu.Lock()
	old := l.engine
	l.engine = newEngine(l.cfg, set, old.repeatInterval, old.silences)
	var retired []decision
	for ik, inst := range old.instances {
		if why := l.engine.orphaned(ik); why != "" {
			if d, ok := l.engine.retire(now, inst, why, old.ruleNamed(ik.rule)); ok {
				retired = append(retired, d)
			}
			continue
		}
		l.engine.instances[ik] = inst
		// A wait in progress, and what a parent held back, go on under
		// the new rules.
		if h, ok := old.holds[ik]; ok {
			l.engine.holds[ik] = h
		}
		if at, ok := old.waited[ik]; ok {
			l.engine.waited[ik] = at
		}
		if held, ok := old.held[ik]; ok {
			l.engine.held[ik] = held
		}
	}
	leading := l.epoch > 0
	l.mu.Unlock()
	if !leading {
		// A follower's instances are the leader's business; it takes them
		// over, and retires what it must, when it leads.
		return
	}
	for _, d := range retired {
		l.transition(d)
	}
}

// Acknowledge records that by is on the firing alert of rule on host's
// check: it reads acknowledged and is not repeated until it resolves.
// Errors: control.ErrNotLeader on a node that does not lead (acks are
// leader state), control.ErrNotFiring when the instance is not firing,
// control.ErrUnknownInstance when rule does not apply to that check.
func (l *Leader) Acknowledge(rule, host, chk, by, comment string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch == 0 {
		return fmt.Errorf("acknowledge %s on %s (%s): %w", rule, host, chk, control.ErrNotLeader)
	}
	ik := instKey{rule, host, chk}
	if inst, ok := l.engine.instances[ik]; ok {
		acked, ok := inst.Acknowledge(by, comment, l.now())
		if !ok {
			return fmt.Errorf("acknowledge %s on %s (%s): it is %s: %w", rule, host, chk, inst.State, control.ErrNotFiring)
		}
		l.engine.instances[ik] = acked
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.state.Save(ctx, l.epoch, stateKey(ik), acked); err != nil {
			return fmt.Errorf("acknowledge %s on %s (%s): store: %w", rule, host, chk, err)
		}
		l.log.Info("alert acknowledged", "rule", rule, "host", host, "check", chk, "by", by, "comment", comment)
		return nil
	}
	for _, r := range l.engine.rulesFor(instanceKey{host, chk}) {
		if r.Name == rule && l.cfg.Checks[chk] != nil {
			return fmt.Errorf("acknowledge %s on %s (%s): it is ok: %w", rule, host, chk, control.ErrNotFiring)
		}
	}
	return fmt.Errorf("acknowledge %s on %s (%s): %w", rule, host, chk, control.ErrUnknownInstance)
}

// Acks returns the acknowledgements of the open incidents: this node's
// own while it leads, else the leader's as the state store holds them (as
// Status shows them), so that any node answers who is on what. An error
// means the store cannot be read.
func (l *Leader) Acks(ctx context.Context) ([]control.Ack, error) {
	var insts []alerting.Instance
	l.mu.Lock()
	leading := l.epoch > 0
	if leading {
		insts = slices.Collect(maps.Values(l.engine.instances))
	}
	l.mu.Unlock()
	if !leading {
		stored, err := l.state.LoadAll(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the leader's alert state: %w", err)
		}
		insts = slices.Collect(maps.Values(stored))
	}
	var acks []control.Ack
	for _, inst := range insts {
		if inst.AckedAt.IsZero() {
			continue
		}
		acks = append(acks, control.Ack{Rule: inst.Rule, Host: inst.Labels[alerting.LabelHost], Check: inst.Labels[alerting.LabelCheck],
			State: inst.State.String(), By: inst.AckedBy, Comment: inst.AckComment, At: inst.AckedAt})
	}
	return acks, nil
}

// persist stores inst for the next term, or forgets it when there is
// nothing to remember; a refusal means this node no longer leads.
func (l *Leader) persist(inst alerting.Instance) {
	l.mu.Lock()
	epoch := l.epoch
	l.mu.Unlock()
	key := stateKey(instKey{inst.Rule, inst.Labels[alerting.LabelHost], inst.Labels[alerting.LabelCheck]})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if inst.Forgettable() {
		err = l.state.Delete(ctx, epoch, key)
	} else {
		err = l.state.Save(ctx, epoch, key, inst)
	}
	if err != nil {
		l.log.Error("store alert state", "rule", inst.Rule, "host", inst.Labels[alerting.LabelHost], "epoch", epoch, "err", err)
	}
}

// InstanceStatus is one rule instance in Status.
type InstanceStatus struct {
	Rule   string         `json:"rule"`
	Host   string         `json:"host"`
	Check  string         `json:"check"`
	State  alerting.State `json:"state"`
	Since  time.Time      `json:"since,omitzero"`
	Reason string         `json:"reason,omitempty"`
	// FiredAt is when the open incident started firing; zero when none
	// is open.
	FiredAt time.Time `json:"fired_at,omitzero"`
	// AckedBy, AckedAt and AckComment say who acknowledged the open
	// incident; empty when nobody has.
	AckedBy    string    `json:"acked_by,omitempty"`
	AckedAt    time.Time `json:"acked_at,omitzero"`
	AckComment string    `json:"ack_comment,omitempty"`
	// Summary is the rule's summary annotation as last rendered while the
	// condition held: what is wrong, in the rule's words.
	Summary   string           `json:"summary,omitempty"`
	Observers []ObserverResult `json:"observers"`
}

// ObserverResult is one observer's latest result in Status.
type ObserverResult struct {
	Observer string       `json:"observer"`
	Status   check.Status `json:"status"`
	Raw      string       `json:"raw"`
	Output   string       `json:"output"`
	At       time.Time    `json:"at"`
	// Duration is how long the plugin ran.
	Duration time.Duration `json:"duration_ns,omitempty"`
	// Fresh reports whether the result counts towards the quorum: younger
	// than twice the check's interval (rules.NewEnv's rule).
	Fresh bool `json:"fresh"`
	// Perf is the result's performance data.
	Perf []check.Perf `json:"perfdata,omitempty"`
}

// ObserverStatus is one observer of the cluster in Status.
type ObserverStatus struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_heartbeat,omitzero"`
	Leader   bool      `json:"leader"`
	// Silent reports that the observer has not been heard for three
	// heartbeats (or never): the observer-up alert's condition.
	Silent bool `json:"silent"`
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
func (l *Leader) Status() Status {
	type row struct {
		rule string
		k    instanceKey
		inst alerting.Instance
		ok   bool
	}
	l.mu.Lock()
	st := Status{Observer: l.cfg.Observer, Mode: l.mode, Leader: l.epoch > 0, Epoch: l.epoch, Checks: len(l.cfg.Targets)}
	l.mu.Unlock()
	st.Degraded, _ = l.degraded()
	// A follower shows the leader's decisions, as its state store holds
	// them, not its own idle engine: all observers seeing a check fail
	// while a follower's page says ok would send the operator astray.
	var stored map[string]alerting.Instance
	var storedErr error
	if !st.Leader {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		stored, storedErr = l.state.LoadAll(ctx)
		cancel()
	}
	var rows []row
	l.mu.Lock()
	for _, t := range l.cfg.Targets {
		k := instanceKey{t.Host, t.Check.Name}
		for _, r := range l.engine.rulesFor(k) {
			ik := instKey{r.Name, k.host, k.check}
			inst, ok := l.engine.instances[ik]
			if !st.Leader {
				inst, ok = stored[stateKey(ik)]
			}
			rows = append(rows, row{r.Name, k, inst, ok})
		}
	}
	// The instances of no configured target that are not ok: the self
	// alerts (observer-up, tsdb-unhealthy, …), which an operator must see
	// beside the others.
	listed := make(map[instKey]bool, len(rows))
	for _, r := range rows {
		listed[instKey{r.rule, r.k.host, r.k.check}] = true
	}
	var extra []row
	addExtra := func(inst alerting.Instance) {
		ik := instKey{inst.Rule, inst.Labels[alerting.LabelHost], inst.Labels[alerting.LabelCheck]}
		if !listed[ik] && inst.State != alerting.OK {
			extra = append(extra, row{ik.rule, instanceKey{ik.host, ik.check}, inst, true})
		}
	}
	if st.Leader {
		for _, inst := range l.engine.instances {
			addExtra(inst)
		}
	} else {
		for _, inst := range stored {
			addExtra(inst)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(extra, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.rule, b.rule), cmp.Compare(a.k.host, b.k.host), cmp.Compare(a.k.check, b.k.check))
	})
	rows = append(rows, extra...)
	l.clusterStatus(&st)
	now := l.now()
	for _, r := range rows {
		latest, _ := l.latest(nil, nil, r.k)
		is := InstanceStatus{Rule: r.rule, Host: r.k.host, Check: r.k.check, State: alerting.OK}
		switch {
		case r.ok:
			is.State, is.Reason, is.Since = r.inst.State, r.inst.Reason, r.inst.ActiveAt
			is.FiredAt, is.AckedBy, is.AckedAt, is.AckComment = r.inst.FiredAt, r.inst.AckedBy, r.inst.AckedAt, r.inst.AckComment
			is.Summary = r.inst.Annotations[alerting.AnnotationSummary]
		case storedErr != nil:
			// Not known to be fine: the leader's decisions cannot be read.
			is.State, is.Reason = alerting.Unknown, "the alert state cannot be read: "+storedErr.Error()
		case len(latest) == 0:
			is.State, is.Reason = alerting.Unknown, "no result yet"
		}
		interval := l.cfg.Interval
		if c, ok := l.cfg.Checks[r.k.check]; ok {
			interval = c.Interval
		}
		for _, res := range latest {
			is.Observers = append(is.Observers, ObserverResult{Observer: res.Observer, Status: res.Status, Raw: res.Raw,
				Output: res.Output, At: res.Start, Duration: res.Duration, Perf: res.Perf,
				Fresh: now.Sub(res.Start.Add(res.Duration)) < 2*interval})
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
func (l *Leader) clusterStatus(st *Status) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if lr, ok := l.lease.(leaderReporter); ok {
		if owner, epoch, _, err := lr.Leader(ctx); err == nil {
			st.LeaderName, st.LeaderEpoch = owner, epoch
		}
	} else if st.Leader {
		st.LeaderName, st.LeaderEpoch = l.cfg.Observer, st.Epoch
	}
	seen := make(map[string]time.Time)
	if obs, err := l.observers.Observers(ctx); err == nil {
		for _, o := range obs {
			seen[o.Name] = o.LastSeen
		}
	}
	names := append(slices.Clone(l.cfg.Nodes), slices.Collect(maps.Keys(seen))...)
	slices.Sort(names)
	silentAfter, now := observer.SilentAfter(l.cfg), l.now()
	for _, n := range slices.Compact(names) {
		st.Observers = append(st.Observers, ObserverStatus{Name: n, LastSeen: seen[n], Leader: n == st.LeaderName,
			Silent: seen[n].IsZero() || now.Sub(seen[n]) > silentAfter})
	}
}
