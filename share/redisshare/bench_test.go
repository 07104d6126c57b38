package redisshare

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/internal/checktest"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/share/wire"
)

// typical is a result as check_http writes it: a line of output and two
// perfdata items.
func typical(i int) check.Result {
	r := checktest.Result("eu-1", fmt.Sprintf("www%03d.example.org", i%1000), "http", t0.Add(time.Duration(i)*time.Millisecond), check.OK)
	r.Output = "HTTP OK: HTTP/1.1 200 OK - 15234 bytes in 0.042 second response time"
	r.Perf = []check.Perf{
		{Label: "time", Value: 0.042, UOM: "s", Min: new(0.0)},
		{Label: "size", Value: 15234, UOM: "B", Min: new(0.0)},
	}
	return r
}

// BenchmarkPublish measures results/s over loopback three ways in the same
// run: one Publish after another (the baseline), PublishAll in batches of
// 64, and 16 goroutines calling Publish at once (as the evaluator's checks
// finish side by side).
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b)
	x := New(srv.Client(b), Options{Observer: "eu-1"})
	ctx := context.Background()
	const per, batch, workers = 512, 64, 16
	var seq, piped, par time.Duration
	seqNo := 0
	next := func(n int) []check.Result {
		rs := make([]check.Result, n)
		for i := range rs {
			rs[i] = typical(seqNo)
			seqNo++
		}
		return rs
	}
	b.ResetTimer()
	for b.Loop() {
		rs := next(per)
		start := time.Now()
		for _, r := range rs {
			if err := x.Publish(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		seq += time.Since(start)

		rs = next(per)
		start = time.Now()
		for i := 0; i < len(rs); i += batch {
			if err := x.PublishAll(ctx, rs[i:min(i+batch, len(rs))]); err != nil {
				b.Fatal(err)
			}
		}
		piped += time.Since(start)

		rs = next(per)
		start = time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < len(rs); i += workers {
					if err := x.Publish(ctx, rs[i]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		par += time.Since(start)
	}
	n := float64(b.N * per)
	b.ReportMetric(n/seq.Seconds(), "seq-results/s")
	b.ReportMetric(n/piped.Seconds(), "pipelined-results/s")
	b.ReportMetric(n/par.Seconds(), "parallel-results/s")
	b.ReportMetric(seq.Seconds()/piped.Seconds(), "pipelined/seq")
	b.ReportMetric(seq.Seconds()/par.Seconds(), "parallel/seq")
}

// BenchmarkEncode compares the wire form with `dmonitor check --json`'s,
// in size and in time.
func BenchmarkEncode(b *testing.B) {
	r := typical(1)
	var wireLen, js int
	var tWire, tJSON time.Duration
	for b.Loop() {
		start := time.Now()
		p, _, err := wire.Encode(&r)
		if err != nil {
			b.Fatal(err)
		}
		tWire += time.Since(start)
		start = time.Now()
		q, err := r.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		tJSON += time.Since(start)
		wireLen, js = len(p), len(q)
	}
	b.ReportMetric(float64(wireLen), "wire-bytes")
	b.ReportMetric(float64(js), "json-bytes")
	b.ReportMetric(float64(wireLen)/float64(js), "wire/json-size")
	b.ReportMetric(tWire.Seconds()/tJSON.Seconds(), "wire/json-time")
}
