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

// decision is what one evaluation of one instance decided.
type decision struct {
	rule *rules.Rule
	inst alerting.Instance
	tr   *alerting.Transition
}

// hold keeps an instance's decision back while related checks run again:
// a child's parents before it fires, so the page names the cause; a
// parent's dependents before it fires or resolves, so its notification
// names what it holds back and, at the end, what recovered with it.
type hold struct {
	kind         holdKind
	since, until time.Time
	awaited      []instanceKey // the targets re-checked, on the instance's host
}

type holdKind int

const (
	holdParents  holdKind = iota // a child before it fires
	holdFire                     // a parent before it fires
	holdResolve                  // a parent before it resolves
	// resolveHeld marks an incident (since = its FiredAt) whose parent
	// has waited for its dependents once already: keep_firing_for may
	// keep it open past the wait, and it must not ask again each pass.
	resolveHeld
)

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
	children  map[string][]*rules.Rule // rule → rules that depend on it
	instances map[instKey]alerting.Instance
	holds     map[instKey]hold
	// held are the dependents each parent with an open incident has held
	// back during it, for its resolved notification; see noteHeld.
	held map[instKey][]instKey
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
		instances: make(map[instKey]alerting.Instance), holds: make(map[instKey]hold), held: make(map[instKey][]instKey)}
	for _, t := range cfg.Targets {
		g.byHost[t.Host] = append(g.byHost[t.Host], instanceKey{t.Host, t.Check.Name})
	}
	if set != nil {
		for _, r := range set.Rules() {
			for _, p := range r.Parents() {
				g.children[p] = append(g.children[p], r)
			}
		}
	}
	return g
}

// PartialRule is the rule name of the alert a check with quorum_domains
// above 1 raises while every observer of some failure domains sees it
// failing, but fewer domains than that: a regional outage, or one
// domain's network, rather than silence or a full page.
const PartialRule = "partial-outage"

// rulesFor returns the rules of target k: those whose select matches, or
// the default rule when none does; and partial-outage when k's check
// counts failure domains.
func (g *engine) rulesFor(k instanceKey) []*rules.Rule {
	rs := []*rules.Rule{g.def}
	if g.set != nil {
		if matched := g.set.Match(k.host, k.check, nil); len(matched) > 0 {
			rs = matched
		}
	}
	if c := g.cfg.Checks[k.check]; c != nil && c.QuorumDomains > 1 {
		rs = append(slices.Clip(rs), g.partial)
	}
	return rs
}

// inputs are what an evaluation reads: the latest result of each observer
// of a target with their earlier statuses, and this tick's TSDB data.
type inputs struct {
	results func(instanceKey) ([]check.Result, [][]check.Status)
	data    *rules.Data
}

// recheck asks for targets to be run now, on behalf of a child rule
// instance whose parents must be looked at again before it may fire.
type recheck struct {
	child   instKey
	targets []instanceKey
}

// todo is one instance to evaluate: rule r on target k.
type todo struct {
	r *rules.Rule
	k instanceKey
}

// evaluate evaluates the instances of targets, and of every rule instance
// on the same hosts that depends on them, at now: parents before children,
// so a child sees its parents' new state. It returns the decisions that
// made a transition, and the targets to re-check at once.
func (g *engine) evaluate(now time.Time, targets []instanceKey, in inputs) ([]decision, []recheck) {
	seen := make(map[instKey]bool)
	var work []todo
	var add func(r *rules.Rule, k instanceKey)
	add = func(r *rules.Rule, k instanceKey) {
		ik := instKey{r.Name, k.host, k.check}
		if seen[ik] {
			return
		}
		seen[ik] = true
		work = append(work, todo{r, k})
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
		for _, r := range g.rulesFor(k) {
			add(r, k)
		}
	}
	// A parent waiting for its dependents' re-checks decides as soon as
	// their results are in, not at its own next result.
	for ik, h := range g.holds {
		if (h.kind == holdFire || h.kind == holdResolve) && slices.ContainsFunc(h.awaited, func(t instanceKey) bool { return slices.Contains(targets, t) }) {
			if r := g.ruleNamed(ik.rule); r != nil {
				add(r, instanceKey{ik.host, ik.check})
			}
		}
	}
	// Parents first: the rule order of the set, the default rule (which
	// nothing depends on) last.
	rank := make(map[string]int)
	if g.set != nil {
		for i, r := range g.set.Rules() {
			rank[r.Name] = i
		}
	}
	rank[g.def.Name] = len(rank)
	rank[PartialRule] = len(rank)
	slices.SortStableFunc(work, func(a, b todo) int { return rank[a.r.Name] - rank[b.r.Name] })

	var out []decision
	var rechecks []recheck
	for _, w := range work {
		d, rc := g.evaluateOne(now, w.r, w.k, in)
		if d.tr != nil {
			out = append(out, d)
		}
		if rc != nil {
			rechecks = append(rechecks, *rc)
		}
	}
	g.noteHeld(work)
	for _, d := range out {
		if len(g.children[d.rule.Name]) == 0 {
			continue
		}
		k := instanceKey{d.inst.Labels[alerting.LabelHost], d.inst.Labels[alerting.LabelCheck]}
		ik := instKey{d.rule.Name, k.host, k.check}
		if n := d.tr.Notification; n != nil {
			g.nameDependents(n, d.rule, k, g.held[ik])
		}
		if d.inst.FiredAt.IsZero() {
			delete(g.held, ik)
		}
	}
	return out, rechecks
}

// evaluateOne runs rule r on target k at now.
func (g *engine) evaluateOne(now time.Time, r *rules.Rule, k instanceKey, in inputs) (decision, *recheck) {
	ik := instKey{r.Name, k.host, k.check}
	c := g.cfg.Checks[k.check]
	results, history := in.results(k)
	env, known := rules.NewEnv(k.host, k.check, results, now, c.Interval, c.Quorum, c.QuorumDomains)
	for i := range env.Observers {
		env.Observers[i].History = history[i]
	}
	env.Data = in.data

	var input alerting.Input
	switch active, err := r.Eval(env); {
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
		input.Annotations = g.annotations(r, env)
	}

	inst, ok := g.instances[ik]
	if !ok {
		inst = alerting.Instance{Rule: r.Name, Labels: g.labels(r, k)}
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
		// incident stays as it is meanwhile.
		if why, hrc := g.holdResolve(now, r, k, ik, inst, in); why != "" {
			input = alerting.Input{Active: true, Annotations: inst.Annotations}
			rc = hrc
		}
	default:
		delete(g.holds, ik)
	}
	next, tr := inst.Next(now, input, alerting.Params{For: r.For, KeepFiringFor: r.KeepFiringFor, RepeatInterval: g.repeatInterval,
		Flap: alerting.FlapParams{Changes: r.Flapping.Changes, Window: r.Flapping.Window}})
	if next.Forgettable() {
		delete(g.instances, ik)
	} else {
		g.instances[ik] = next
	}
	if tr == nil && !slices.Equal(inst.Changes, next.Changes) {
		// No transition, but the flap memory moved (a flip while
		// flapping): stored, so that a new leader judges the flapping on
		// the same history.
		tr = &alerting.Transition{From: next.State, To: next.State, At: now}
	}
	return decision{rule: r, inst: next, tr: tr}, rc
}

// down reports whether a parent instance in state s holds its children
// back: firing in any form, or not known to be fine.
func down(s alerting.State) bool {
	switch s {
	case alerting.Firing, alerting.Acknowledged, alerting.Silenced, alerting.Unknown, alerting.Suppressed, alerting.Flapping:
		return true
	}
	return false
}

// parentDown returns why the parents of r hold target k back, or "": a
// plain parent that is down, or a group of redundant parents none of which
// is available (each failed or unknown).
func (g *engine) parentDown(r *rules.Rule, k instanceKey) string {
	for _, dep := range r.DependsOn {
		var whys []string
		for _, p := range dep.Any {
			why := g.parentState(p, k)
			if why == "" {
				break // available: the group carries the load
			}
			whys = append(whys, why)
		}
		switch {
		case len(whys) < len(dep.Any):
		case len(whys) == 1:
			return whys[0]
		default:
			return "every redundant parent is down: " + strings.Join(whys, "; ")
		}
	}
	return ""
}

// parentState returns why parent rule p is down as target k's parent, or
// "" while it is available. Its instances on k's host count; a parent with
// none on this host (a rule about a shared router, say) counts through any
// of its instances.
func (g *engine) parentState(p string, k instanceKey) string {
	pr := g.set.Rule(p)
	onHost := false
	for _, t := range g.byHost[k.host] {
		if pr == nil || !pr.Matches(t.host, t.check, nil) {
			continue
		}
		onHost = true
		if inst, ok := g.instances[instKey{p, t.host, t.check}]; ok && down(inst.State) {
			return fmt.Sprintf("parent %q is %s on %s (%s)", p, inst.State, t.host, t.check)
		}
	}
	if onHost {
		return ""
	}
	var whys []string
	for ik, inst := range g.instances {
		if ik.rule == p && down(inst.State) {
			whys = append(whys, fmt.Sprintf("parent %q is %s on %s (%s)", p, inst.State, ik.host, ik.check))
		}
	}
	if len(whys) == 0 {
		return ""
	}
	slices.Sort(whys) // map order would make the reason change from tick to tick
	return whys[0]
}

// holdForParents keeps a child that has just started failing from firing
// until its parents' checks on the same host have run again, so the page
// names the cause, not the symptom. It returns the reason while holding,
// and the re-check to ask for when the hold begins.
func (g *engine) holdForParents(now time.Time, r *rules.Rule, k instanceKey, ik instKey, inst alerting.Instance, in inputs) (string, *recheck) {
	if len(r.DependsOn) == 0 || !inst.FiredAt.IsZero() {
		return "", nil
	}
	if h, ok := g.holds[ik]; ok && h.kind == holdParents {
		return g.holding(now, ik, h, in)
	}
	if inst.State != alerting.OK && inst.State != alerting.Unknown {
		return "", nil // already past the start of this failure
	}
	var parents []*rules.Rule
	for _, p := range r.Parents() {
		if pr := g.set.Rule(p); pr != nil {
			parents = append(parents, pr)
		}
	}
	return g.startHold(now, now, k, ik, holdParents, parents, in)
}

// holdForDependents keeps a parent that is about to fire until the checks
// that depend on it on the same host have run again, so its page names
// all it holds back. It returns the reason while holding, and the re-check
// to ask for when the hold begins.
func (g *engine) holdForDependents(now time.Time, r *rules.Rule, k instanceKey, ik instKey, inst alerting.Instance, in inputs) (string, *recheck) {
	if g.noRechecks || len(g.children[r.Name]) == 0 || !inst.FiredAt.IsZero() {
		return "", nil
	}
	if h, ok := g.holds[ik]; ok && h.kind == holdFire {
		return g.holding(now, ik, h, in)
	}
	switch inst.State {
	case alerting.OK, alerting.Unknown, alerting.Suppressed: // the failure starts, or a hold has just lifted
	default:
		return "", nil // pending: the wait is over, its `for` runs
	}
	return g.startHold(now, newest(k, in), k, ik, holdFire, g.children[r.Name], in)
}

// holdResolve keeps a parent whose condition has cleared from resolving
// while it holds dependents back, until they have run again: once per
// incident.
func (g *engine) holdResolve(now time.Time, r *rules.Rule, k instanceKey, ik instKey, inst alerting.Instance, in inputs) (string, *recheck) {
	h, ok := g.holds[ik]
	switch {
	case g.noRechecks:
		return "", nil
	case ok && h.kind == holdResolve:
		why, rc := g.holding(now, ik, h, in)
		if why == "" {
			g.holds[ik] = hold{kind: resolveHeld, since: inst.FiredAt}
		}
		return why, rc
	case ok && h.kind == resolveHeld && h.since.Equal(inst.FiredAt), len(g.heldBack(r, k)) == 0:
		return "", nil
	}
	return g.startHold(now, newest(k, in), k, ik, holdResolve, g.children[r.Name], in)
}

// startHold begins holding ik until the targets on k's host of the rules
// awaited have results started at since or later, or for their longest
// timeout and a second. It returns "" when there is nothing to wait for.
func (g *engine) startHold(now, since time.Time, k instanceKey, ik instKey, kind holdKind, awaited []*rules.Rule, in inputs) (string, *recheck) {
	h := hold{kind: kind, since: since}
	var wait time.Duration
	for _, ar := range awaited {
		for _, t := range g.byHost[k.host] {
			if kind == holdFire {
				if inst, ok := g.instances[instKey{ar.Name, t.host, t.check}]; ok && inst.State != alerting.OK {
					continue // known to be failing already: it is held back, nothing to wait for
				}
			}
			if t != k && ar.Matches(t.host, t.check, nil) && !slices.Contains(h.awaited, t) {
				h.awaited = append(h.awaited, t)
				wait = max(wait, g.cfg.Checks[t.check].Timeout)
			}
		}
	}
	if !slices.ContainsFunc(h.awaited, func(t instanceKey) bool { return !g.seenSince(t, since, in) }) {
		return "", nil // every one has run since already
	}
	// The plugins run at once; allow their timeout and a second for the
	// results to come in.
	h.until = now.Add(wait + time.Second)
	g.holds[ik] = h
	return holdReason(h), &recheck{child: ik, targets: slices.Clone(h.awaited)}
}

// holding returns the reason while hold h of ik still waits for a result,
// or "" (and ends it) once every awaited target has been seen since it
// began or its time is up.
func (g *engine) holding(now time.Time, ik instKey, h hold, in inputs) (string, *recheck) {
	if now.Before(h.until) {
		for _, t := range h.awaited {
			if !g.seenSince(t, h.since, in) {
				return holdReason(h), nil
			}
		}
	}
	delete(g.holds, ik)
	return "", nil
}

// newest returns the start of k's newest result: the evidence a parent's
// new state rests on, which its dependents' results must be as new as.
func newest(k instanceKey, in inputs) time.Time {
	results, _ := in.results(k)
	var at time.Time
	for _, r := range results {
		if r.Start.After(at) {
			at = r.Start
		}
	}
	return at
}

// heldBack lists the instances of r's dependents on k's host that are held
// back now, by host and check.
func (g *engine) heldBack(r *rules.Rule, k instanceKey) []instKey {
	var out []instKey
	for _, c := range g.children[r.Name] {
		for _, t := range g.byHost[k.host] {
			ik := instKey{c.Name, t.host, t.check}
			if inst, ok := g.instances[ik]; ok && inst.State == alerting.Suppressed {
				out = append(out, ik)
			}
		}
	}
	return out
}

// noteHeld records, for each parent with an open incident, the dependents
// the evaluations of work found it holding back: some recover, and are
// forgotten, before the parent is seen back.
func (g *engine) noteHeld(work []todo) {
	note := func(parent instKey, child instKey) {
		if inst, ok := g.instances[parent]; ok && !inst.FiredAt.IsZero() && !slices.Contains(g.held[parent], child) {
			g.held[parent] = append(g.held[parent], child)
		}
	}
	for _, w := range work {
		if len(g.children[w.r.Name]) > 0 {
			for _, c := range g.heldBack(w.r, w.k) {
				note(instKey{w.r.Name, w.k.host, w.k.check}, c)
			}
		}
		ik := instKey{w.r.Name, w.k.host, w.k.check}
		if inst, ok := g.instances[ik]; !ok || inst.State != alerting.Suppressed {
			continue
		}
		for _, p := range w.r.Parents() {
			pr := g.set.Rule(p)
			for _, t := range g.byHost[w.k.host] {
				if pr != nil && pr.Matches(t.host, t.check, nil) {
					note(instKey{p, t.host, t.check}, ik)
				}
			}
		}
	}
}

// Annotations a parent's notifications carry about its dependents: whom a
// firing one holds back; whom a resolved one held back and which of them
// recovered with it or still fail (and page now in their own right).
const (
	AnnotationHeldBack     = "held_back"
	AnnotationRecovered    = "recovered_with_it"
	AnnotationStillFailing = "still_failing"
)

// nameDependents says in n, a notification of parent r on k, what it
// holds back, or of those it held back during its incident (was) which
// recovered with it.
func (g *engine) nameDependents(n *alerting.Notification, r *rules.Rule, k instanceKey, was []instKey) {
	if n.Annotations == nil {
		n.Annotations = make(map[string]string)
	}
	if n.Status == alerting.StatusFiring {
		if held := g.heldBack(r, k); len(held) > 0 {
			n.Annotations[AnnotationHeldBack] = fmt.Sprintf("%d held back: %s", len(held), listInstances(held))
		}
		return
	}
	var recovered, failing []instKey
	for _, ik := range was {
		if inst, ok := g.instances[ik]; ok && inst.State != alerting.OK && inst.State != alerting.Pending {
			failing = append(failing, ik)
		} else {
			recovered = append(recovered, ik)
		}
	}
	if len(recovered) > 0 {
		n.Annotations[AnnotationRecovered] = fmt.Sprintf("%d: %s", len(recovered), listInstances(recovered))
	}
	if len(failing) > 0 {
		n.Annotations[AnnotationStillFailing] = fmt.Sprintf("%d: %s", len(failing), listInstances(failing))
	}
}

// listInstances names instances as "check on host", with the rule when it
// is not named after the check.
func listInstances(iks []instKey) string {
	iks = slices.SortedFunc(slices.Values(iks), func(a, b instKey) int {
		return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.check, b.check), cmp.Compare(a.rule, b.rule))
	})
	names := make([]string, len(iks))
	for i, ik := range iks {
		names[i] = ik.check + " on " + ik.host
		if ik.rule != ik.check {
			names[i] += " (" + ik.rule + ")"
		}
	}
	return strings.Join(names, ", ")
}

func holdReason(h hold) string {
	what := "dependent"
	if h.kind == holdParents {
		what = "parent"
	}
	return "waiting for " + what + " checks " + strings.Join(checkNames(h.awaited), ", ") + " to run again"
}

func checkNames(ts []instanceKey) []string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.check
	}
	return names
}

// seenSince reports whether some observer has a result for t started at or
// after since.
func (g *engine) seenSince(t instanceKey, since time.Time, in inputs) bool {
	results, _ := in.results(t)
	for _, r := range results {
		if !r.Start.Before(since) {
			return true
		}
	}
	return false
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
