package httpapi_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/opentsdb"
)

// The query options OpenTSDB's API has beyond filters and aggregation
// (counter rates, explicitTags, "0all-") travel from our client through
// the API to the store: each answer over HTTP is the store's own.
func TestClientQueryOptionsAgainstEmbeddedAPI(t *testing.T) {
	ctx := context.Background()
	c, st := apiClient(t, opentsdb.Options{})
	base := time.Unix(1356998400, 0).UTC()
	var pts []tsdb.Point
	for i, v := range []float64{10, 20, 5, 15} { // the counter wraps after 20
		at := base.Add(time.Duration(i) * 10 * time.Second)
		pts = append(pts,
			tsdb.Point{Metric: "net.bytes", Tags: map[string]string{"host": "a"}, Time: at, Value: v},
			tsdb.Point{Metric: "net.bytes", Tags: map[string]string{"host": "b", "dc": "eu"}, Time: at, Value: v * 2})
	}
	if err := c.Append(ctx, pts); err != nil {
		t.Fatal(err)
	}
	hostA := []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "a"}}
	anyHost := []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "host", Expr: "*"}}
	for _, tc := range []struct {
		name string
		q    tsdb.Query
		want []float64 // the values of the one answer series
	}{
		// (30-20+5)/10 across the wrap.
		{"counter max", tsdb.Query{Aggregator: "sum", Filters: hostA, Rate: true,
			RateOptions: tsdb.RateOptions{Counter: true, CounterMax: 30}}, []float64{1, 1.5, 1}},
		{"drop resets", tsdb.Query{Aggregator: "sum", Filters: hostA, Rate: true,
			RateOptions: tsdb.RateOptions{Counter: true, DropResets: true}}, []float64{1, 1}},
		{"reset value", tsdb.Query{Aggregator: "sum", Filters: hostA, Rate: true,
			RateOptions: tsdb.RateOptions{Counter: true, CounterMax: 30, ResetValue: 1}}, []float64{1, 0, 1}},
		// host=b has a dc tag too: left out of the sum.
		{"explicit tags", tsdb.Query{Aggregator: "sum", Filters: anyHost, ExplicitTags: true}, []float64{10, 20, 5, 15}},
		// Both series reduced over the whole range, then summed: 50 + 100.
		{"all", tsdb.Query{Aggregator: "sum", Downsample: &tsdb.Downsample{All: true, Aggregator: "sum"}}, []float64{150}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Metric, q.Start, q.End = "net.bytes", base, base.Add(40*time.Second)
			got, err := c.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("got %d series over HTTP, want 1: %+v", len(got), got)
			}
			var vals []float64
			for _, s := range got[0].Samples {
				vals = append(vals, s.Value)
			}
			if !slices.Equal(vals, tc.want) {
				t.Errorf("values over HTTP = %v, want %v", vals, tc.want)
			}
			direct, err := st.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(direct) != 1 || !maps.Equal(got[0].Tags, direct[0].Tags) || !slices.EqualFunc(got[0].Samples, direct[0].Samples, sameSample) {
				t.Errorf("over HTTP %+v\nfrom the store %+v", got, direct)
			}
		})
	}
}

func sameSample(a, b tsdb.Sample) bool { return a.Time.Equal(b.Time) && a.Value == b.Value }
