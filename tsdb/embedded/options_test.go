package embedded

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestQueryCounterRate(t *testing.T) {
	s := openStore(t, "", Options{})
	// 10, 20, 5, 15 at 10 s steps: the counter wraps (or is reset)
	// between 10s and 20s.
	mustAppend(t, s, series("c", tags("host=a"), sv{0, 10}, sv{10, 20}, sv{20, 5}, sv{30, 15}))
	for _, tc := range []struct {
		name string
		rate bool
		o    tsdb.RateOptions
		ds   *tsdb.Downsample
		want []sv
	}{
		// The zero options are a plain rate, negative across the decrease.
		{"plain", true, tsdb.RateOptions{}, nil, []sv{{10, 1}, {20, -1.5}, {30, 1}}},
		// Options without Counter change nothing.
		{"no counter", true, tsdb.RateOptions{CounterMax: 30, ResetValue: 1, DropResets: true}, nil, []sv{{10, 1}, {20, -1.5}, {30, 1}}},
		// A counter wraps at CounterMax: (30-20+5)/10.
		{"counter max", true, tsdb.RateOptions{Counter: true, CounterMax: 30}, nil, []sv{{10, 1}, {20, 1.5}, {30, 1}}},
		// CounterMax zero is OpenTSDB's default, Java's Long.MAX_VALUE.
		{"default max", true, tsdb.RateOptions{Counter: true}, nil, []sv{{10, 1}, {20, (9223372036854775807 - 20 + 5) / 10.0}, {30, 1}}},
		// DropResets leaves the rate across the decrease out.
		{"drop resets", true, tsdb.RateOptions{Counter: true, DropResets: true}, nil, []sv{{10, 1}, {30, 1}}},
		// A rate across the decrease above ResetValue is a reset: 0.
		{"reset value", true, tsdb.RateOptions{Counter: true, CounterMax: 30, ResetValue: 1}, nil, []sv{{10, 1}, {20, 0}, {30, 1}}},
		// A rate below ResetValue is a wrap and kept.
		{"below reset value", true, tsdb.RateOptions{Counter: true, CounterMax: 30, ResetValue: 2}, nil, []sv{{10, 1}, {20, 1.5}, {30, 1}}},
		// Without Rate the options change nothing.
		{"options without rate", false, tsdb.RateOptions{Counter: true, CounterMax: 30}, nil, []sv{{0, 10}, {10, 20}, {20, 5}, {30, 15}}},
		// Downsampled first (20s-max: 20 at 0s, 15 at 20s), then the
		// counter rate across the wrap: (30-20+15)/20.
		{"after downsample", true, tsdb.RateOptions{Counter: true, CounterMax: 30},
			&tsdb.Downsample{Interval: 20 * time.Second, Aggregator: "max"}, []sv{{20, 1.25}}},
	} {
		q := tsdb.Query{Metric: "c", Start: at(0), End: at(30), Aggregator: "sum", Rate: tc.rate, RateOptions: tc.o, Downsample: tc.ds}
		checkSVs(t, tc.name, only(t, mustQuery(t, s, q)), tc.want...)
	}
}

func TestQueryExplicitTags(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("m", tags("host=a"), sv{0, 1}),
		series("m", tags("host=b", "dc=eu"), sv{0, 10}),
		series("m", tags("host=c", "dc=us"), sv{0, 100}),
		series("m", tags("host=d", "dc=us", "rack=r1"), sv{0, 1000}),
	)
	host := tsdb.Filter{Type: tsdb.Wildcard, Tag: "host", Expr: "*"}
	dc := tsdb.Filter{Type: tsdb.Wildcard, Tag: "dc", Expr: "*"}
	dcGrouped := tsdb.Filter{Type: tsdb.Wildcard, Tag: "dc", Expr: "*", GroupBy: true}
	type result struct {
		tags    map[string]string
		aggTags []string
		v       float64
	}
	for _, tc := range []struct {
		name     string
		filters  []tsdb.Filter
		explicit bool
		want     []result
	}{
		// Without explicitTags every series with a host is summed.
		{"off", []tsdb.Filter{host}, false, []result{{tags(), []string{"dc", "host", "rack"}, 1111}}},
		// Only host=a has exactly the tag host.
		{"one tag", []tsdb.Filter{host}, true, []result{{tags("host=a"), nil, 1}}},
		// Exactly host and dc: b and c, not a (no dc) nor d (a rack too).
		{"two tags", []tsdb.Filter{host, dc}, true, []result{{tags(), []string{"dc", "host"}, 110}}},
		// A tag named twice counts once; grouping still applies.
		{"grouped", []tsdb.Filter{host, dc, dcGrouped}, true, []result{
			{tags("dc=eu", "host=b"), nil, 10},
			{tags("dc=us", "host=c"), nil, 100},
		}},
		// No filter: every stored series has a tag, so none is explicit.
		{"no filters", nil, true, nil},
	} {
		out := mustQuery(t, s, tsdb.Query{Metric: "m", Filters: tc.filters, Start: at(0), End: at(10), Aggregator: "sum", ExplicitTags: tc.explicit})
		if len(out) != len(tc.want) {
			t.Errorf("%s: got %d series, want %d: %+v", tc.name, len(out), len(tc.want), out)
			continue
		}
		for i, w := range tc.want {
			got := out[i]
			if !maps.Equal(got.Tags, w.tags) || !slices.Equal(got.AggregatedTags, w.aggTags) {
				t.Errorf("%s: series %d tags %v aggregated %v; want %v and %v", tc.name, i, got.Tags, got.AggregatedTags, w.tags, w.aggTags)
			}
			checkSVs(t, tc.name, got, sv{0, w.v})
		}
	}
}

func TestQueryDownsampleAll(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("m", tags("host=a"), sv{0, 1}, sv{5, 3}, sv{25, 10}, sv{45, 1000}),
		series("m", tags("host=b"), sv{7, 2}, sv{33, 4}),
	)
	a := []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "a"}}
	for _, tc := range []struct {
		name    string
		filters []tsdb.Filter
		agg     string
		ds      tsdb.Downsample
		rate    bool
		want    []sv
	}{
		// One value over [Start, End] (45s is out), stamped with Start,
		// which buckets of an interval would not be aligned to.
		{"sum", a, "sum", tsdb.Downsample{All: true, Aggregator: "sum"}, false, []sv{{3, 13}}},
		{"max", a, "sum", tsdb.Downsample{All: true, Aggregator: "max"}, false, []sv{{3, 10}}},
		{"first", a, "sum", tsdb.Downsample{All: true, Aggregator: "first"}, false, []sv{{3, 3}}},
		{"count", a, "sum", tsdb.Downsample{All: true, Aggregator: "count"}, false, []sv{{3, 2}}},
		// A fill policy has no empty bucket to fill.
		{"fill zero", a, "sum", tsdb.Downsample{All: true, Aggregator: "sum", Fill: "zero"}, false, []sv{{3, 13}}},
		// Each series is reduced, then the series aggregated: 13 + 6.
		{"aggregated", nil, "sum", tsdb.Downsample{All: true, Aggregator: "sum"}, false, []sv{{3, 19}}},
		// One sample has no rate.
		{"then rate", a, "sum", tsdb.Downsample{All: true, Aggregator: "sum"}, true, nil},
	} {
		out := mustQuery(t, s, tsdb.Query{Metric: "m", Filters: tc.filters, Start: at(3), End: at(40), Aggregator: tc.agg, Downsample: &tc.ds, Rate: tc.rate})
		if tc.want == nil {
			if len(out) != 0 {
				t.Errorf("%s: got %+v, want nothing", tc.name, out)
			}
			continue
		}
		checkSVs(t, tc.name, only(t, out), tc.want...)
	}

	// A fill over all of a long range is one bucket, not too many.
	long := tsdb.Query{Metric: "m", Start: time.Unix(0, 0), End: at(40), Downsample: &tsdb.Downsample{All: true, Aggregator: "sum", Fill: "zero"}}
	if _, err := s.Query(context.Background(), long); err != nil {
		t.Errorf("all with fill zero since 1970: %v", err)
	}
	// All and an interval contradict each other.
	bad := tsdb.Query{Metric: "m", Start: at(0), End: at(40), Downsample: &tsdb.Downsample{All: true, Interval: time.Minute, Aggregator: "sum"}}
	if _, err := s.Query(context.Background(), bad); !errors.Is(err, tsdb.ErrInvalid) {
		t.Errorf("all with an interval: err = %v, want one wrapping tsdb.ErrInvalid", err)
	}
}
