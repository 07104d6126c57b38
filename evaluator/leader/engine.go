package leader

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/rules"
)

// Silences says which operator's silence matches an alert, if any.
type Silences interface {
	// MatchAlert returns the id of an active silence matching the alert of
	// rule with labels at now, or "".
	MatchAlert(rule string, labels map[string]string, now time.Time) string
}

// instKey names one rule instance: a rule over one host×check.
type instKey struct{ rule, host, check string }

// decision is what one evaluation of one instance decided: a transition,
// or (tr nil) only an instance to store, whose flap memory moved.
type decision struct {
	rule  *rules.Rule
	inst  alerting.Instance
	tr    *alerting.Transition
	store bool // tr is nil, and inst is to be stored all the same
}

// engine decides alerts from results: which rules apply to which target,
// what each instance's condition says, which parents hold a child back,
// and the state every instance is in. It runs no goroutine and reads no
// clock: the daemon drives it with results as they come and the time, and
// `dmonitor rules test` drives it over history. Not safe for concurrent use.
type engine struct {
	cfg            *config.Config
	set            *rules.Set
	def            *rules.Rule
	observerUp     *rules.Rule            // the alert of an observer gone silent
	redisDown      *rules.Rule            // the alert of degraded mode
	partial        *rules.Rule            // the alert of an outage seen from too few failure domains
	self           map[string]*rules.Rule // the alerts of the nodes' own health, by name; see self.go
	repeatInterval time.Duration
	silences       Silences // nil: nothing is silenced
	// noRechecks says no check can be run again on demand (a replay of
	// history): a parent then decides without waiting for its dependents.
	noRechecks bool

	byHost    map[string][]instanceKey // host → its targets
	targetsOf map[string][]instanceKey // rule → the targets it selects, sorted by host and check
	children  map[string][]*rules.Rule // rule → rules that depend on it
	instances map[instKey]alerting.Instance
	holds     map[instKey]hold
	// waited marks the incidents (by their FiredAt) whose parent has
	// waited for its dependents before resolving: keep_firing_for may
	// keep one open past the wait, and it must not ask again each pass.
	waited map[instKey]time.Time
	// held are the dependents each parent with an open incident has held
	// back during it, for its resolved notification; see noteHeld.
	held map[instKey][]instKey

	setRules []*rules.Rule  // the rules of set, in its order
	rank     map[string]int // orders the rules of a pass: parents first; see evaluate
	// seen, work, env, targetRs, results and history are the scratch of
	// one pass, kept across passes and reset by each: a pass over every
	// instance would otherwise allocate an index of them all, and an
	// environment and a copy of the results per instance, to throw them
	// away a few seconds later.
	seen     map[instKey]bool
	work     []todo
	env      rules.Env
	targetRs []*rules.Rule
	results  []check.Result
	history  [][]check.Status
}

func newEngine(cfg *config.Config, set *rules.Set, repeat time.Duration, silences Silences) *engine {
	up, err := rules.Compile(rules.Rule{Name: ObserverRule, Severity: "warning", Notify: []string{config.DefaultReceiver},
		Summary: "observer {{ .host }} is silent: no heartbeat"})
	if err != nil {
		panic(err) // constants; failing to compile them is a bug
	}
	down, err := rules.Compile(rules.Rule{Name: RedisRule, Severity: "critical", Notify: []string{config.DefaultReceiver},
		Summary: "redis is unreachable: the nodes decide among themselves (degraded, peer mode)"})
	if err != nil {
		panic(err)
	}
	partial, err := rules.Compile(rules.Rule{Name: PartialRule, Expr: "partial", Severity: "warning", Notify: cfg.PartialNotify,
		Summary: "{{ .host }} {{ .check }} down from every observer of {{ .down_domains }} of {{ .domains }} failure domains; " +
			"an outage needs {{ .quorum_domains }}"})
	if err != nil {
		panic(err)
	}
	g := &engine{cfg: cfg, set: set, def: rules.Default(), observerUp: up, redisDown: down, partial: partial, self: compileSelfRules(cfg), repeatInterval: repeat, silences: silences,
		byHost: make(map[string][]instanceKey), children: make(map[string][]*rules.Rule),
		instances: make(map[instKey]alerting.Instance), holds: make(map[instKey]hold), waited: make(map[instKey]time.Time), held: make(map[instKey][]instKey),
		rank: make(map[string]int), seen: make(map[instKey]bool)}
	for _, t := range cfg.Targets {
		g.byHost[t.Host] = append(g.byHost[t.Host], instanceKey{t.Host, t.Check.Name})
	}
	if set != nil {
		g.targetsOf = make(map[string][]instanceKey)
		for _, r := range set.Rules() {
			for _, p := range r.Parents() {
				g.children[p] = append(g.children[p], r)
			}
		}
		// Only the rules in a dependency need to know their targets.
		for _, r := range set.Rules() {
			if len(r.DependsOn) == 0 && len(g.children[r.Name]) == 0 {
				continue
			}
			for _, t := range cfg.Targets { // sorted by host, then check
				if r.Matches(t.Host, t.Check.Name, nil) {
					g.targetsOf[r.Name] = append(g.targetsOf[r.Name], instanceKey{t.Host, t.Check.Name})
				}
			}
		}
	}
	// Parents first: the rule order of the set, the default rule (which
	// nothing depends on) last.
	if set != nil {
		g.setRules = set.Rules()
		for i, r := range g.setRules {
			g.rank[r.Name] = i
		}
	}
	g.rank[g.def.Name] = len(g.rank)
	g.rank[PartialRule] = len(g.rank)
	return g
}

// PartialRule is the rule name of the alert a check with quorum_domains
// above 1 raises while every observer of some failure domains sees it
// failing, but fewer domains than that: a regional outage, or one
// domain's network, rather than silence or a full page.
const PartialRule = "partial-outage"

// rulesFor returns the rules of target k: those whose select matches, or
// the default rule when none does, with partial-outage beside it when k's
// check counts failure domains (a rule of one's own reads partial).
func (g *engine) rulesFor(k instanceKey) []*rules.Rule { return g.appendRules(nil, k) }

// appendRules appends the rules of target k (see rulesFor) to dst: a pass
// over every target reuses one dst rather than allocate a slice for each.
func (g *engine) appendRules(dst []*rules.Rule, k instanceKey) []*rules.Rule {
	n := len(dst)
	for _, r := range g.setRules { // what set.Match does, into dst
		if r.Matches(k.host, k.check, nil) {
			dst = append(dst, r)
		}
	}
	if len(dst) > n {
		return dst
	}
	if c := g.cfg.Checks[k.check]; c != nil && c.QuorumDomains > 1 {
		return append(dst, g.def, g.partial)
	}
	return append(dst, g.def)
}

// inputs are what an evaluation reads: the latest result of each observer
// of a target with their earlier statuses, and this tick's TSDB data.
type inputs struct {
	// results appends the latest results of a target to rs and their
	// earlier statuses to hs, whose slices past its length it may reuse
	// (see Results.AppendLatest). A caller passing nil gets its own.
	results func(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status)
	data    *rules.Data
}

// recheck asks for targets to be run now, on behalf of an instance whose
// decision waits on them (see hold).
type recheck struct {
	child   instKey
	targets []instanceKey
}

// todo is one instance to evaluate: rule r on target k, r of rank rank.
type todo struct {
	r    *rules.Rule
	k    instanceKey
	rank int
}

// evaluate evaluates the instances of targets, and of every rule instance
// on the same hosts that depends on them, at now: parents before children,
// so a child sees its parents' new state. It returns the decisions that
// made a transition, and the targets to re-check at once.
func (g *engine) evaluate(now time.Time, targets []instanceKey, in inputs) ([]decision, []recheck) {
	seen := g.seen
	clear(seen)
	// Cleared too, so that the rules of a pass are not kept alive by the
	// next one's slack.
	clear(g.work)
	work := g.work[:0]
	var add func(r *rules.Rule, k instanceKey)
	add = func(r *rules.Rule, k instanceKey) {
		ik := instKey{r.Name, k.host, k.check}
		if seen[ik] {
			return
		}
		seen[ik] = true
		work = append(work, todo{r, k, g.rank[r.Name]})
		// A child's suppression follows its parents: re-evaluate the
		// children of r on the same host.
		for _, c := range g.children[r.Name] {
			for _, t := range g.byHost[k.host] {
				if c.Matches(t.host, t.check, nil) {
					add(c, t)
				}
			}
		}
	}
	for _, k := range targets {
		g.targetRs = g.appendRules(g.targetRs[:0], k)
		for _, r := range g.targetRs {
			add(r, k)
		}
	}
	// A parent waiting for its dependents' re-checks decides as soon as
	// their results are in, not at its own next result.
	if len(g.holds) > 0 {
		arrived := make(map[instanceKey]bool, len(targets))
		for _, k := range targets {
			arrived[k] = true
		}
		for ik, h := range g.holds {
			if h.kind != holdParents && slices.ContainsFunc(h.awaited, func(t instanceKey) bool { return arrived[t] }) {
				if r := g.ruleNamed(ik.rule); r != nil {
					add(r, instanceKey{ik.host, ik.check})
				}
			}
		}
	}
	g.work = work
	// Parents first (see rank), then by host and check, so that the
	// decisions come out in the same order every time.
	slices.SortFunc(work, func(a, b todo) int {
		return cmp.Or(a.rank-b.rank, cmp.Compare(a.k.host, b.k.host), cmp.Compare(a.k.check, b.k.check))
	})

	var out []decision
	var rechecks []recheck
	for _, w := range work {
		d, rc := g.evaluateOne(now, w.r, w.k, in)
		if d.tr != nil || d.store {
			out = append(out, d)
		}
		if rc != nil {
			rechecks = append(rechecks, *rc)
		}
	}
	g.noteHeld(work)
	for _, d := range out {
		if d.tr == nil || d.tr.Notification == nil || len(g.children[d.rule.Name]) == 0 {
			continue
		}
		ik := instKey{d.rule.Name, d.inst.Labels[alerting.LabelHost], d.inst.Labels[alerting.LabelCheck]}
		g.nameDependents(d.tr.Notification, ik)
	}
	for _, d := range out {
		if d.inst.FiredAt.IsZero() {
			ik := instKey{d.rule.Name, d.inst.Labels[alerting.LabelHost], d.inst.Labels[alerting.LabelCheck]}
			delete(g.held, ik)
			delete(g.waited, ik)
		}
	}
	return out, rechecks
}

// evaluateOne runs rule r on target k at now.
func (g *engine) evaluateOne(now time.Time, r *rules.Rule, k instanceKey, in inputs) (decision, *recheck) {
	ik := instKey{r.Name, k.host, k.check}
	c := g.cfg.Checks[k.check]
	// The environment points into the engine's scratch; the calls below
	// that look at other targets' results (holdForParents and the like)
	// pass nil and get their own.
	g.results, g.history = in.results(g.results[:0], g.history[:0], k)
	known := g.env.Reset(k.host, k.check, g.results, now, c.Interval, c.Quorum, c.QuorumDomains)
	env := &g.env
	for i := range env.Observers {
		env.Observers[i].History = g.history[i]
	}
	env.Data = in.data

	var input alerting.Input
	switch active, err := r.Eval(*env); {
	case !known:
		input.Unknown = true
		input.Reason = fmt.Sprintf("%d fresh observers, quorum is %d", env.Total, env.Quorum)
	case err != nil:
		input.Unknown, input.Reason = true, err.Error()
	default:
		input.Active = active
	}
	if input.Active {
		// Only a condition that holds keeps annotations (they tell the
		// firing, and later the resolved, notification what was wrong):
		// rendering them for every healthy instance would double a tick.
		input.Annotations = g.annotations(r, *env)
	}

	inst, ok := g.instances[ik]
	// A new instance whose condition neither holds nor is unknown is, as
	// a rule, forgotten at once: its labels are built only if it is not.
	// At each pass that is most instances, and the labels most of what
	// the pass allocates.
	lazy := !ok && !input.Active && !input.Unknown
	if !ok {
		inst = alerting.Instance{Rule: r.Name}
		if !lazy {
			inst.Labels = g.labels(r, k)
		}
	}
	if input.Active && g.silences != nil {
		input.Silenced = g.silences.MatchAlert(r.Name, inst.Labels, now)
	}
	var rc *recheck
	switch {
	case input.Active || input.Unknown:
		input.Suppressed = g.parentDown(r, k)
		if input.Suppressed == "" && input.Active {
			input.Suppressed, rc = g.holdForParents(now, r, k, ik, inst, in)
		}
		if input.Suppressed == "" && input.Active {
			// About to page: first let the dependents run again, so
			// the page names all it holds back.
			input.Suppressed, rc = g.holdForDependents(now, r, k, ik, inst, in)
		}
	case !inst.FiredAt.IsZero():
		// About to resolve with dependents held back: let them run
		// again first, so none pages on a result from before the
		// recovery and the resolved says which recovered with it. The
		// instance stays as it is meanwhile: nothing is decided.
		if waiting, hrc := g.holdResolve(now, ik, inst, in); waiting {
			next := inst
			next.LastEval = now
			g.instances[ik] = next
			return decision{rule: r, inst: next}, hrc
		}
	default:
		delete(g.holds, ik)
	}
	params := alerting.Params{For: r.For, KeepFiringFor: r.KeepFiringFor, RepeatInterval: g.repeatInterval,
		Flap: alerting.FlapParams{Changes: r.Flapping.Changes, Window: r.Flapping.Window}}
	next, tr := inst.Next(now, input, params)
	if lazy && (tr != nil || !next.Forgettable()) {
		// Kept or notified after all: decided again with its labels,
		// which the transition's notification and the state carry. Next
		// is a pure function of its arguments, so this is the decision
		// the labels would have made in the first place.
		inst.Labels = g.labels(r, k)
		next, tr = inst.Next(now, input, params)
	}
	if next.Forgettable() {
		delete(g.instances, ik)
		delete(g.holds, ik)
	} else {
		g.instances[ik] = next
	}
	// No transition, but the flap memory moved (a flip while flapping):
	// stored, so that a new leader judges the flapping on the same history.
	store := tr == nil && !slices.Equal(inst.Changes, next.Changes)
	return decision{rule: r, inst: next, tr: tr, store: store}, rc
}

func (g *engine) labels(r *rules.Rule, k instanceKey) map[string]string {
	l := make(map[string]string, len(r.Labels)+3)
	maps.Copy(l, r.Labels)
	l[alerting.LabelHost], l[alerting.LabelCheck], l[alerting.LabelSeverity] = k.host, k.check, r.Severity
	return l
}

// annotations renders the rule's summary and description and lists the
// observers' outputs. A template that fails says so in the summary rather
// than losing the alert.
func (g *engine) annotations(r *rules.Rule, env rules.Env) map[string]string {
	var outputs strings.Builder
	for _, o := range env.Observers {
		fmt.Fprintf(&outputs, "%s: %s %s\n", o.Name, o.Status, o.Output)
	}
	summary, description, err := r.Render(env)
	if err != nil {
		summary = fmt.Sprintf("%s on %s (%s): summary template failed: %v", r.Name, env.Host, env.Check, err)
	}
	a := map[string]string{alerting.AnnotationSummary: summary, alerting.AnnotationOutputs: outputs.String()}
	if description != "" {
		a[alerting.AnnotationDescription] = description
	}
	return a
}

// ObserverRule is the rule name of the alert an observer raises by going
// silent; its instances have host = the observer and check = "heartbeat".
const ObserverRule = "observer-up"

// evaluateObservers raises an alert for each node of nodes.txt not heard
// from for silentAfter, counted from its last heartbeat but from no earlier
// than since: the start of this process or of this leader term. Heartbeats
// from before then (a Redis restored from its AOF file) say nothing of the
// present, and the observers need a heartbeat interval to be heard again.
func (g *engine) evaluateObservers(now time.Time, lastSeen map[string]time.Time, silentAfter time.Duration, since time.Time) []decision {
	var out []decision
	for _, node := range g.cfg.Nodes {
		at, heard := lastSeen[node]
		last := at
		if last.Before(since) {
			last = since
		}
		ik := instKey{ObserverRule, node, "heartbeat"}
		inst, ok := g.instances[ik]
		if !ok {
			inst = alerting.Instance{Rule: ObserverRule, Labels: map[string]string{
				alerting.LabelHost: node, alerting.LabelCheck: "heartbeat", alerting.LabelSeverity: g.observerUp.Severity}}
		}
		in := alerting.Input{Active: now.Sub(last) > silentAfter}
		if in.Active {
			when := "never heard from"
			if heard {
				when = "last heartbeat " + at.UTC().Format(time.RFC3339)
			}
			in.Annotations = map[string]string{alerting.AnnotationSummary: fmt.Sprintf("observer %s is silent: %s", node, when)}
		}
		next, tr := inst.Next(now, in, alerting.Params{RepeatInterval: g.repeatInterval})
		if next.State == alerting.OK && next.FiredAt.IsZero() {
			delete(g.instances, ik)
		} else {
			g.instances[ik] = next
		}
		if tr != nil {
			out = append(out, decision{rule: g.observerUp, inst: next, tr: tr})
		}
	}
	return out
}

// RedisRule is the rule name of the alert of degraded mode; its one
// instance has host = "redis" and check = "reachable".
const RedisRule = "redis-unreachable"

// evaluateRedis raises the alert of degraded mode while degraded says so,
// and resolves it when Redis answers again.
func (g *engine) evaluateRedis(now time.Time, degraded bool, since time.Time) []decision {
	return g.selfAlert(now, g.redisDown, "redis", "reachable", degraded, fmt.Sprintf(
		"redis is unreachable since %s: the nodes decide among themselves (degraded, peer mode)", since.UTC().Format(time.RFC3339)))
}

// receivers returns where r's notifications go: its notify list, or the
// default receiver (alert.d/) when it names none.
func receiversOf(r *rules.Rule) []string {
	if len(r.Notify) > 0 {
		return r.Notify
	}
	return []string{config.DefaultReceiver}
}

// ruleNamed returns the rule called name in this engine (the default
// rule and observer-up included), or nil.
func (g *engine) ruleNamed(name string) *rules.Rule {
	switch {
	case name == g.def.Name:
		return g.def
	case name == ObserverRule:
		return g.observerUp
	case name == RedisRule:
		return g.redisDown
	case name == PartialRule:
		return g.partial
	case g.self[name] != nil:
		return g.self[name]
	case g.set != nil:
		return g.set.Rule(name)
	}
	return nil
}

// orphaned says why the instance ik is no longer evaluated under this
// engine's configuration and rules, or "" when it still is.
func (g *engine) orphaned(ik instKey) string {
	if why, ok := g.selfOrphaned(ik); ok {
		return why
	}
	if ik.rule == RedisRule {
		if g.cfg.Redis.URL == "" {
			return "redis.url was removed"
		}
		return ""
	}
	if ik.rule == ObserverRule {
		if !slices.Contains(g.cfg.Nodes, ik.host) {
			return fmt.Sprintf("observer %s was removed from nodes.txt", ik.host)
		}
		return ""
	}
	k := instanceKey{ik.host, ik.check}
	if _, ok := g.cfg.Target(ik.host, ik.check); !ok {
		return fmt.Sprintf("check %s on %s was removed from the configuration", ik.check, ik.host)
	}
	for _, r := range g.rulesFor(k) {
		if r.Name == ik.rule {
			return ""
		}
	}
	if g.ruleNamed(ik.rule) == nil {
		return fmt.Sprintf("rule %s was removed", ik.rule)
	}
	return fmt.Sprintf("rule %s no longer applies to %s on %s", ik.rule, ik.check, ik.host)
}

// retire ends inst, which this engine no longer evaluates, at now: see
// alerting.Instance.Retire. r is the rule it was evaluated by, for the
// receivers of its resolved notification; nil (a rule gone before this
// node took over) sends it to the default receiver. ok is false when
// there is nothing to record.
func (g *engine) retire(now time.Time, inst alerting.Instance, why string, r *rules.Rule) (decision, bool) {
	next, tr := inst.Retire(now, why)
	if tr == nil {
		return decision{}, false
	}
	if r == nil {
		r = g.def
	}
	return decision{rule: r, inst: next, tr: tr}, true
}
