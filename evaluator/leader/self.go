package leader

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/rules"
)

// The rules of the alerts dmonitor raises about itself from what each node
// reports of its own health (observer.SelfChecks); each instance's host is
// the node and its check the self check.
const (
	TSDBRule    = "tsdb-unhealthy"
	DiskRule    = "disk-nearly-full"
	PluginsRule = "plugin-missing"
	ConfigRule  = "config-differs"
	LateRule    = "checks-late"
	// ReceiverRule is raised by the leader from its own notification
	// queues: host is the receiver queue, check "notifications". It goes
	// to every receiver, so the ones that work say it.
	ReceiverRule = "receiver-failing"
)

// receiverCheck is the check label of ReceiverRule's instances.
const receiverCheck = "notifications"

// failingAttempts is how many delivery attempts in a row must fail before a
// receiver counts as failing: one refused connection is not an outage.
const failingAttempts = 3

// nodeSelfRules are the rules judged from the self checks, by check.
// reports is how many self check reports in a row must fail before the
// alert fires (its for: that many heartbeat intervals); 0 fires at once.
var nodeSelfRules = []struct {
	rule, check, severity, summary string
	reports                        int
}{
	{TSDBRule, observer.SelfTSDB, "warning", "the TSDB of {{ .host }} does not take its points", 0},
	{DiskRule, observer.SelfDisk, "warning", "the data directory of {{ .host }} is nearly full", 0},
	{PluginsRule, observer.SelfPlugins, "critical", "a check cannot run on {{ .host }}", 0},
	{ConfigRule, observer.SelfConfig, "warning", "{{ .host }} runs another configuration than the leader", 0},
	// One report's window (up to 10 s) can hold a burst: a confirmation
	// round, a plugin slow once.
	{LateRule, observer.SelfSchedule, "warning", "{{ .host }} runs its checks less often than configured", 3},
}

// BuiltinRules returns the names of the rules the leader raises on its
// own, which a rule file may not take (rules.Options.Reserved).
func BuiltinRules() []string {
	names := []string{rules.Default().Name, ObserverRule, RedisRule, PartialRule, NoLeaderRule, ReceiverRule}
	for _, s := range nodeSelfRules {
		names = append(names, s.rule)
	}
	return names
}

// ReceiverHealth is implemented by a term's Sender that can tell which of
// its receiver queues keep failing, each with what it says of them.
type ReceiverHealth interface {
	Failing(attempts int) map[string]string
}

// compileSelfRules returns the rules of the self alerts, by name.
func compileSelfRules(cfg *config.Config) map[string]*rules.Rule {
	out := make(map[string]*rules.Rule, len(nodeSelfRules)+1)
	compile := func(r rules.Rule) {
		c, err := rules.Compile(r)
		if err != nil {
			panic(err) // constants; failing to compile them is a bug
		}
		out[r.Name] = c
	}
	for _, s := range nodeSelfRules {
		compile(rules.Rule{Name: s.rule, Severity: s.severity, Notify: []string{config.DefaultReceiver}, Summary: s.summary,
			For: time.Duration(s.reports) * observer.HeartbeatInterval(cfg)})
	}
	every := append(slices.Collect(maps.Keys(cfg.Receivers)), config.DefaultReceiver)
	slices.Sort(every)
	compile(rules.Rule{Name: ReceiverRule, Severity: "critical", Notify: slices.Compact(every),
		Summary: "notifications to {{ .host }} keep failing"})
	return out
}

// selfAlert moves the instance of r on host's chk to what active says,
// summary saying why while it is; the shape of every alert dmonitor raises
// about itself.
func (g *engine) selfAlert(now time.Time, r *rules.Rule, host, chk string, active bool, summary string) []decision {
	ik := instKey{r.Name, host, chk}
	inst, ok := g.instances[ik]
	if !ok {
		if !active {
			return nil
		}
		inst = alerting.Instance{Rule: r.Name, Labels: map[string]string{
			alerting.LabelHost: host, alerting.LabelCheck: chk, alerting.LabelSeverity: r.Severity}}
	}
	in := alerting.Input{Active: active}
	if active {
		in.Annotations = map[string]string{alerting.AnnotationSummary: summary}
	}
	next, tr := inst.Next(now, in, alerting.Params{RepeatInterval: g.repeatInterval})
	if next.State == alerting.OK && next.FiredAt.IsZero() {
		delete(g.instances, ik)
	} else {
		g.instances[ik] = next
	}
	if tr == nil {
		return nil
	}
	return []decision{{rule: r, inst: next, tr: tr}}
}

// selfReport is one node's self check, as the leader judges it.
type selfReport struct {
	node   string
	result check.Result
}

// evaluateSelf raises or resolves the self alerts of the nodes' reports
// (the latest self check result of each node, fresh ones only: a node not
// heard from is observer-up's business) and of the receiver queues that
// keep failing. leaderConfig is the leader's own config report, which the
// others' are compared with; zero when it has none yet.
func (g *engine) evaluateSelf(now time.Time, reports map[string][]selfReport, leaderConfig check.Result, failing map[string]string) []decision {
	var out []decision
	for _, s := range nodeSelfRules {
		r := g.self[s.rule]
		for _, rep := range reports[s.check] {
			active, summary := rep.result.Status.Failing(), fmt.Sprintf("%s: %s", rep.node, rep.result.Output)
			if s.check == observer.SelfConfig {
				if leaderConfig.Output == "" {
					continue
				}
				active = rep.result.Output != leaderConfig.Output
				summary = fmt.Sprintf("observer %s runs configuration %s, the leader %s runs %s: reload it, or make the trees the same",
					rep.node, rep.result.Output, leaderConfig.Observer, leaderConfig.Output)
			}
			out = append(out, g.selfAlert(now, r, rep.node, s.check, active, summary)...)
		}
	}
	r := g.self[ReceiverRule]
	queues := make(map[string]string, len(failing))
	maps.Copy(queues, failing)
	for ik := range g.instances {
		if ik.rule == ReceiverRule {
			if _, ok := queues[ik.host]; !ok {
				queues[ik.host] = ""
			}
		}
	}
	for _, q := range slices.Sorted(maps.Keys(queues)) {
		why := queues[q]
		out = append(out, g.selfAlert(now, r, q, receiverCheck, why != "", fmt.Sprintf("notifications to %s keep failing: %s", q, why))...)
	}
	return out
}

// selfOrphaned says why the self alert instance ik is no longer evaluated,
// or "" when it still is; ok is false when ik is not a self alert.
func (g *engine) selfOrphaned(ik instKey) (why string, ok bool) {
	if ik.rule == ReceiverRule {
		return "", true // resolved by the next evaluation once not failing
	}
	if _, self := g.self[ik.rule]; !self {
		return "", false
	}
	switch {
	case len(g.cfg.Nodes) == 0 && g.cfg.Redis.URL != "":
		return "", true // observers join through Redis: any may report
	case len(g.cfg.Nodes) == 0 && ik.host == g.cfg.Observer, slices.Contains(g.cfg.Nodes, ik.host):
		return "", true
	}
	return fmt.Sprintf("observer %s was removed from the configuration", ik.host), true
}
