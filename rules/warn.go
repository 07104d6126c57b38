package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dmonitor/dmonitor/config"
)

// severities are the severities a rule is expected to name: those of the
// Prometheus and Alertmanager conventions, which receivers and Alertmanager
// routes match on, and which dmonitor's own alerts use. Any other loads,
// with a warning: it is most likely a typo that no route will match.
var severities = []string{"critical", "warning", "info"}

// instanceKeys are the keys an instance has for select to match: the
// evaluator matches rules on host and check alone (Set.Match without
// tags), so a select on any other key selects nothing.
var instanceKeys = []string{"host", "check"}

// targets is what a configuration offers select: its host×check targets
// and their distinct hosts and checks, sorted.
type targets struct {
	list          []config.Target
	hosts, checks []string
}

func newTargets(cfg *config.Config) *targets {
	tg := &targets{list: cfg.Targets}
	for _, t := range cfg.Targets {
		tg.hosts = append(tg.hosts, t.Host)
		tg.checks = append(tg.checks, t.Check.Name)
	}
	slices.Sort(tg.hosts)
	slices.Sort(tg.checks)
	tg.hosts, tg.checks = slices.Compact(tg.hosts), slices.Compact(tg.checks)
	return tg
}

// warnAll records the warnings of the rules of defs, which all loaded.
func (l *loader) warnAll(defs []*ruleDef) {
	var tg *targets
	if l.o.Config != nil {
		tg = newTargets(l.o.Config)
	}
	for _, def := range defs {
		d := &decoder{l: l, file: def.rule.File, src: def.src, rule: "rule " + strconv.Quote(def.rule.Name)}
		d.warnRule(def, tg)
	}
}

// warnRule warns about an unknown severity, select keys no instance has
// and, with the configuration's targets tg (nil when unknown), a select
// that matches none of them: at the key or glob that matches nothing when
// there is one, else at select.
func (d *decoder) warnRule(def *ruleDef, tg *targets) {
	r := &def.rule
	if def.severity != nil && !slices.Contains(severities, r.Severity) {
		d.warnf(def.severity, "severity: unknown severity %q%s: want %s", r.Severity, didYouMean(r.Severity, severities), orList(severities))
	}
	unknown := false
	for _, k := range def.selKeys {
		if !slices.Contains(instanceKeys, k.Value) {
			unknown = true
			d.warnf(k, "select: unknown key %q%s: an instance has only %s, so this rule selects nothing",
				k.Value, didYouMean(k.Value, instanceKeys), strings.Join(instanceKeys, " and "))
		}
	}
	if unknown || tg == nil {
		return
	}
	if len(tg.list) == 0 {
		d.warnf(def.name, "selects nothing: the configuration has no checks")
		return
	}
	keyMisses := false
	for _, k := range def.selKeys {
		values := tg.hosts
		if k.Value == "check" {
			values = tg.checks
		}
		globs := r.Select[k.Value]
		if slices.ContainsFunc(values, func(v string) bool { return matchAny(globs, v) }) {
			continue
		}
		keyMisses = true
		at, hint := k, ""
		if nodes := def.selGlobs[k.Value]; len(nodes) > 0 {
			at = nodes[0]
		}
		if len(globs) == 1 && !strings.ContainsAny(globs[0], `*?[\`) {
			hint = didYouMean(globs[0], values)
		}
		switch len(globs) {
		case 0:
			d.warnf(at, "select: %s: an empty list matches no %s, so this rule selects nothing", k.Value, k.Value)
		case 1:
			d.warnf(at, "select: %s: %q matches no %s of the configuration%s", k.Value, globs[0], k.Value, hint)
		default:
			d.warnf(at, "select: %s: none of %s matches a %s of the configuration", k.Value, quoteAll(globs), k.Value)
		}
	}
	if keyMisses || slices.ContainsFunc(tg.list, func(t config.Target) bool { return r.Matches(t.Host, t.Check.Name, nil) }) {
		return
	}
	// Every key matches some target, but no target matches them all.
	d.warnf(def.sel, "select: selects nothing: no host matching %s has a check matching %s in the configuration",
		quoteAll(r.Select["host"]), quoteAll(r.Select["check"]))
}

// didYouMean returns ` (did you mean "x"?)` for the candidate x nearest to
// word by edit distance (letter case aside), when it is near enough to be
// the likely intent, else "".
func didYouMean(word string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		if c == word {
			continue
		}
		if dist := editDistance(strings.ToLower(word), strings.ToLower(c)); bestDist < 0 || dist < bestDist {
			best, bestDist = c, dist
		}
	}
	// One edit in a short word, two in one of six letters or more: further
	// than that, a suggestion is a guess.
	if bestDist < 0 || bestDist > max(1, min(2, len([]rune(word))/3)) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the optimal string alignment distance of a and b: the
// insertions, deletions, substitutions and transpositions of adjacent
// runes that turn one into the other, so "hots" is one edit from "host".
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows of the dynamic programming table: two back for the
	// transposition.
	prev2, prev, cur := make([]int, len(rb)+1), make([]int, len(rb)+1), make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// quoteAll writes each of globs quoted, separated by commas.
func quoteAll(globs []string) string {
	q := make([]string, len(globs))
	for i, g := range globs {
		q[i] = strconv.Quote(g)
	}
	return strings.Join(q, ", ")
}
