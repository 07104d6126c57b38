package rules

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/expr-lang/expr"
)

// countingQuerier counts the queries it passes on to a real store.
type countingQuerier struct {
	Querier
	n atomic.Int64
}

func (c *countingQuerier) Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	c.n.Add(1)
	return c.Querier.Query(ctx, q)
}

// TestPrefetchEmbedded runs the TSDB functions against the embedded store:
// points written through its Append, fetched by Prefetch with one query per
// metric and window, and computed per instance.
func TestPrefetchEmbedded(t *testing.T) {
	ctx := context.Background()
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	now := time.Now().Truncate(time.Second)
	var points []tsdb.Point
	add := func(metric string, tags map[string]string, ago time.Duration, v float64) {
		points = append(points, tsdb.Point{Metric: metric, Tags: tags, Time: now.Add(-ago), Value: v})
	}
	cpu0 := map[string]string{"host": "www1", "cpu": "0"}
	cpu1 := map[string]string{"host": "www1", "cpu": "1"}
	add("sys.cpu.user", cpu0, 4*time.Minute, 80)
	add("sys.cpu.user", cpu0, 2*time.Minute, 90)
	add("sys.cpu.user", cpu1, 1*time.Minute, 100)
	add("sys.cpu.user", cpu0, 20*time.Minute, 1000) // outside 5m, inside 30m
	add("sys.cpu.user", map[string]string{"host": "www2", "cpu": "0"}, time.Minute, 5)
	// A counter that restarts: 100 → 160 (+60), reset, → 30 (+30): 90 over 120 s.
	req := map[string]string{"host": "www1", "path": "/api/v1"}
	add("nginx.requests", req, 2*time.Minute, 100)
	add("nginx.requests", req, 1*time.Minute, 160)
	add("nginx.requests", req, 0, 30)
	if err := store.Append(ctx, points); err != nil {
		t.Fatal(err)
	}

	src := `rules:
  - name: r
    expr: 'avg("sys.cpu.user", {"host": host}, "5m") > 0 && max("sys.cpu.user", {}, "5m") > 0 && min("sys.cpu.user", {"host": host}, "30m") > 0'
  - name: r2
    expr: 'avg("sys.cpu.user", {"host": "www2"}, "300s") > 0 || rate("nginx.requests", {"path": "/api/*"}, "5m") > 0'
`
	set, err := Parse("test.yaml", []byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// 5m and 300s are one window; 30m another; nginx.requests a third.
	if got := len(set.Queries()); got != 3 {
		t.Fatalf("Queries() = %v, want 3", set.Queries())
	}
	q := &countingQuerier{Querier: store}
	data := set.Prefetch(ctx, q, now)
	if got := q.n.Load(); got != 3 || data.Queries() != 3 {
		t.Errorf("queries = %d (Data says %d), want 3", got, data.Queries())
	}

	cases := []struct {
		name string
		expr string
		want float64
	}{
		// Mean of every sample of both www1 series in the window.
		{"avg", `avg("sys.cpu.user", {"host": "www1"}, "5m")`, 90},
		{"min", `min("sys.cpu.user", {"host": "www1"}, "5m")`, 80},
		{"max", `max("sys.cpu.user", {"host": "www1"}, "5m")`, 100},
		{"sum", `sum("sys.cpu.user", {"host": "www1"}, "5m")`, 270},
		// The newest sample across the matching series: cpu1's.
		{"last", `last("sys.cpu.user", {"host": "www1"}, "5m")`, 100},
		{"count", `count("sys.cpu.user", {"host": "www1"}, "5m")`, 3},
		// Two tags: only cpu 0.
		{"two tags", `avg("sys.cpu.user", {"host": "www1", "cpu": "0"}, "5m")`, 85},
		// The longer window reaches the old sample.
		{"window", `max("sys.cpu.user", {"host": "www1"}, "30m")`, 1000},
		// A wildcard tag value.
		{"wildcard", `count("sys.cpu.user", {"host": "www*"}, "5m")`, 4},
		// No filter: every series.
		{"no filter", `count("sys.cpu.user", {}, "5m")`, 4},
		// The counter reset counted as a restart from zero.
		{"rate", `rate("nginx.requests", {"path": "/api/*"}, "5m")`, 90.0 / 120},
		// Nothing matches: NaN.
		{"no data", `avg("sys.cpu.user", {"host": "db1"}, "5m")`, math.NaN()},
		{"count no data", `count("sys.cpu.user", {"host": "db1"}, "5m")`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := evalNumber(t, data, tc.expr)
			if got != tc.want && !(math.IsNaN(got) && math.IsNaN(tc.want)) && math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("%s = %v, want %v", tc.expr, got, tc.want)
			}
		})
	}

	// A query that fails makes the instance unknown with an error naming
	// the metric and window; the real store fails once closed.
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	failed := set.Prefetch(ctx, store, now)
	env := Env{Host: "www1", Check: "cpu", Quorum: 1, Total: 1, Data: failed}
	_, err = set.Rule("r").Eval(env)
	var qe *QueryError
	if !errors.As(err, &qe) || qe.Metric != "sys.cpu.user" || qe.Window != 5*time.Minute {
		t.Fatalf("Eval with a failed query = %v, want a QueryError for sys.cpu.user over 5m", err)
	}
	if failed.Err("sys.cpu.user", 5*time.Minute) == nil {
		t.Error("Data.Err is nil for a failed query")
	}
}

// evalNumber evaluates the numeric expression src over d, compiled as a
// condition is but yielding a float64.
func evalNumber(t *testing.T, d *Data, src string) float64 {
	t.Helper()
	c, probs := compileExpr(src, expr.AsFloat64())
	if probs != nil {
		t.Fatalf("%s: %v", src, probs)
	}
	out, err := expr.Run(c.program, &Env{Data: d})
	if err != nil {
		t.Fatal(err)
	}
	return out.(float64)
}

// TestQueryMissingData: a rule evaluated without this tick's data is
// unknown, not false.
func TestQueryMissingData(t *testing.T) {
	r, err := Compile(Rule{Name: "cpu", Expr: `avg("sys.cpu.user", {"host": host}, "5m") > 90`})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Eval(Env{Host: "www1"})
	var qe *QueryError
	if !errors.As(err, &qe) {
		t.Fatalf("Eval without Data = %v, want a QueryError", err)
	}
	if want := `rule "cpu": query sys.cpu.user over 5m0s: not prefetched for this tick`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// TestStreak: the largest N such that a quorum of fresh observers each
// returned the status on their last N runs.
func TestStreak(t *testing.T) {
	obs := func(fresh bool, latest check.Status, earlier ...check.Status) Observer {
		return Observer{Status: latest.String(), status: latest, Fresh: fresh, History: earlier}
	}
	C, O := check.Critical, check.OK
	cases := []struct {
		name   string
		obs    []Observer
		quorum int
		want   int
	}{
		// Runs of 3 and 2: two observers agree on 2.
		{"quorum takes the second longest", []Observer{obs(true, C, C, C), obs(true, C, C, O), obs(true, O)}, 2, 2},
		// Quorum 1: the longest run.
		{"quorum one", []Observer{obs(true, C, C, C), obs(true, O)}, 1, 3},
		// A stale observer does not count.
		{"stale ignored", []Observer{obs(true, C, C, C), obs(false, C, C, C)}, 2, 0},
		// The latest result breaks the run.
		{"latest ok", []Observer{obs(true, O, C, C), obs(true, O, C, C)}, 2, 0},
		// History beyond MaxHistory is not read.
		{"capped", []Observer{obs(true, C, make([]check.Status, 40)...)}, 1, 1},
	}
	for i := range cases[4].obs[0].History {
		cases[4].obs[0].History[i] = C
	}
	cases[4].want = MaxHistory + 1
	r, err := Compile(Rule{Name: "s", Expr: `streak("CRITICAL") >= 0`})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := Env{Observers: tc.obs, Quorum: tc.quorum}
			if got := env.streak(check.Critical); got != tc.want {
				t.Errorf("streak = %d, want %d", got, tc.want)
			}
			if ok, err := r.Eval(env); err != nil || !ok {
				t.Errorf("Eval = %v, %v", ok, err)
			}
		})
	}
}
