package observer

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmonitor/dmonitor/check"
)

// A plugin printing a new perfdata label on every run stops adding series
// at the limit; the labels stored before it keep being stored, and other
// checks have their own allowance.
func TestSeriesPerCheck(t *testing.T) {
	hits := prometheus.NewCounter(prometheus.CounterOpts{Name: "hits"})
	s := newSeriesLimit(3, hits, slog.New(slog.DiscardHandler))
	run := func(host string, labels ...string) []string {
		r := check.Result{Host: host, Check: "pids", Observer: "o", Start: time.Unix(1, 0)}
		for _, l := range labels {
			r.Perf = append(r.Perf, check.Perf{Label: l, Value: 1})
		}
		var stored []string
		for _, p := range s.admit(host, "pids", ResultPoints(nil, &r)) {
			if p.Metric == MetricCheckPerf {
				stored = append(stored, p.Tags["label"])
			}
		}
		return stored
	}
	for i := range 10 {
		run("a", fmt.Sprint("pid", i))
	}
	if got := fmt.Sprint(run("a", "pid0", "pid2", "pid9", "new")); got != "[pid0 pid2]" {
		t.Errorf("stored labels = %s, want the first three's only: [pid0 pid2]", got)
	}
	if got := testutil.ToFloat64(hits); got != 9 {
		t.Errorf("limit hits = %v, want 9 (7 runs past the limit, then pid9 and new)", got)
	}
	if got := fmt.Sprint(run("b", "x", "y")); got != "[x y]" {
		t.Errorf("another host's check stored %s, want [x y]", got)
	}
}
