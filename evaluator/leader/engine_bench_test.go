package leader

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/rules"
	"github.com/dmonitor/dmonitor/tsdb"
)

const benchRules = `
rules:
  - name: host-up
    select: {check: ping}
  - name: www-http
    select: {check: http}
    depends_on: [host-up]
    summary: "{{ .host }} {{ .check }} down from {{ .failing }} of {{ .total }} observers"
  - name: cpu-busy
    select: {check: load}
    expr: 'avg("sys.cpu.user", {"host": host}, "5m") > 90'
`

// seriesQuerier answers every query with the same prepared series.
type seriesQuerier []tsdb.Series

func (q seriesQuerier) Query(context.Context, tsdb.Query) ([]tsdb.Series, error) { return q, nil }

// BenchmarkEngineTick is the leader's full evaluation of 10,000 rule
// instances (2,500 hosts × ping, http, load, disk) with 3 observers each:
// environments, conditions (one reading the TSDB through prefetched data),
// dependencies, templates and state transitions. TSDB I/O is excluded: the
// prefetch is answered from memory, and the queries it makes per tick are
// reported. Run with -cpu 1 for the one-core figure.
func BenchmarkEngineTick(b *testing.B) {
	set, err := rules.Parse("bench.yaml", []byte(benchRules), rules.Options{})
	if err != nil {
		b.Fatal(err)
	}
	checks := map[string]*config.Check{}
	for _, n := range []string{"ping", "http", "load", "disk"} {
		checks[n] = &config.Check{Name: n, Interval: time.Minute, Timeout: 10 * time.Second, Quorum: 2}
	}
	cfg := &config.Config{Checks: checks}
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	results := map[instanceKey][]check.Result{}
	var cpu seriesQuerier
	for h := range 2500 {
		host := fmt.Sprintf("h%04d", h)
		for _, n := range []string{"disk", "http", "load", "ping"} {
			cfg.Targets = append(cfg.Targets, config.Target{Host: host, Check: checks[n]})
			var rs []check.Result
			for o, obs := range []string{"ap-1", "eu-1", "us-1"} {
				s := check.OK
				if h%10 == 0 && o < 2 { // a tenth of the hosts down on two observers
					s = check.Critical
				}
				rs = append(rs, check.Result{Host: host, Check: n, Observer: obs, Status: s, Output: "output",
					Start: now.Add(-10 * time.Second)})
			}
			results[instanceKey{host, n}] = rs
		}
		cpu = append(cpu, tsdb.Series{Metric: "sys.cpu.user", Tags: map[string]string{"host": host},
			Samples: []tsdb.Sample{{Time: now.Add(-time.Minute), Value: 50}, {Time: now, Value: 95}}})
	}
	hist := [][]check.Status{nil, nil, nil}
	in := inputs{results: func(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status) {
		return append(rs, results[k]...), append(hs, hist...)
	}}
	targets := make([]instanceKey, len(cfg.Targets))
	for i, t := range cfg.Targets {
		targets[i] = instanceKey{t.Host, t.Check.Name}
	}
	g := newEngine(cfg, set, 0, nil)
	queries := 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t := now.Add(time.Duration(i) * time.Second)
		in.data = set.Prefetch(context.Background(), cpu, t)
		queries = in.data.Queries()
		g.evaluate(t, targets, in)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/tick")
	b.ReportMetric(float64(queries), "queries/tick")
	b.ReportMetric(float64(len(targets)), "instances")
}
