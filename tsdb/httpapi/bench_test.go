package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// benchDay is the benchmarks' data range: one day at 10 s resolution.
var benchDay = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

const benchStep = 10 * time.Second

// fillBench stores n series of metric, one day at 10 s each.
func fillBench(b *testing.B, st *embedded.Store, metric string, n int) {
	b.Helper()
	steps := int(24 * time.Hour / benchStep)
	batch := make([]tsdb.Point, 0, 10000)
	flush := func() {
		if err := st.Append(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range steps {
		for s := range n {
			batch = append(batch, tsdb.Point{
				Metric: metric,
				Tags:   map[string]string{"host": fmt.Sprintf("host%03d", s), "check": "http"},
				Time:   benchDay.Add(time.Duration(i) * benchStep),
				Value:  float64(i%100 + s),
			})
			if len(batch) == cap(batch) {
				flush()
			}
		}
	}
	flush()
}

// benchQuery measures one query through the HTTP API against the same
// query asked of the store directly, in the same run, and reports both in
// ms per query and their ratio.
func benchQuery(b *testing.B, series int, sub string, direct tsdb.Query) {
	st, err := embedded.Open(b.TempDir(), embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	fillBench(b, st, direct.Metric, series)
	ts := httptest.NewServer(NewHandler(st, Options{}))
	defer ts.Close()
	body := fmt.Sprintf(`{"start":%d,"end":%d,"queries":[%s]}`, benchDay.Unix(), benchDay.Add(24*time.Hour).Unix(), sub)
	direct.Start, direct.End = benchDay, benchDay.Add(24*time.Hour)

	ask := func() int {
		resp, err := http.Post(ts.URL+"/api/query", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("query: %d %v", resp.StatusCode, err)
		}
		return int(n)
	}
	ask() // warm the connection and the engine's caches for both
	const baselineRuns = 20
	start := time.Now()
	points := 0
	for range baselineRuns {
		out, err := st.Query(context.Background(), direct)
		if err != nil {
			b.Fatal(err)
		}
		points = len(out[0].Samples)
	}
	directMs := float64(time.Since(start).Microseconds()) / 1000 / baselineRuns

	b.ResetTimer()
	size := 0
	for b.Loop() {
		size = ask()
	}
	b.StopTimer()
	httpMs := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(httpMs, "ms/query")
	b.ReportMetric(directMs, "direct-ms/query")
	b.ReportMetric(httpMs/directMs, "x-direct")
	b.ReportMetric(float64(points), "points")
	b.ReportMetric(float64(size), "bytes")
}

// BenchmarkQueryOneSeriesDay: one series, a day at 10 s (8640 points).
func BenchmarkQueryOneSeriesDay(b *testing.B) {
	benchQuery(b, 1, `{"aggregator":"sum","metric":"bench.one"}`,
		tsdb.Query{Metric: "bench.one", Aggregator: "sum"})
}

// BenchmarkQuery100SeriesSum: 100 series, a day at 10 s each, summed.
func BenchmarkQuery100SeriesSum(b *testing.B) {
	benchQuery(b, 100, `{"aggregator":"sum","metric":"bench.many","tags":{"check":"http"}}`,
		tsdb.Query{Metric: "bench.many", Aggregator: "sum", Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "check", Expr: "http", GroupBy: true}}})
}
