package coord

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/alerting/redisstate"
	"github.com/dmonitor/dmonitor/internal/redistest"
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
	redis := redisstate.New(redistest.Start(t).Client(t), redisstate.Options{})

	// Redis, as the last leader (epoch 1) left it.
	must(t, redis.TakeOver(ctx, 1))
	must(t, redis.Save(ctx, 1, "newer-in-redis", firing("a", t0.Add(50*time.Minute))))
	must(t, redis.Save(ctx, 1, "older-in-redis", firing("b", t0.Add(10*time.Minute))))
	must(t, redis.Save(ctx, 1, "resolved-here", firing("c", t0.Add(10*time.Minute))))
	must(t, redis.Save(ctx, 1, "resolved-before", firing("d", t0.Add(70*time.Minute))))
	// This node's copy: written at one hour (its clock), term 7 (degraded).
	must(t, local.TakeOver(ctx, 7))
	must(t, local.Save(ctx, 7, "newer-in-redis", firing("a", t0.Add(20*time.Minute))))
	must(t, local.Save(ctx, 7, "older-in-redis", firing("b", t0.Add(40*time.Minute))))
	must(t, local.Save(ctx, 7, "only-here", firing("e", t0.Add(30*time.Minute))))
	must(t, local.Delete(ctx, 7, "resolved-here"))   // at one hour, after Redis's 10 minutes
	must(t, local.Delete(ctx, 7, "resolved-before")) // at one hour, before Redis's 70 minutes

	m := MirrorState{Primary: redis, Local: local}
	must(t, m.TakeOver(ctx, 2))
	got, err := m.LoadAll(ctx)
	must(t, err)
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
	if _, settled, err := redis.Snapshot(ctx); err != nil || !settled {
		t.Errorf("after the takeover Redis is settled %v (%v), want true: the other nodes would never copy it", settled, err)
	}

	// Writes go to both, Redis first; a write Redis refuses (a newer
	// leader) does not land in the local copy either.
	must(t, m.Save(ctx, 2, "new", firing("f", now)))
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

// TestMirrorFollowerWaitsForSettle: a follower copies Redis's alert state
// only once the leader has reconciled it. Read between a new leader's fence
// and its write-back, an empty Redis (restarted without persistence) would
// mark every incident this node knows resolved, and if this node led next,
// none of them would ever get its resolved notification.
func TestMirrorFollowerWaitsForSettle(t *testing.T) {
	ctx := context.Background()
	redis := redisstate.New(redistest.Start(t).Client(t), redisstate.Options{})
	local, err := localstate.Open(filepath.Join(t.TempDir(), "state.db"), localstate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	paged := firing("a", t0)
	must(t, local.TakeOver(ctx, 1))
	must(t, local.Save(ctx, 1, "paged", paged))
	isOpen := func() bool {
		all, err := local.LoadAll(ctx)
		must(t, err)
		_, ok := all["paged"]
		return ok
	}

	// Redis came back empty; a new leader has fenced it and not yet
	// written back what it lost.
	must(t, redis.TakeOver(ctx, 2))
	must(t, mirrorOnce(ctx, redis, local))
	if !isOpen() {
		t.Fatal("the follower took an empty Redis that no leader had reconciled for a resolved incident")
	}
	// The leader writes the incident back and settles; then resolves it.
	must(t, redis.Save(ctx, 2, "paged", paged))
	must(t, redis.Settle(ctx, 2))
	must(t, mirrorOnce(ctx, redis, local))
	if !isOpen() {
		t.Fatal("the follower lost an incident Redis holds")
	}
	must(t, redis.Delete(ctx, 2, "paged"))
	must(t, mirrorOnce(ctx, redis, local))
	if isOpen() {
		t.Error("the follower kept an incident the leader resolved")
	}
	// The next leader's fence unsettles Redis again.
	must(t, local.Save(ctx, 1, "paged", paged))
	must(t, redis.TakeOver(ctx, 3))
	must(t, mirrorOnce(ctx, redis, local))
	if !isOpen() {
		t.Error("the follower copied a Redis the new leader had fenced and not yet settled")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func keys(m map[string]alerting.Instance) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
