package rules

import (
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/expr-lang/expr/vm"
)

// TestEnvReset: Reset gives what NewEnv gives, whatever env held before,
// and reuses its observers: the leader resets one environment for each of
// its instances at every pass.
func TestEnvReset(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	res := func(obs string, s check.Status) check.Result {
		return check.Result{Host: "www1", Check: "http", Observer: obs, Status: s, Output: obs, Start: now.Add(-time.Second)}
	}
	three := []check.Result{res("a", check.Critical), res("b", check.Critical), res("c", check.OK)}
	two := []check.Result{res("d", check.OK), res("e", check.Warning)}

	env, _ := NewEnv("db1", "ping", three, now, time.Minute, 2, 2)
	env.Observers[0].History = []check.Status{check.OK}
	env.Data = NewData(nil, nil)
	array := &env.Observers[0]
	known := env.Reset("www1", "http", two, now, time.Minute, 2, 1)
	want, wantKnown := NewEnv("www1", "http", two, now, time.Minute, 2, 1)
	if known != wantKnown || env.Host != want.Host || env.Check != want.Check || env.Failing != want.Failing ||
		env.Passing != want.Passing || env.Total != want.Total || env.Quorum != want.Quorum || env.Domains != want.Domains ||
		env.FailingDomains != want.FailingDomains || env.DownDomains != want.DownDomains || env.QuorumDomains != want.QuorumDomains ||
		env.Partial != want.Partial || env.Data != nil || len(env.Observers) != len(want.Observers) {
		t.Fatalf("Reset gave %+v (known %v), NewEnv %+v (known %v)", env, known, want, wantKnown)
	}
	for i := range env.Observers {
		if got, want := env.Observers[i], want.Observers[i]; got.Name != want.Name || got.Status != want.Status ||
			got.Output != want.Output || got.Fresh != want.Fresh || got.History != nil || got.statusValue() != want.statusValue() {
			t.Errorf("observer %d: got %+v, want %+v", i, got, want)
		}
	}
	if &env.Observers[0] != array {
		t.Error("Reset allocated observers though env's were large enough")
	}
	if allocs := testing.AllocsPerRun(10, func() { env.Reset("www1", "http", three, now, time.Minute, 2, 1) }); allocs != 0 {
		t.Errorf("Reset into a large enough env made %v allocations, want 0", allocs)
	}
}

// TestEvalAllocatesOnlyWhatTheProgramDoes: Eval costs the program's run,
// and not a copy of the environment on the heap per call.
func TestEvalAllocatesOnlyWhatTheProgramDoes(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	latest := []check.Result{{Observer: "a", Status: check.Critical, Start: now}, {Observer: "b", Status: check.OK, Start: now}}
	env, _ := NewEnv("www1", "http", latest, now, time.Minute, 2, 1)
	r := Default()
	var v vm.VM
	program := testing.AllocsPerRun(100, func() {
		if _, err := v.Run(r.program, &env); err != nil {
			t.Error(err)
		}
	})
	eval := testing.AllocsPerRun(100, func() {
		if _, err := r.Eval(env); err != nil {
			t.Error(err)
		}
	})
	if eval > program {
		t.Errorf("Eval made %v allocations, the program alone %v", eval, program)
	}
}
