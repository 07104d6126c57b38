package rules

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/tsdb"
)

// BenchmarkTick evaluates one tick of 10,000 rule instances with 3
// observers each: a quarter of them (check disk) under a rule reading
// dmonitor.check.perf over 15 minutes from prefetched series, the rest
// under a quorum rule with a template or the default rule. A tick is
// Prefetch from a Querier with the answer ready (no I/O; indexing
// the 7,500 series is counted) and, per instance, NewEnv from check results and Eval. It
// reports ms/tick, queries/tick, and the ratio of a tick to a baseline
// measured in the same run: building the environments alone (x_env_only).
func BenchmarkTick(b *testing.B) {
	const hosts = 2500 // × 4 checks = 10,000 instances
	src := `rules:
  - name: www-http
    select: {check: http}
    for: 30s
    summary: "{{ .host }} {{ .check }} down from {{ .failing }} of {{ .total }} observers"
  - name: load
    select: {check: load}
    expr: streak("CRITICAL") >= 3
  - name: disk-root
    select: {check: disk}
    expr: >-
      failing >= quorum ||
      avg("dmonitor.check.perf", {"host": host, "check": "disk", "label": "/"}, "15m") > 50e9
`
	set, err := Parse("bench.yaml", []byte(src), Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	type instance struct {
		host, check string
		rule        *Rule
		latest      []check.Result
	}
	var instances []instance
	var series []tsdb.Series
	def := Default()
	for h := range hosts {
		host := fmt.Sprintf("host%04d", h)
		for _, c := range []string{"http", "load", "disk", "ping"} {
			rule := def
			if m := set.Match(host, c, nil); len(m) > 0 {
				rule = m[0]
			}
			inst := instance{host: host, check: c, rule: rule}
			for o := range 3 {
				st := check.OK
				if (h+o)%7 == 0 {
					st = check.Critical
				}
				inst.latest = append(inst.latest, check.Result{Host: host, Check: c, Observer: fmt.Sprintf("obs%d", o),
					Status: st, Output: "OK - fine", Start: now.Add(-20 * time.Second), Duration: time.Second})
			}
			instances = append(instances, inst)
		}
		for o := range 3 {
			s := tsdb.Series{Metric: "dmonitor.check.perf", Tags: map[string]string{
				"host": host, "check": "disk", "label": "/", "observer": fmt.Sprintf("obs%d", o)}}
			for i := range 15 {
				s.Samples = append(s.Samples, tsdb.Sample{Time: now.Add(-time.Duration(14-i) * time.Minute), Value: float64(h) * 4e7})
			}
			series = append(series, s)
		}
	}
	q := &fixedQuerier{series: series}
	ctx := context.Background()

	history := []check.Status{check.Critical, check.Critical}
	tick := func(eval bool) int {
		var data *Data
		if eval {
			data = set.Prefetch(ctx, q, now)
		}
		fired := 0
		for _, in := range instances {
			env, known := NewEnv(in.host, in.check, in.latest, now, time.Minute, 2, 1)
			if !eval || !known {
				continue
			}
			for i := range env.Observers {
				env.Observers[i].History = history
			}
			env.Data = data
			ok, err := in.rule.Eval(env)
			if err != nil {
				b.Fatal(err)
			}
			if ok {
				fired++
			}
		}
		return fired
	}
	if tick(true) == 0 {
		b.Fatal("nothing fires: the benchmark would measure short cuts")
	}
	// The baseline: building the environments alone, no Prefetch, no Eval.
	const baseRuns = 20
	start := time.Now()
	for range baseRuns {
		tick(false)
	}
	base := time.Since(start) / baseRuns

	q.n.Store(0)
	b.ResetTimer()
	for b.Loop() {
		tick(true)
	}
	perTick := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perTick.Microseconds())/1000, "ms/tick")
	b.ReportMetric(float64(q.n.Load())/float64(b.N), "queries/tick")
	b.ReportMetric(float64(perTick)/float64(base), "x_env_only")
	b.ReportMetric(float64(len(instances)), "instances")
}

// fixedQuerier answers every query with the same prepared series, so that
// the benchmark measures dmonitor's work, not a store's.
type fixedQuerier struct {
	series []tsdb.Series
	n      atomic.Int64
}

func (f *fixedQuerier) Query(context.Context, tsdb.Query) ([]tsdb.Series, error) {
	f.n.Add(1)
	return f.series, nil
}
