package coord

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/evaluator/leader"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func firing(host string, lastEval time.Time) alerting.Instance {
	return alerting.Instance{Rule: "default", State: alerting.Firing, ActiveAt: t0, FiredAt: t0, LastEval: lastEval,
		Labels: map[string]string{alerting.LabelHost: host, alerting.LabelCheck: "http"}}
}

// TestMirrorTakeOver: a leader taking over in redis mode writes back to
// Redis what this node's copy knows better: an instance Redis lacks (it came
// back empty) or holds older, and removes one this node resolved after
// Redis last heard of it. What Redis knows better stays.
func TestMirrorTakeOver(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	local, err := localstate.Open(filepath.Join(t.TempDir(), "state.db"), localstate.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	redis := leader.NewMemState()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Redis, as the last leader (epoch 1) left it.
	must(redis.TakeOver(ctx, 1))
	must(redis.Save(ctx, 1, "newer-in-redis", firing("a", t0.Add(50*time.Minute))))
	must(redis.Save(ctx, 1, "older-in-redis", firing("b", t0.Add(10*time.Minute))))
	must(redis.Save(ctx, 1, "resolved-here", firing("c", t0.Add(10*time.Minute))))
	must(redis.Save(ctx, 1, "resolved-before", firing("d", t0.Add(70*time.Minute))))
	// This node's copy: written at one hour (its clock), term 7 (degraded).
	must(local.TakeOver(ctx, 7))
	must(local.Save(ctx, 7, "newer-in-redis", firing("a", t0.Add(20*time.Minute))))
	must(local.Save(ctx, 7, "older-in-redis", firing("b", t0.Add(40*time.Minute))))
	must(local.Save(ctx, 7, "only-here", firing("e", t0.Add(30*time.Minute))))
	must(local.Delete(ctx, 7, "resolved-here"))   // at one hour, after Redis's 10 minutes
	must(local.Delete(ctx, 7, "resolved-before")) // at one hour, before Redis's 70 minutes

	m := MirrorState{Primary: redis, Local: local}
	must(m.TakeOver(ctx, 2))
	got, err := m.LoadAll(ctx)
	must(err)
	want := map[string]time.Time{
		"newer-in-redis":  t0.Add(50 * time.Minute), // Redis's kept
		"older-in-redis":  t0.Add(40 * time.Minute), // this node's written back
		"only-here":       t0.Add(30 * time.Minute), // restored into an empty slot
		"resolved-before": t0.Add(70 * time.Minute), // Redis heard of it later than this node resolved it
	}
	if len(got) != len(want) {
		t.Errorf("Redis holds %d instances after the takeover, want %d: %v", len(got), len(want), keys(got))
	}
	for k, at := range want {
		if inst, ok := got[k]; !ok || !inst.LastEval.Equal(at) {
			t.Errorf("%s: Redis holds %v (evaluated %v), want one evaluated %v", k, ok, inst.LastEval, at)
		}
	}
	if _, ok := got["resolved-here"]; ok {
		t.Error("an incident this node resolved after Redis last heard of it came back from Redis")
	}

	// Writes go to both, Redis first; a write Redis refuses (a newer
	// leader) does not land in the local copy either.
	must(m.Save(ctx, 2, "new", firing("f", now)))
	if all, _ := local.LoadAll(ctx); all["new"].Rule != "default" {
		t.Error("a write of the term is not in the local copy")
	}
	if err := m.Save(ctx, 1, "stale", firing("g", now)); err == nil {
		t.Fatal("a deposed leader's write was taken")
	}
	if all, _ := local.LoadAll(ctx); all["stale"].Rule != "" {
		t.Error("a write Redis refused landed in the local copy")
	}
}

func keys(m map[string]alerting.Instance) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
