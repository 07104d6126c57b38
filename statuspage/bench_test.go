package statuspage

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// bigFixture is a cluster of three observers running 1,000 checks (100
// hosts × 10 checks, one in ten failing) with three hours of history at
// one result a minute in an embedded store: 1.08 million points.
func bigFixture(b *testing.B) (leader.Status, *embedded.Store) {
	b.Helper()
	store, err := embedded.Open(b.TempDir(), embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	obs := []string{"node-a:2929", "node-b:2929", "node-c:2929"}
	st := leader.Status{Observer: obs[0], Mode: "peer", Leader: true, Epoch: 7, LeaderName: obs[0], LeaderEpoch: 7, Checks: 1000}
	for _, o := range obs {
		st.Observers = append(st.Observers, leader.ObserverStatus{Name: o, LastSeen: t0.Add(-time.Second), Leader: o == obs[0]})
	}
	var pts []tsdb.Point
	for h := range 100 {
		host := fmt.Sprintf("host%03d.example.org", h)
		for c := range 10 {
			chk := fmt.Sprintf("check%d", c)
			failing := (h*10+c)%10 == 3
			in := leader.InstanceStatus{Rule: "default", Host: host, Check: chk, State: alerting.OK}
			if failing {
				in.State, in.Since, in.FiredAt = alerting.Firing, t0.Add(-time.Hour), t0.Add(-time.Hour)
			}
			for _, o := range obs {
				status := check.OK
				if failing {
					status = check.Critical
				}
				in.Observers = append(in.Observers, leader.ObserverResult{Observer: o, Status: status, Raw: status.String(),
					Output: "TCP OK - 0.001 second response time on " + host + " port 443", At: t0.Add(-20 * time.Second), Fresh: true,
					Duration: 3 * time.Millisecond})
				for m := 180; m >= 1; m-- {
					r := check.Result{Host: host, Check: chk, Observer: o, Status: status, Start: t0.Add(-time.Duration(m) * time.Minute),
						Duration: time.Duration(m%7+1) * time.Millisecond}
					pts = observer.ResultPoints(pts, &r)
				}
			}
			if failing {
				pts = append(pts, tsdb.Point{Metric: observer.MetricAlertState, Tags: map[string]string{"rule": "default", "host": host, "check": chk},
					Time: t0.Add(-time.Hour), Value: float64(alerting.Firing)})
			}
			st.Instances = append(st.Instances, in)
		}
		if len(pts) > 100_000 {
			if err := store.Append(context.Background(), pts); err != nil {
				b.Fatal(err)
			}
			pts = pts[:0]
		}
	}
	if err := store.Append(context.Background(), pts); err != nil {
		b.Fatal(err)
	}
	return st, store
}

// BenchmarkOverview1000 renders the overview of 1,000 checks: "cached"
// with the graphs' history in the cache (a refresh within CacheFor),
// "uncached" reading it from the embedded TSDB every time (three queries
// over 3,000 series of 180 points).
func BenchmarkOverview1000(b *testing.B) {
	st, store := bigFixture(b)
	for _, c := range []struct {
		name    string
		advance time.Duration
	}{{"cached", 0}, {"uncached", 5 * time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			var tick atomic.Int64
			h := New(Options{Status: func() leader.Status { return st }, History: store, Token: token,
				Now: func() time.Time { return t0.Add(time.Duration(tick.Add(1)) * c.advance) }})
			var size int
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("GET / = %d", rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "B/page")
		})
	}
}

// BenchmarkCheckPage renders one check's page of the same store: its
// 24-hour graph in 240 buckets and its timeline, read uncached.
func BenchmarkCheckPage(b *testing.B) {
	st, store := bigFixture(b)
	var tick atomic.Int64
	h := New(Options{Status: func() leader.Status { return st }, History: store, Token: token,
		Now: func() time.Time { return t0.Add(time.Duration(tick.Add(1)) * 5 * time.Second) }})
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/check/host013.example.org/check3", nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("GET = %d", rec.Code)
		}
	}
}
