package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/tsdb"
)

// MaxReplaySteps bounds the evaluations of one Replay, so that a long
// range with a short step is refused at once rather than running for hours.
const MaxReplaySteps = 100_000

// ErrUnknownRule is wrapped by Replay's error when ReplayOptions.Rules
// names a rule that does not exist.
var ErrUnknownRule = errors.New("no such rule")

// ReplayOptions say what Replay evaluates.
type ReplayOptions struct {
	// From and To bound the evaluation times, both included.
	From, To time.Time
	// Step is the time between two evaluations; 0 means the smallest
	// interval of the checks evaluated, the finest grain the history has.
	Step time.Duration
	// Rules names the rules to report ("default" for the default rule);
	// empty reports all. The rules they depend on are evaluated as well,
	// since their state suppresses the named ones.
	Rules []string
}

// ReplayResult is what the rules would have done over a stretch of
// history.
type ReplayResult struct {
	From  time.Time     `json:"from"`
	To    time.Time     `json:"to"`
	Step  time.Duration `json:"-"` // encoded as "step": "30s"
	Steps int           `json:"steps"`
	// Queries counts the TSDB queries made: the check history, then one
	// per metric and window of the rules' TSDB functions at every step.
	Queries int `json:"queries"`
	// Instances lists every reported rule instance, with or without
	// transitions, parents before children, then by host and check.
	Instances []ReplayInstance `json:"instances"`
	// Notes say where a replay necessarily differs from the daemon.
	Notes []string `json:"notes"`
}

// MarshalJSON encodes r with its step as a duration string.
func (r ReplayResult) MarshalJSON() ([]byte, error) {
	type plain ReplayResult
	return json.Marshal(struct {
		plain
		Step string `json:"step"`
	}{plain(r), r.Step.String()})
}

// ReplayInstance is the timeline of one rule instance.
type ReplayInstance struct {
	Rule  string `json:"rule"`
	Host  string `json:"host"`
	Check string `json:"check"`
	// State is the instance's state after the last step.
	State         alerting.State       `json:"state"`
	Transitions   []ReplayTransition   `json:"transitions"`
	Notifications []ReplayNotification `json:"notifications"`
}

// ReplayTransition is one change of state.
type ReplayTransition struct {
	At     time.Time      `json:"at"`
	From   alerting.State `json:"from"`
	To     alerting.State `json:"to"`
	Reason string         `json:"reason,omitempty"`
}

// ReplayNotification is a notification the daemon would have sent. Its ID
// is the one the daemon would have given it (alerting.NotificationID), so
// it can be looked up in a receiver's log.
type ReplayNotification struct {
	At        time.Time       `json:"at"`
	Status    alerting.Status `json:"status"`
	ID        string          `json:"id"`
	Summary   string          `json:"summary"`
	Receivers []string        `json:"receivers"`
}

// The ways a replay cannot be the daemon, said with every result.
const (
	noteOutput  = "plugin output is not stored in the TSDB: observers' outputs are empty in conditions and summaries"
	noteRecheck = "re-checks are not run (nothing can be re-run in the past): a child held back until its parents are re-checked " +
		"waits for their next scheduled result or the re-check deadline"
	noteStart = "every instance starts ok at the first step, as under a leader with no stored state: " +
		"an outage already under way appears to begin there"
	noteSilence = "silences and acknowledgements are not applied: what they held back shows as firing and notified"
)

// Replay evaluates set over the check history in q at every step from
// opt.From to opt.To, with the engine the daemon runs, and returns what
// each reported rule instance would have done. At each step, each
// observer's latest result per host×check (with its earlier statuses, for
// streak) is rebuilt from dmonitor.check.status and dmonitor.check.duration,
// as the daemon would have held it then, and the rules' TSDB functions are
// prefetched as a tick does. Re-checks the engine asks for are ignored, and
// a parent decides without waiting for its dependents to run again. An
// error means no result: bad options, a rule name not in set (wrapping
// ErrUnknownRule), a failed history query, or ctx ending.
func Replay(ctx context.Context, cfg *config.Config, set *rules.Set, q rules.Querier, opt ReplayOptions) (*ReplayResult, error) {
	g := newEngine(cfg, set, cfg.RepeatInterval, nil) // silences are not replayed
	g.noRechecks = true
	report, needed, err := replayRules(g, opt.Rules)
	if err != nil {
		return nil, err
	}
	var targets []instanceKey
	var maxInterval, minInterval time.Duration
	for _, t := range cfg.Targets {
		k := instanceKey{t.Host, t.Check.Name}
		if !slices.ContainsFunc(g.rulesFor(k), func(r *rules.Rule) bool { return needed[r.Name] }) {
			continue
		}
		targets = append(targets, k)
		iv := cfg.Checks[k.check].Interval
		maxInterval = max(maxInterval, iv)
		if minInterval == 0 || iv < minInterval {
			minInterval = iv
		}
	}
	step := opt.Step
	if step == 0 {
		step = cmpOr(minInterval, cfg.Interval)
	}
	switch {
	case opt.From.IsZero() || opt.To.IsZero():
		return nil, fmt.Errorf("replay: from and to are required")
	case opt.To.Before(opt.From):
		return nil, fmt.Errorf("replay: to %s is before from %s", opt.To.Format(time.RFC3339), opt.From.Format(time.RFC3339))
	case step <= 0:
		return nil, fmt.Errorf("replay: step must be positive, got %s", step)
	}
	if n := opt.To.Sub(opt.From) / step; n >= MaxReplaySteps {
		return nil, fmt.Errorf("replay: %s every %s is more than %d steps; take a larger step or a shorter range",
			opt.To.Sub(opt.From), step, MaxReplaySteps)
	}

	res := &ReplayResult{From: opt.From, To: opt.To, Step: step, Notes: []string{noteOutput, noteRecheck, noteStart, noteSilence}}
	// A result counts while younger than 2× its interval, and streak reads
	// up to MaxHistory runs before it: history from that far back makes the
	// first step decide as later ones do.
	h := &history{}
	if len(targets) > 0 {
		start := opt.From.Add(-time.Duration(rules.MaxHistory+2) * maxInterval)
		n, err := h.load(ctx, q, targets, start, opt.To)
		res.Queries += n
		if err != nil {
			return nil, err
		}
	}

	prefetch := false
	if set != nil {
		for name := range needed {
			if r := set.Rule(name); r != nil && len(r.Queries()) > 0 {
				prefetch = true
			}
		}
	}
	byKey := make(map[instKey]*ReplayInstance)
	res.Instances = g.replayInstances(targets, report)
	for i := range res.Instances {
		in := &res.Instances[i]
		byKey[instKey{in.Rule, in.Host, in.Check}] = in
	}
	for t := opt.From; !t.After(opt.To); t = t.Add(step) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h.advance(t)
		var data *rules.Data
		if prefetch {
			data = set.Prefetch(ctx, q, t)
			res.Queries += data.Queries()
			if err := ctx.Err(); err != nil {
				return nil, err // a cancelled query is not a rule's unknown
			}
		}
		// The re-checks are dropped: nothing can be re-run in the past, so
		// a held child waits for its parents' next scheduled results.
		ds, _ := g.evaluate(t, targets, inputs{results: h.latest, data: data})
		for _, d := range ds {
			in := byKey[instKey{d.inst.Rule, d.inst.Labels[alerting.LabelHost], d.inst.Labels[alerting.LabelCheck]}]
			if in == nil || d.tr == nil {
				continue // an instance not reported (a parent or a sibling on the same target), or nothing decided
			}
			if d.tr.From != d.tr.To {
				in.Transitions = append(in.Transitions, ReplayTransition{At: d.tr.At, From: d.tr.From, To: d.tr.To, Reason: d.tr.Reason})
			}
			if n := d.tr.Notification; n != nil {
				in.Notifications = append(in.Notifications, ReplayNotification{
					At: d.tr.At, Status: n.Status, ID: n.ID, Summary: n.Annotations[alerting.AnnotationSummary],
					Receivers: slices.Clone(receiversOf(d.rule)),
				})
			}
		}
		res.Steps++
	}
	for i := range res.Instances {
		in := &res.Instances[i]
		if inst, ok := g.instances[instKey{in.Rule, in.Host, in.Check}]; ok {
			in.State = inst.State
		}
	}
	return res, nil
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// replayRules returns the rules to report and the rules to evaluate: those
// and every rule they depend on, transitively.
func replayRules(g *engine, names []string) (report, needed map[string]bool, err error) {
	var all []*rules.Rule
	if g.set != nil {
		all = g.set.Rules()
	}
	if g.set == nil || g.set.Rule(g.def.Name) == nil {
		all = append(all, g.def)
	}
	byName := make(map[string]*rules.Rule, len(all))
	for _, r := range all {
		byName[r.Name] = r
	}
	report = make(map[string]bool)
	if len(names) == 0 {
		for name := range byName {
			report[name] = true
		}
	}
	var unknown []string
	for _, name := range names {
		if byName[name] == nil {
			unknown = append(unknown, fmt.Sprintf("%q", name))
			continue
		}
		report[name] = true
	}
	if len(unknown) > 0 {
		known := make([]string, 0, len(all))
		for _, r := range all {
			known = append(known, r.Name)
		}
		return nil, nil, fmt.Errorf("replay: %w %s (have %s)", ErrUnknownRule, strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	needed = make(map[string]bool)
	var need func(name string)
	need = func(name string) {
		if needed[name] {
			return
		}
		needed[name] = true
		if r := byName[name]; r != nil {
			for _, p := range r.Parents() {
				need(p)
			}
		}
	}
	for name := range report {
		need(name)
	}
	return report, needed, nil
}

// replayInstances lists the instances of the reported rules on targets,
// in the engine's order: parents first, the default rule last, then by
// host and check.
func (g *engine) replayInstances(targets []instanceKey, report map[string]bool) []ReplayInstance {
	rank := map[string]int{}
	if g.set != nil {
		for i, r := range g.set.Rules() {
			rank[r.Name] = i
		}
	}
	rank[g.def.Name] = len(rank)
	var out []ReplayInstance
	for _, k := range targets {
		for _, r := range g.rulesFor(k) {
			if report[r.Name] {
				out = append(out, ReplayInstance{Rule: r.Name, Host: k.host, Check: k.check, State: alerting.OK,
					Transitions: []ReplayTransition{}, Notifications: []ReplayNotification{}})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b ReplayInstance) int {
		if c := rank[a.Rule] - rank[b.Rule]; c != 0 {
			return c
		}
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Check, b.Check)
	})
	return out
}

// run is one plugin run as the TSDB recorded it.
type run struct {
	start, end time.Time // end: when the daemon had the result
	status     check.Status
}

// observerRuns are one observer's runs of one target, by start time, and
// how many of them are known at the current step.
type observerRuns struct {
	name  string
	runs  []run
	known int
}

// history is the check results of the replayed range, and each target's
// view of them at the current step, as the daemon's live table held it.
type history struct {
	targets map[instanceKey][]*observerRuns // each sorted by observer
}

// load reads the status and run time of every run of targets in
// [start, end] and returns the number of queries it made. Tags in the TSDB
// are sanitised (tsdb.SanitizeTag), so they are matched in that form.
func (h *history) load(ctx context.Context, q rules.Querier, targets []instanceKey, start, end time.Time) (int, error) {
	bySeries := make(map[instanceKey][]instanceKey)
	var checks []string
	for _, k := range targets {
		sk := instanceKey{tsdb.SanitizeTag(k.host), tsdb.SanitizeTag(k.check)}
		bySeries[sk] = append(bySeries[sk], k)
		if !slices.Contains(checks, sk.check) {
			checks = append(checks, sk.check)
		}
	}
	filters := []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "check", Expr: strings.Join(checks, "|")}}
	query := func(metric string) ([]tsdb.Series, error) {
		s, err := q.Query(ctx, tsdb.Query{Metric: metric, Filters: filters, Start: start, End: end, Aggregator: "none"})
		if err != nil {
			return nil, fmt.Errorf("replay: read %s from %s to %s: %w", metric, start.Format(time.RFC3339), end.Format(time.RFC3339), err)
		}
		return s, nil
	}
	statuses, err := query(observer.MetricCheckStatus)
	if err != nil {
		return 1, err
	}
	// The run time says when the daemon had each result, and so when it
	// went stale; without it a run counts from its start.
	durations, err := query(observer.MetricCheckDuration)
	if err != nil {
		return 2, err
	}
	type runKey struct {
		host, check, observer string
		at                    int64
	}
	took := make(map[runKey]time.Duration)
	for _, s := range durations {
		for _, p := range s.Samples {
			if !math.IsNaN(p.Value) && p.Value > 0 {
				took[runKey{s.Tags["host"], s.Tags["check"], s.Tags["observer"], p.Time.UnixNano()}] = time.Duration(p.Value * float64(time.Second))
			}
		}
	}
	h.targets = make(map[instanceKey][]*observerRuns)
	for _, s := range statuses {
		ks := bySeries[instanceKey{s.Tags["host"], s.Tags["check"]}]
		obs := s.Tags["observer"]
		if len(ks) == 0 || obs == "" {
			continue
		}
		runs := make([]run, 0, len(s.Samples))
		for _, p := range s.Samples {
			if math.IsNaN(p.Value) {
				continue
			}
			d := took[runKey{s.Tags["host"], s.Tags["check"], obs, p.Time.UnixNano()}]
			runs = append(runs, run{start: p.Time, end: p.Time.Add(d), status: check.Status(p.Value)})
		}
		slices.SortStableFunc(runs, func(a, b run) int { return a.start.Compare(b.start) })
		for _, k := range ks {
			list := h.targets[k]
			i, found := slices.BinarySearchFunc(list, obs, func(o *observerRuns, name string) int { return strings.Compare(o.name, name) })
			if found {
				// Two series for one observer (a tag outside ours told them
				// apart): merge them, as the live table would have.
				list[i].runs = append(list[i].runs, runs...)
				slices.SortStableFunc(list[i].runs, func(a, b run) int { return a.start.Compare(b.start) })
				continue
			}
			h.targets[k] = slices.Insert(list, i, &observerRuns{name: obs, runs: slices.Clone(runs)})
		}
	}
	return 2, nil
}

// advance makes the runs finished by t known. Steps only move forward.
func (h *history) advance(t time.Time) {
	for _, list := range h.targets {
		for _, o := range list {
			for o.known < len(o.runs) && !o.runs[o.known].end.After(t) {
				o.known++
			}
		}
	}
}

// latest returns what the daemon's live table would hold for k at the
// current step: each observer's latest known result, sorted by observer,
// and the statuses of its runs before it, newest first.
func (h *history) latest(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status) {
	for _, o := range h.targets[k] {
		if o.known == 0 {
			continue
		}
		last := o.runs[o.known-1]
		rs = append(rs, check.Result{Host: k.host, Check: k.check, Observer: o.name, Status: last.status,
			Raw: last.status.String(), ExitCode: int(last.status), Start: last.start, Duration: last.end.Sub(last.start)})
		var prev []check.Status
		for i := o.known - 2; i >= 0 && len(prev) < rules.MaxHistory; i-- {
			prev = append(prev, o.runs[i].status)
		}
		hs = append(hs, prev)
	}
	return rs, hs
}
