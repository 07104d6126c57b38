package rules

import (
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

func TestDefaultRule(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	interval := time.Minute
	res := func(obs string, s check.Status, age time.Duration) check.Result {
		return check.Result{Host: "www1", Check: "http", Observer: obs, Status: s, Start: now.Add(-age)}
	}
	cases := []struct {
		name        string
		latest      []check.Result
		quorum      int
		wantKnown   bool
		wantFiring  bool
		wantFailing int
	}{
		// One observer, quorum 1: a critical result fires.
		{"single critical", []check.Result{res("a", check.Critical, time.Second)}, 1, true, true, 1},
		// One observer passing: no alert.
		{"single ok", []check.Result{res("a", check.OK, time.Second)}, 1, true, false, 0},
		// WARNING is not failing for the default rule.
		{"warning is not failing", []check.Result{res("a", check.Warning, time.Second)}, 1, true, false, 0},
		// One flaky observer out of three never makes a quorum of two.
		{"flaky observer", []check.Result{
			res("a", check.Critical, time.Second), res("b", check.OK, time.Second), res("c", check.OK, time.Second),
		}, 2, true, false, 1},
		// Two of three agree: outage.
		{"quorum reached", []check.Result{
			res("a", check.Critical, time.Second), res("b", check.Critical, time.Second), res("c", check.OK, time.Second),
		}, 2, true, true, 2},
		// A stale failing result does not count, leaving too few fresh observers: unknown.
		{"stale result is unknown", []check.Result{
			res("a", check.Critical, 3*interval), res("b", check.Critical, time.Second),
		}, 2, false, false, 1},
		// No result at all: unknown, never OK.
		{"no results", nil, 1, false, false, 0},
	}
	rule := Default()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, known := NewEnv("www1", "http", tc.latest, now, interval, tc.quorum, 1)
			if known != tc.wantKnown {
				t.Fatalf("known = %v, want %v", known, tc.wantKnown)
			}
			if env.Failing != tc.wantFailing {
				t.Errorf("failing = %d, want %d", env.Failing, tc.wantFailing)
			}
			got, err := rule.Eval(env)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.wantFiring {
				t.Errorf("condition = %v, want %v", got, tc.wantFiring)
			}
		})
	}
}

func TestCompileRejectsNonBool(t *testing.T) {
	_, err := Compile(Rule{Name: "bad", Expr: "failing + 1"})
	if err == nil {
		t.Fatal("a condition yielding int compiled")
	}
}

// TestFailureDomains: with quorum_domains 2, an outage needs failing
// observers in two domains; a domain whose every observer fails while too
// few domains fail is partial; an observer without a domain is a domain of
// its own.
func TestFailureDomains(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	res := func(obs, domain string, s check.Status) check.Result {
		return check.Result{Host: "www1", Check: "http", Observer: obs, Domain: domain, Status: s, Start: now.Add(-time.Second)}
	}
	const ok, crit = check.OK, check.Critical
	for _, tc := range []struct {
		name                    string
		latest                  []check.Result
		domains, failing, down  int
		wantOutage, wantPartial bool
	}{
		{"all pass", []check.Result{res("eu-1", "eu", ok), res("eu-2", "eu", ok), res("us-1", "us", ok)},
			2, 0, 0, false, false},
		{"one region's observers all fail: partial, no outage", []check.Result{res("eu-1", "eu", crit), res("eu-2", "eu", crit), res("us-1", "us", ok)},
			2, 1, 1, false, true},
		{"one observer of a region fails: neither", []check.Result{res("eu-1", "eu", crit), res("eu-2", "eu", ok), res("us-1", "us", ok)},
			2, 1, 0, false, false},
		{"both regions fail: outage", []check.Result{res("eu-1", "eu", crit), res("eu-2", "eu", crit), res("us-1", "us", crit)},
			2, 2, 2, true, false},
		{"no domains declared: each observer its own", []check.Result{res("a", "", crit), res("b", "", crit), res("c", "", ok)},
			3, 2, 2, true, false},
		{"one flaky observer, its own domain: not partial, below the quorum", []check.Result{res("a", "", crit), res("b", "", ok), res("c", "", ok)},
			3, 1, 1, false, false},
		{"a domain of one observer down: below the quorum, not partial", []check.Result{res("eu-1", "eu", crit), res("us-1", "us", ok), res("us-2", "us", ok)},
			2, 1, 1, false, false},
		{"an observer's own domain reads \"observer <name>\": one with that name declared is the same", []check.Result{res("a", "", crit), res("b", "observer a", crit), res("c", "", ok)},
			2, 1, 1, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, known := NewEnv("www1", "http", tc.latest, now, time.Minute, 2, 2)
			if !known {
				t.Fatal("unknown")
			}
			if env.Domains != tc.domains || env.FailingDomains != tc.failing || env.DownDomains != tc.down {
				t.Errorf("domains %d, failing %d, down %d; want %d, %d, %d", env.Domains, env.FailingDomains, env.DownDomains, tc.domains, tc.failing, tc.down)
			}
			if outage, err := Default().Eval(env); err != nil || outage != tc.wantOutage {
				t.Errorf("default rule: %v (%v), want %v", outage, err, tc.wantOutage)
			}
			if env.Partial != tc.wantPartial {
				t.Errorf("partial = %v, want %v", env.Partial, tc.wantPartial)
			}
		})
	}
}
