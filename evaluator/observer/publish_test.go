package observer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/share/redisshare"
)

// TestPublishInBatches: with a share that publishes many results at once
// (Redis), a queue of 1,200 results goes out in chunks and every one is in
// Redis, and a confirmation request still goes after its result; while
// Redis is down, everything queued stays queued for the next attempt.
func TestPublishInBatches(t *testing.T) {
	srv := redistest.Start(t)
	share := redisshare.New(srv.Client(t), redisshare.Options{Observer: "eu-1"})
	cfg := &config.Config{Observer: "eu-1", Interval: time.Hour, Workers: 1, Checks: map[string]*config.Check{}}
	ob := New(Options{Config: cfg, Runner: plugin.NewRunner(1, plugin.Options{}), Share: share,
		Writer: NewWriter(nil, nil, WriterOptions{})})
	at := time.Now()
	const n = 1200
	for i := range n {
		r := check.Result{Host: fmt.Sprintf("h%04d", i), Check: "svc", Observer: "eu-1", Status: check.OK, Start: at}
		ob.queuePublish(r, false)
	}
	failing := check.Result{Host: "h0000", Check: "svc", Observer: "eu-1", Status: check.Critical, Start: at.Add(time.Second)}
	ob.queuePublish(failing, true) // newer, and just started failing: confirm it

	ctx := context.Background()
	if !ob.publishQueued(ctx) {
		t.Fatal("publishing to a running Redis failed")
	}
	got := map[string]check.Result{}
	if err := share.Snapshot(ctx, func(r check.Result) { got[r.Host] = r }); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Errorf("%d results in Redis, want %d", len(got), n)
	}
	if r := got["h0000"]; r.Status != check.Critical {
		t.Errorf("h0000 in Redis is %s, want the newer CRITICAL", r.Status)
	}
	if len(ob.out) != 0 {
		t.Errorf("%d entries still queued after a good publish", len(ob.out))
	}
	if c := testutil.ToFloat64(ob.metrics.confirmations); c != 1 {
		t.Errorf("%v confirmation rounds started, want the one of h0000", c)
	}

	srv.Kill()
	for i := range 10 {
		ob.queuePublish(check.Result{Host: fmt.Sprintf("h%04d", i), Check: "svc", Observer: "eu-1", Status: check.OK, Start: at.Add(time.Minute)}, false)
	}
	if ob.publishQueued(ctx) {
		t.Fatal("publishing to a dead Redis reported success")
	}
	if len(ob.out) != 10 {
		t.Errorf("%d entries queued after a failed publish, want the 10", len(ob.out))
	}
}
