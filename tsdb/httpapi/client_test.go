package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/httpapi"
	"github.com/dmonitor/dmonitor/tsdb/opentsdb"
)

// apiClient serves the API over a fresh embedded store on loopback and
// returns our OpenTSDB client pointed at it: the two halves of dmonitor's
// OpenTSDB support, end to end over HTTP.
func apiClient(t testing.TB, opts opentsdb.Options) (*opentsdb.Client, *embedded.Store) {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(httpapi.NewHandler(st, httpapi.Options{}))
	t.Cleanup(func() { ts.Close(); st.Close() })
	opts.URL = ts.URL
	c, err := opentsdb.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

func TestClientAgainstEmbeddedAPI(t *testing.T) {
	ctx := context.Background()
	c, _ := apiClient(t, opentsdb.Options{BatchSize: 50})
	base := time.Now().Add(-time.Hour).Truncate(time.Minute) // whole minutes, for the 1m buckets

	// Three series, 200 points each: more than one batch, gzip on.
	var pts []tsdb.Point
	for i := range 200 {
		for _, h := range []string{"www1", "www2", "db1"} {
			v := float64(i)
			if h == "www2" {
				v *= 2
			}
			pts = append(pts, tsdb.Point{Metric: "sys.cpu.user", Tags: map[string]string{"host": h, "dc": "eu"},
				Time: base.Add(time.Duration(i) * 10 * time.Second), Value: v})
		}
	}
	if err := c.Append(ctx, pts); err != nil {
		t.Fatal(err)
	}
	end := base.Add(time.Hour)

	// Raw, exact values back.
	raw, err := c.Query(ctx, tsdb.Query{Metric: "sys.cpu.user", Start: base, End: end,
		Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "www2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 || len(raw[0].Samples) != 200 || raw[0].Samples[199].Value != 398 || !raw[0].Samples[0].Time.Equal(base) {
		t.Fatalf("raw www2 = %d series, %v", len(raw), raw)
	}

	// Wildcard filter with group-by, summed per host.
	grouped, err := c.Query(ctx, tsdb.Query{Metric: "sys.cpu.user", Start: base, End: end, Aggregator: "sum",
		Filters: []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "host", Expr: "www*", GroupBy: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(grouped) != 2 || grouped[0].Tags["host"] != "www1" || grouped[1].Tags["host"] != "www2" {
		t.Fatalf("group by host = %+v", grouped)
	}

	// Downsampled average across all three, with the common tag kept and
	// the differing one listed as aggregated.
	avg, err := c.Query(ctx, tsdb.Query{Metric: "sys.cpu.user", Start: base, End: end, Aggregator: "avg",
		Downsample: &tsdb.Downsample{Interval: time.Minute, Aggregator: "max"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(avg) != 1 || avg[0].Tags["dc"] != "eu" || len(avg[0].AggregatedTags) != 1 || avg[0].AggregatedTags[0] != "host" {
		t.Fatalf("avg = %+v", avg)
	}
	// The first minute holds i = 0..5: max 5 on www1 and db1, 10 on www2.
	if got, want := avg[0].Samples[0].Value, (5.0+5+10)/3; math.Abs(got-want) > 1e-9 {
		t.Errorf("first 1m avg of maxes = %v, want %v", got, want)
	}

	// Rate: www1 grows by 1 every 10 s.
	rate, err := c.Query(ctx, tsdb.Query{Metric: "sys.cpu.user", Start: base, End: end, Rate: true,
		Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "www1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rate) != 1 || len(rate[0].Samples) != 199 || math.Abs(rate[0].Samples[0].Value-0.1) > 1e-9 {
		t.Fatalf("rate = %+v", rate)
	}

	// Last value of each series.
	last, err := c.Last(ctx, "sys.cpu.user", []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "db1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 1 || last[0].Samples[0].Value != 199 {
		t.Fatalf("last db1 = %+v", last)
	}

	// Suggest and version.
	if names, err := c.Suggest(ctx, tsdb.SuggestTagValues, "www", 10); err != nil || len(names) != 2 {
		t.Fatalf("suggest tagv www = %v, %v", names, err)
	}
	if v, err := c.Version(ctx); err != nil || v["version"] == "" {
		t.Fatalf("version = %v, %v", v, err)
	}

	// A refused point is named, the good ones of its batch are stored.
	err = c.Append(ctx, []tsdb.Point{
		{Metric: "sys.cpu.user", Tags: map[string]string{"host": "bad host"}, Time: end, Value: 1},
		{Metric: "sys.cpu.user", Tags: map[string]string{"host": "www3"}, Time: end, Value: 1},
	})
	var pe *opentsdb.PutError
	if !errors.As(err, &pe) || !errors.Is(err, tsdb.ErrInvalid) || pe.Stored != 1 || len(pe.Refused) != 1 || pe.Refused[0].Point.Tags["host"] != "bad host" {
		t.Fatalf("put with one bad point: %v", err)
	}
}

func TestClientAnnotationsAgainstEmbeddedAPI(t *testing.T) {
	ctx := context.Background()
	c, _ := apiClient(t, opentsdb.Options{})
	at := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	// Global annotations ride on a query of the carrier metric, which
	// must hold data in the range (dmonitor's heartbeat always does).
	if err := c.Append(ctx, []tsdb.Point{{Metric: "dmonitor.observer.up", Tags: map[string]string{"observer": "eu-1"}, Time: at, Value: 1}}); err != nil {
		t.Fatal(err)
	}
	a := tsdb.Annotation{Start: at, Description: "www-http on www1 (http): ok → firing", Custom: map[string]string{"rule": "www-http"}}
	if err := c.PutAnnotation(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := c.Annotations(ctx, "", at.Add(-time.Minute), at.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Description != a.Description || got[0].Custom["rule"] != "www-http" || !got[0].Start.Equal(at) {
		t.Fatalf("annotations = %+v", got)
	}
	if err := c.DeleteAnnotation(ctx, "", at); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteAnnotation(ctx, "", at); !errors.Is(err, tsdb.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

// BenchmarkClientIntoAPI puts datapoints through our client into the
// embedded store's API over loopback, as a dmonitor node with the opentsdb
// backend does when it points at another node's embedded store.
func BenchmarkClientIntoAPI(b *testing.B) {
	for _, bs := range []int{50, 1000} {
		b.Run(fmt.Sprintf("batch%d", bs), func(b *testing.B) {
			c, _ := apiClient(b, opentsdb.Options{BatchSize: bs})
			const perCall = 5000
			base := time.Now().Add(-time.Hour)
			pts := make([]tsdb.Point, perCall)
			n := 0
			b.ResetTimer()
			for b.Loop() {
				for i := range pts {
					pts[i] = tsdb.Point{Metric: "bench.metric", Tags: map[string]string{"host": fmt.Sprintf("h%03d", i%500)},
						Time: base.Add(time.Duration(n) * time.Millisecond), Value: float64(n)}
					n++
				}
				if err := c.Append(context.Background(), pts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "points/s")
		})
	}
}
