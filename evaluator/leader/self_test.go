package leader

import (
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/evaluator/observer"
)

// notifications returns, by host, the status of each notification in ds
// of rule, with its summary.
func notifications(ds []decision, rule string) map[string]string {
	out := make(map[string]string)
	for _, d := range ds {
		if d.inst.Rule == rule && d.tr.Notification != nil {
			n := d.tr.Notification
			out[d.inst.Labels[alerting.LabelHost]] = string(n.Status) + ": " + n.Annotations[alerting.AnnotationSummary]
		}
	}
	return out
}

func report(node, chk string, s check.Status, out string) selfReport {
	return selfReport{node: node, result: check.Result{Host: node, Check: chk, Observer: node, Status: s, Output: out}}
}

// Each node's self checks raise and resolve their alerts; the config
// report is compared with the leader's; failing receiver queues alert
// and resolve once they deliver.
func TestSelfAlerts(t *testing.T) {
	g, _ := depEngine(t)
	g.cfg.Nodes = []string{"a", "b"}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	leaderCfg := check.Result{Observer: "a", Output: "config 1111"}
	reports := map[string][]selfReport{
		observer.SelfTSDB:   {report("a", observer.SelfTSDB, check.OK, "ok"), report("b", observer.SelfTSDB, check.Critical, "OpenTSDB unreachable: 120 points spooled")},
		observer.SelfConfig: {report("a", observer.SelfConfig, check.OK, "config 1111"), report("b", observer.SelfConfig, check.OK, "config 2222")},
	}
	ds := g.evaluateSelf(t0, reports, leaderCfg, map[string]string{"ops/webhook": "3 delivery attempts failed"})
	if got := notifications(ds, TSDBRule); len(got) != 1 || !strings.Contains(got["b"], "firing: b: OpenTSDB unreachable") {
		t.Errorf("tsdb alerts %v, want b firing with its output", got)
	}
	if got := notifications(ds, ConfigRule); len(got) != 1 || !strings.Contains(got["b"], "runs configuration config 2222, the leader a runs config 1111") {
		t.Errorf("config alerts %v, want b firing, naming both hashes", got)
	}
	if got := notifications(ds, ReceiverRule); len(got) != 1 || !strings.HasPrefix(got["ops/webhook"], "firing: notifications to ops/webhook keep failing") {
		t.Errorf("receiver alerts %v, want ops/webhook firing", got)
	}
	if r := g.ruleNamed(ReceiverRule); len(r.Notify) == 0 {
		t.Errorf("receiver-failing goes nowhere")
	}

	// Everything recovers: one resolved each.
	reports[observer.SelfTSDB][1] = report("b", observer.SelfTSDB, check.OK, "ok")
	reports[observer.SelfConfig][1] = report("b", observer.SelfConfig, check.OK, "config 1111")
	ds = g.evaluateSelf(t0.Add(10*time.Second), reports, leaderCfg, nil)
	for _, rule := range []string{TSDBRule, ConfigRule, ReceiverRule} {
		got := notifications(ds, rule)
		if len(got) != 1 {
			t.Errorf("%s after recovery: %v, want one resolved", rule, got)
		}
		for _, v := range got {
			if !strings.HasPrefix(v, "resolved") {
				t.Errorf("%s after recovery: %v, want resolved", rule, got)
			}
		}
	}
	if ds := g.evaluateSelf(t0.Add(20*time.Second), reports, leaderCfg, nil); len(ds) != 0 {
		t.Errorf("all well: %d decisions, want none", len(ds))
	}
	// A node removed from the configuration takes its self alerts along.
	if why := g.orphaned(instKey{TSDBRule, "c", observer.SelfTSDB}); !strings.Contains(why, "observer c was removed") {
		t.Errorf("orphaned(c's tsdb alert) = %q", why)
	}
	if why := g.orphaned(instKey{TSDBRule, "b", observer.SelfTSDB}); why != "" {
		t.Errorf("orphaned(b's tsdb alert) = %q, want still evaluated", why)
	}
}
