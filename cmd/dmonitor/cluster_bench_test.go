package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
)

// BenchmarkClusterDetection measures, on three observers checking a
// service every 10 s with a quorum of 2, the time from stopping the service
// to the page arriving at the SMTP sink, over several outages started at
// random moments; and the time from kill -9 of the leader to a new leader
// deciding. Each b.Loop iteration is the whole experiment (about three
// minutes). Targets: p99 detection at or under interval/observers + 2 s
// (5.3 s), failover at or under the lease TTL + 1 s (3 s).
func BenchmarkClusterDetection(b *testing.B) {
	const (
		interval = 10 * time.Second
		trials   = 10
		kills    = 5
	)
	for b.Loop() {
		c := newClusterEvery(b, "", interval)
		c.startAll()
		await.Until(b, "a leader", func() bool { n, _ := c.leader(); return n != "" })
		tally := newTally("")
		tally.take(c)
		detect := c.timeOutages(trials, interval, tally)
		var failover []time.Duration
		for range kills {
			failover = append(failover, c.killLeader())
		}
		c.stopNodes()
		slices.Sort(detect)
		slices.Sort(failover)
		b.ReportMetric(detect[len(detect)/2].Seconds(), "detect-p50-s")
		b.ReportMetric(detect[len(detect)-1].Seconds(), "detect-p99-s") // the max of 10: the p99 bound
		b.ReportMetric(failover[len(failover)/2].Seconds(), "failover-p50-s")
		b.ReportMetric(failover[len(failover)-1].Seconds(), "failover-max-s")
		b.ReportMetric(float64(tally.duplicates()), "duplicates")
	}
}

// BenchmarkDetectionByMode is BenchmarkClusterDetection's outage-to-page
// figure in the two modes without a working Redis: peer mode (no Redis
// configured) and degraded mode (Redis configured and killed before the
// first outage). Three observers, a 10 s interval, quorum 2, ten outages
// at random phases each.
func BenchmarkDetectionByMode(b *testing.B) {
	const (
		interval = 10 * time.Second
		trials   = 10
	)
	modes := []struct {
		name  string
		start func(b *testing.B) *testCluster
	}{
		{"peer", func(b *testing.B) *testCluster {
			c := newPeerClusterEvery(b, "", interval)
			c.startAll()
			return c
		}},
		{"degraded", func(b *testing.B) *testCluster {
			c := newClusterEvery(b, "", interval)
			c.startAll()
			await.Until(b, "a leader", func() bool { n, _ := c.leader(); return n != "" })
			c.redis.Kill()
			await.Until(b, "degraded mode", func() bool { return c.nodes["a"].metric(b, "dmonitor_degraded") == 1 })
			return c
		}},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			for b.Loop() {
				c := m.start(b)
				await.Until(b, "one decider", func() bool { n, _ := c.deciderState(); return n != "" })
				tally := newTally("default")
				detect := c.timeOutages(trials, interval, tally)
				c.stopNodes()
				slices.Sort(detect)
				b.ReportMetric(detect[len(detect)/2].Seconds(), "detect-p50-s")
				b.ReportMetric(detect[len(detect)-1].Seconds(), "detect-p99-s") // the max of 10
				b.ReportMetric(float64(tally.duplicates()), "duplicates")
			}
		})
	}
}

// timeOutages stops the service trials times, each at a random phase of
// the checks' schedule (within interval), and returns how long each took
// to be paged (counted in tally); each outage recovers before the next.
func (c *testCluster) timeOutages(trials int, interval time.Duration, tally *mailTally) []time.Duration {
	c.t.Helper()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	paged := len(tally.firing)
	var detect []time.Duration
	for k := range trials {
		time.Sleep(time.Duration(rng.Int64N(int64(interval))))
		stopped := time.Now()
		c.svc.l.Close()
		await.Until(c.t, "the page", func() bool { tally.take(c); return len(tally.firing) >= paged+k+1 })
		detect = append(detect, time.Since(stopped))
		c.svc = startService(c.t, c.svc.addr)
		await.Until(c.t, "the recovery", func() bool { tally.take(c); return len(tally.resolved) >= paged+k+1 })
	}
	return detect
}
