package leader

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/rules"
)

// This file is the engine's handling of depends_on: which parents hold a
// child back, the waits that make a page name its cause and its
// consequences, and what a parent's notifications say of its dependents.

// hold keeps an instance's decision back while related checks run again:
// a child's parents before it fires, so the page names the cause; a
// parent's dependents before it fires or resolves, so its notification
// names what it holds back and, at the end, what recovered with it.
type hold struct {
	kind         holdKind
	since, until time.Time
	awaited      []instanceKey // the targets re-checked
}

type holdKind int

const (
	holdParents holdKind = iota // a child before it fires
	holdFire                    // a parent before it fires
	holdResolve                 // a parent before it resolves
)

// maxAwaited bounds the targets one wait re-checks: a parent rule that
// selects a hundred hosts is decided on what is known, not re-run whole
// for each child.
const maxAwaited = 32

// down reports whether a parent instance in state s holds its children
// back: failing in any form, about to (pending), or not known to be fine.
func down(s alerting.State) bool {
	switch s {
	case alerting.Firing, alerting.Acknowledged, alerting.Silenced, alerting.Unknown, alerting.Suppressed,
		alerting.Flapping, alerting.Pending:
		return true
	}
	return false
}

// parentDown returns why the parents of r hold target k back, or "": a
// plain parent that is down, or a group of redundant parents none of which
// is available (each down).
func (g *engine) parentDown(r *rules.Rule, k instanceKey) string {
	for _, dep := range r.DependsOn {
		if why := g.depDown(dep, k); why != "" {
			return why
		}
	}
	return ""
}

// depDown returns why dependency dep holds target k back, or "" while one
// of its members is available.
func (g *engine) depDown(dep rules.Dependency, k instanceKey) string {
	whys := make([]string, 0, len(dep.Any))
	for _, p := range dep.Any {
		_, why := g.parentState(p, k)
		if why == "" {
			return "" // available: the group carries the load
		}
		whys = append(whys, why)
	}
	if len(whys) == 1 {
		return whys[0]
	}
	return "every redundant parent is down: " + strings.Join(whys, "; ")
}

// parentState returns the first instance of parent rule p that is down
// among p's targets for k (see parentTargets), and why; "" while p is
// available.
func (g *engine) parentState(p string, k instanceKey) (instKey, string) {
	for _, t := range g.parentTargets(p, k.host) {
		ik := instKey{p, t.host, t.check}
		if inst, ok := g.instances[ik]; ok && down(inst.State) {
			return ik, fmt.Sprintf("parent %q is %s on %s (%s)", p, inst.State, t.host, t.check)
		}
	}
	return instKey{}, ""
}

// parentTargets returns the targets through which parent rule p counts for
// a child on host: p's targets on that host, or, for a parent with none
// there (a rule about a shared router or a pair of balancers), all of its
// targets.
func (g *engine) parentTargets(p, host string) []instanceKey {
	all := g.targetsOf[p]
	i := slices.IndexFunc(all, func(t instanceKey) bool { return t.host == host })
	if i < 0 {
		return all
	}
	j := i
	for j < len(all) && all[j].host == host {
		j++
	}
	return all[i:j]
}

// holdForParents keeps a child that has just started failing from firing
// until its parents' checks have run again, so the page names the cause,
// not the symptom. It returns the reason while holding, and the re-check
// to ask for when the hold begins.
func (g *engine) holdForParents(now time.Time, r *rules.Rule, k instanceKey, ik instKey, inst alerting.Instance, in inputs) (string, *recheck) {
	h, holding := g.holds[ik]
	if holding && h.kind != holdParents {
		holding = false
	}
	switch {
	case len(r.DependsOn) == 0 || !inst.FiredAt.IsZero():
		if holding {
			delete(g.holds, ik)
		}
		return "", nil
	case holding:
		return g.holding(now, ik, h, in), nil
	case inst.State != alerting.OK && inst.State != alerting.Unknown:
		return "", nil // already past the start of this failure
	}
	var awaited []instanceKey
	for _, p := range r.Parents() {
		if ts := g.parentTargets(p, k.host); len(awaited)+len(ts) <= maxAwaited {
			awaited = append(awaited, ts...)
		}
	}
	return g.startHold(now, now, ik, holdParents, awaited, in)
}

// holdForDependents keeps a parent that is about to fire until the checks
// that depend on it on its host, and are not known to fail already, have
// run again, so its page names all it holds back. It returns the reason
// while holding, and the re-check to ask for when the hold begins.
func (g *engine) holdForDependents(now time.Time, r *rules.Rule, k instanceKey, ik instKey, inst alerting.Instance, in inputs) (string, *recheck) {
	h, holding := g.holds[ik]
	if holding && h.kind != holdFire {
		holding = false
	}
	switch {
	case g.noRechecks || len(g.children[r.Name]) == 0 || !inst.FiredAt.IsZero():
		if holding {
			delete(g.holds, ik)
		}
		return "", nil
	case holding:
		return g.holding(now, ik, h, in), nil
	}
	switch inst.State {
	case alerting.OK, alerting.Unknown, alerting.Suppressed: // the failure starts, or a hold has just lifted
	default:
		return "", nil // pending: the wait is over, its `for` runs
	}
	var awaited []instanceKey
	for _, c := range g.children[r.Name] {
		for _, t := range g.byHost[k.host] {
			if t == k || !c.Matches(t.host, t.check, nil) || slices.Contains(awaited, t) {
				continue
			}
			if inst, ok := g.instances[instKey{c.Name, t.host, t.check}]; ok && inst.State != alerting.OK {
				continue // known to be failing already: nothing to wait for
			}
			awaited = append(awaited, t)
		}
	}
	if len(awaited) > maxAwaited {
		awaited = awaited[:maxAwaited]
	}
	return g.startHold(now, newest(k, in), ik, holdFire, awaited, in)
}

// holdResolve reports whether a parent whose condition has cleared waits
// before resolving, once per incident, for the dependents it held back to
// run again; and the re-check to ask for when the wait begins.
func (g *engine) holdResolve(now time.Time, ik instKey, inst alerting.Instance, in inputs) (bool, *recheck) {
	if g.noRechecks {
		return false, nil
	}
	if h, ok := g.holds[ik]; ok && h.kind == holdResolve {
		if g.holding(now, ik, h, in) != "" {
			return true, nil
		}
		g.waited[ik] = inst.FiredAt
		return false, nil
	}
	if at, ok := g.waited[ik]; ok && at.Equal(inst.FiredAt) {
		return false, nil
	}
	var awaited []instanceKey
	for _, c := range g.dependentsOf(ik) {
		if t := (instanceKey{c.host, c.check}); !slices.Contains(awaited, t) && len(awaited) < maxAwaited {
			awaited = append(awaited, t)
		}
	}
	why, rc := g.startHold(now, newest(instanceKey{ik.host, ik.check}, in), ik, holdResolve, awaited, in)
	if why == "" {
		g.waited[ik] = inst.FiredAt
	}
	return why != "", rc
}

// startHold begins holding ik until every target awaited has a result
// started at since or later, or for their longest timeout and a second.
// It returns "" when every one has run since already.
func (g *engine) startHold(now, since time.Time, ik instKey, kind holdKind, awaited []instanceKey, in inputs) (string, *recheck) {
	if !slices.ContainsFunc(awaited, func(t instanceKey) bool { return !g.seenSince(t, since, in) }) {
		return "", nil
	}
	var wait time.Duration
	for _, t := range awaited {
		wait = max(wait, g.cfg.Checks[t.check].Timeout)
	}
	// The plugins run at once; allow their timeout and a second for the
	// results to come in.
	h := hold{kind: kind, since: since, until: now.Add(wait + time.Second), awaited: awaited}
	g.holds[ik] = h
	return holdReason(h), &recheck{child: ik, targets: slices.Clone(awaited)}
}

// holding returns the reason while hold h of ik still waits for a result,
// or "" (and ends it) once every awaited target has been seen since it
// began or its time is up.
func (g *engine) holding(now time.Time, ik instKey, h hold, in inputs) string {
	if now.Before(h.until) && slices.ContainsFunc(h.awaited, func(t instanceKey) bool { return !g.seenSince(t, h.since, in) }) {
		return holdReason(h)
	}
	delete(g.holds, ik)
	return ""
}

func holdReason(h hold) string {
	what := "dependent"
	if h.kind == holdParents {
		what = "parent"
	}
	names := make([]string, len(h.awaited))
	for i, t := range h.awaited {
		names[i] = t.check
	}
	return "waiting for " + what + " checks " + strings.Join(names, ", ") + " to run again"
}

// seenSince reports whether some observer has a result for t started at or
// after since.
func (g *engine) seenSince(t instanceKey, since time.Time, in inputs) bool {
	results, _ := in.results(nil, nil, t)
	for _, r := range results {
		if !r.Start.Before(since) {
			return true
		}
	}
	return false
}

// newest returns the start of k's newest result: the evidence a parent's
// new state rests on, which its dependents' results must be as new as.
func newest(k instanceKey, in inputs) time.Time {
	results, _ := in.results(nil, nil, k)
	var at time.Time
	for _, r := range results {
		if r.Start.After(at) {
			at = r.Start
		}
	}
	return at
}

// holdsBack reports whether parent, an instance that is down, is what
// holds child back: child is held back, and a dependency of its rule that
// names parent's rule is down through parent.
func (g *engine) holdsBack(parent, child instKey) bool {
	inst, ok := g.instances[child]
	c := g.ruleNamed(child.rule)
	if !ok || inst.State != alerting.Suppressed || c == nil {
		return false
	}
	k := instanceKey{child.host, child.check}
	for _, dep := range c.DependsOn {
		if !slices.Contains(dep.Any, parent.rule) || g.depDown(dep, k) == "" {
			continue
		}
		if slices.Contains(g.parentTargets(parent.rule, child.host), instanceKey{parent.host, parent.check}) {
			return true
		}
	}
	return false
}

// heldBack lists the dependents that parent, a parent instance, holds back
// now, on its host or, for a parent counted from other hosts, anywhere.
func (g *engine) heldBack(parent instKey) []instKey {
	var out []instKey
	for _, c := range g.children[parent.rule] {
		for _, t := range g.targetsOf[c.Name] {
			if ik := (instKey{c.Name, t.host, t.check}); g.holdsBack(parent, ik) {
				out = append(out, ik)
			}
		}
	}
	return out
}

// dependentsOf lists what parent held back during its open incident and
// holds back now.
func (g *engine) dependentsOf(parent instKey) []instKey {
	out := slices.Clone(g.held[parent])
	for _, c := range g.heldBack(parent) {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// noteHeld records, for each parent with an open incident, the dependents
// among work that it holds back: some recover, and are forgotten, before
// the parent is seen back, and its resolved still names them.
func (g *engine) noteHeld(work []todo) {
	for _, w := range work {
		child := instKey{w.r.Name, w.k.host, w.k.check}
		if inst, ok := g.instances[child]; !ok || inst.State != alerting.Suppressed {
			continue
		}
		for _, p := range w.r.Parents() {
			for _, t := range g.parentTargets(p, w.k.host) {
				parent := instKey{p, t.host, t.check}
				pi, ok := g.instances[parent]
				if ok && !pi.FiredAt.IsZero() && !slices.Contains(g.held[parent], child) && g.holdsBack(parent, child) {
					g.held[parent] = append(g.held[parent], child)
				}
			}
		}
	}
}

// nameDependents says in n, a notification of the parent instance ik,
// what it holds back (firing), or which of those it held back during its
// incident recovered with it and which still fail (resolved).
func (g *engine) nameDependents(n *alerting.Notification, ik instKey) {
	if n.Annotations == nil {
		n.Annotations = make(map[string]string)
	}
	if n.Status == alerting.StatusFiring {
		if held := g.heldBack(ik); len(held) > 0 {
			n.Annotations[alerting.AnnotationHeldBack] = fmt.Sprintf("%d held back: %s", len(held), listInstances(held))
		}
		return
	}
	var recovered, failing []instKey
	for _, c := range g.held[ik] {
		if inst, ok := g.instances[c]; ok && inst.State != alerting.OK {
			failing = append(failing, c)
		} else {
			recovered = append(recovered, c)
		}
	}
	if len(recovered) > 0 {
		n.Annotations[alerting.AnnotationRecovered] = fmt.Sprintf("%d: %s", len(recovered), listInstances(recovered))
	}
	if len(failing) > 0 {
		n.Annotations[alerting.AnnotationStillFailing] = fmt.Sprintf("%d: %s", len(failing), listInstances(failing))
	}
}

// listInstances names instances as "check on host", with the rule when it
// is not named after the check, sorted by host and check.
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
