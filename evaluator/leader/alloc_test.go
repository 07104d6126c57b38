package leader

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/rules"
)

// healthyEngine is an engine over depRules and the default rule with
// hosts × (ping, http, disk) targets, every one OK on three observers,
// and inputs that allocate nothing of their own.
func healthyEngine(t *testing.T, hosts int, now time.Time) (*engine, []instanceKey, inputs) {
	t.Helper()
	set, err := rules.Parse("deps.yaml", []byte(depRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Checks: map[string]*config.Check{}}
	for _, n := range []string{"disk", "http", "ping"} {
		cfg.Checks[n] = &config.Check{Name: n, Interval: time.Minute, Timeout: 10 * time.Second, Quorum: 2}
	}
	results := map[instanceKey][]check.Result{}
	var targets []instanceKey
	for h := range hosts {
		host := fmt.Sprintf("h%04d", h)
		for _, n := range []string{"disk", "http", "ping"} {
			cfg.Targets = append(cfg.Targets, config.Target{Host: host, Check: cfg.Checks[n]})
			k := instanceKey{host, n}
			targets = append(targets, k)
			for _, obs := range []string{"ap-1", "eu-1", "us-1"} {
				results[k] = append(results[k], check.Result{Host: host, Check: n, Observer: obs, Status: check.OK,
					Output: "output", Start: now.Add(-10 * time.Second)})
			}
		}
	}
	hist := [][]check.Status{nil, nil, nil}
	in := inputs{results: func(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status) {
		return append(rs, results[k]...), append(hs, hist...)
	}}
	return newEngine(cfg, set, 0, nil), targets, in
}

// TestHealthyPassAllocatesLittle: a pass over instances that stay healthy
// (most of them, at every pass) decides nothing, and must allocate next to
// nothing per instance: no labels, environment or index of the pass for
// each, as the leader of 100,000 checks makes such a pass every 5 s.
func TestHealthyPassAllocatesLittle(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	g, targets, in := healthyEngine(t, 500, now)
	if ds, _ := g.evaluate(now, targets, in); len(ds) != 0 {
		t.Fatalf("healthy pass decided %d transitions, want none", len(ds))
	}
	if n := len(g.instances); n != 0 {
		t.Fatalf("healthy pass kept %d instances, want none", n)
	}
	// The first pass has grown the engine's scratch; the next reuse it.
	allocs, bytes := allocsPerPass(func() { g.evaluate(now, targets, in) })
	// The floor is what the conditions themselves cost in expr's VM (it
	// boxes the fields it reads), over one reused environment.
	var env rules.Env
	var results []check.Result
	var hist [][]check.Status
	ruleOf := make([]*rules.Rule, len(targets)) // one rule each
	for i, k := range targets {
		ruleOf[i] = g.rulesFor(k)[0]
	}
	floorAllocs, floorBytes := allocsPerPass(func() {
		for i, k := range targets {
			c := g.cfg.Checks[k.check]
			results, hist = in.results(results[:0], hist[:0], k)
			env.Reset(k.host, k.check, results, now, c.Interval, c.Quorum, c.QuorumDomains)
			if _, err := ruleOf[i].Eval(env); err != nil {
				t.Error(err)
			}
		}
	})
	t.Logf("%d instances: %.0f allocs, %d bytes per pass; conditions alone %.0f allocs, %d bytes",
		len(targets), allocs, bytes, floorAllocs, floorBytes)
	// Deciding nothing costs a few allocations per pass (the closure, the
	// decisions' slices) beyond the conditions, not one per instance, and
	// less than a byte per instance on average.
	if allocs > floorAllocs+50 || bytes > floorBytes+uint64(len(targets)) {
		t.Errorf("a healthy pass over %d instances made %.0f allocations of %d bytes, want at most %.0f and %d",
			len(targets), allocs, bytes, floorAllocs+50, floorBytes+uint64(len(targets)))
	}
}

// allocsPerPass runs f a few times and returns the mean allocations and
// bytes allocated of one run, as testing.AllocsPerRun counts them.
func allocsPerPass(f func()) (allocs float64, bytes uint64) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const runs = 5
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / runs, (after.TotalAlloc - before.TotalAlloc) / runs
}
