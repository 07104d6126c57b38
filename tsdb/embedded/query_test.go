package embedded

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestQueryRawSeries(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("cpu", tags("host=b", "dc=eu"), sv{0, 1.5}, sv{10, -2}, sv{20, 1e300}, sv{30, 4}),
		series("cpu", tags("host=a", "dc=eu"), sv{5, 0.125}, sv{15, 7}),
		series("mem", tags("host=a"), sv{10, 99}), // another metric: never in a cpu answer
	)
	// The range is inclusive at both ends: 10s and 20s are in, 0 and 30 out.
	out := mustQuery(t, s, tsdb.Query{Metric: "cpu", Start: at(10), End: at(20)})
	if len(out) != 2 {
		t.Fatalf("got %d series, want 2: %+v", len(out), out)
	}
	// Sorted by tags: host=a before host=b.
	if !maps.Equal(out[0].Tags, tags("host=a", "dc=eu")) || !maps.Equal(out[1].Tags, tags("host=b", "dc=eu")) {
		t.Errorf("tags = %v, %v; want host=a then host=b, each with dc=eu", out[0].Tags, out[1].Tags)
	}
	for _, ser := range out {
		if ser.Metric != "cpu" || len(ser.AggregatedTags) != 0 {
			t.Errorf("series %+v: want metric cpu and no aggregated tags", ser)
		}
	}
	checkSVs(t, "host=a", out[0], sv{15, 7})
	checkSVs(t, "host=b", out[1], sv{10, -2}, sv{20, 1e300})

	// Asking for "none" by name is the same as leaving it empty.
	if again := mustQuery(t, s, tsdb.Query{Metric: "cpu", Start: at(10), End: at(20), Aggregator: "none"}); len(again) != 2 {
		t.Errorf("aggregator none: got %d series, want 2", len(again))
	}
	// No matching series is an empty answer, not an error.
	if none := mustQuery(t, s, tsdb.Query{Metric: "disk", Start: at(0), End: at(100)}); len(none) != 0 {
		t.Errorf("unknown metric: got %+v, want nothing", none)
	}
}

func TestQueryAggregators(t *testing.T) {
	s := openStore(t, "", Options{})
	// A and B never share a timestamp before 40s, so the interpolating
	// aggregators and the zim/mim ones differ at every step.
	mustAppend(t, s,
		series("m", tags("host=a", "check=x"), sv{0, 1}, sv{20, 3}, sv{40, 5}),
		series("m", tags("host=b", "check=x"), sv{10, 10}, sv{30, 30}, sv{40, 50}),
	)
	// Linear interpolation: A is 2 at 10s and 4 at 30s, B is 20 at 20s; B
	// is not extrapolated back to 0s.
	for _, tc := range []struct {
		agg  string
		want []sv
	}{
		{"sum", []sv{{0, 1}, {10, 12}, {20, 23}, {30, 34}, {40, 55}}},
		{"avg", []sv{{0, 1}, {10, 6}, {20, 11.5}, {30, 17}, {40, 27.5}}},
		{"min", []sv{{0, 1}, {10, 2}, {20, 3}, {30, 4}, {40, 5}}},
		{"max", []sv{{0, 1}, {10, 10}, {20, 20}, {30, 30}, {40, 50}}},
		{"count", []sv{{0, 1}, {10, 2}, {20, 2}, {30, 2}, {40, 2}}},
		// Population deviation: half the distance between two values.
		{"dev", []sv{{0, 0}, {10, 4}, {20, 8.5}, {30, 13}, {40, 22.5}}},
		// No interpolation: a missing series counts as zero...
		{"zimsum", []sv{{0, 1}, {10, 10}, {20, 3}, {30, 30}, {40, 55}}},
		// ...or is left out.
		{"mimmin", []sv{{0, 1}, {10, 10}, {20, 3}, {30, 30}, {40, 5}}},
		{"mimmax", []sv{{0, 1}, {10, 10}, {20, 3}, {30, 30}, {40, 50}}},
	} {
		out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(40), Aggregator: tc.agg})
		got := only(t, out)
		checkSVs(t, tc.agg, got, tc.want...)
		if !maps.Equal(got.Tags, tags("check=x")) || !slices.Equal(got.AggregatedTags, []string{"host"}) {
			t.Errorf("%s: tags %v aggregated %v; want check=x and [host]", tc.agg, got.Tags, got.AggregatedTags)
		}
	}
}

func TestQueryDownsample(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s, series("m", tags("host=a"), sv{0, 1}, sv{5, 3}, sv{25, 10}))
	nan := math.NaN()
	for _, tc := range []struct {
		name  string
		start int64
		ds    tsdb.Downsample
		want  []sv
	}{
		// Empty buckets are skipped.
		{"fill none", 0, tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "avg"}, []sv{{0, 2}, {20, 10}}},
		{"fill none by name", 0, tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "avg", Fill: "none"}, []sv{{0, 2}, {20, 10}}},
		// Every bucket up to the one holding End (39s) gets a sample.
		{"fill zero", 0, tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "avg", Fill: "zero"}, []sv{{0, 2}, {10, 0}, {20, 10}, {30, 0}}},
		{"fill nan", 0, tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "avg", Fill: "nan"}, []sv{{0, 2}, {10, nan}, {20, 10}, {30, nan}}},
		{"fill null", 0, tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "avg", Fill: "null"}, []sv{{0, 2}, {10, nan}, {20, 10}, {30, nan}}},
		// Buckets are aligned to multiples of the interval, not to Start:
		// starting at 5s, the first bucket still begins at 0s but holds
		// only the sample at 5s.
		{"aligned to the epoch", 5, tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "sum"}, []sv{{0, 3}, {20, 10}}},
		{"one bucket, max", 0, tsdb.Downsample{Interval: time.Minute, Aggregator: "max"}, []sv{{0, 10}}},
		{"one bucket, count", 0, tsdb.Downsample{Interval: time.Minute, Aggregator: "count"}, []sv{{0, 3}}},
		{"one bucket, first", 0, tsdb.Downsample{Interval: time.Minute, Aggregator: "first"}, []sv{{0, 1}}},
		{"one bucket, last", 0, tsdb.Downsample{Interval: time.Minute, Aggregator: "last"}, []sv{{0, 10}}},
	} {
		out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(tc.start), End: at(39), Downsample: &tc.ds})
		checkSVs(t, tc.name, only(t, out), tc.want...)
	}
}

func TestQueryDownsampleThenAggregate(t *testing.T) {
	s := openStore(t, "", Options{})
	// The two series never share a timestamp, but downsampled to 10s they
	// share every bucket, so the sum adds bucket values without
	// interpolating.
	mustAppend(t, s,
		series("m", tags("host=a"), sv{1, 1}, sv{11, 2}, sv{21, 3}),
		series("m", tags("host=b"), sv{4, 10}, sv{14, 20}, sv{24, 30}),
	)
	ds := &tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "max"}
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(29), Aggregator: "sum", Downsample: ds})
	checkSVs(t, "downsampled sum", only(t, out), sv{0, 11}, sv{10, 22}, sv{20, 33})

	// Without downsampling the same sum interpolates at all six times.
	out = mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(29), Aggregator: "sum"})
	checkSVs(t, "raw sum", only(t, out), sv{1, 1}, sv{4, 1.3 + 10}, sv{11, 2 + 17}, sv{14, 2.3 + 20}, sv{21, 3 + 27}, sv{24, 30})
}

func TestQueryRate(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("c", tags("host=a"), sv{0, 0}, sv{10, 20}, sv{20, 20}, sv{30, 5}),
		series("c", tags("host=b"), sv{0, 100}, sv{10, 110}, sv{20, 130}, sv{30, 160}),
	)
	out := mustQuery(t, s, tsdb.Query{Metric: "c", Start: at(0), End: at(30), Rate: true, Filters: []tsdb.Filter{
		{Type: tsdb.LiteralOr, Tag: "host", Expr: "a"},
	}})
	// Per second, stamped at the later sample; the first has no rate.
	checkSVs(t, "rate", only(t, out), sv{10, 2}, sv{20, 0}, sv{30, -1.5})

	// Rates are computed per series, then summed.
	out = mustQuery(t, s, tsdb.Query{Metric: "c", Start: at(0), End: at(30), Rate: true, Aggregator: "sum"})
	checkSVs(t, "summed rate", only(t, out), sv{10, 3}, sv{20, 2}, sv{30, 1.5})
}

func TestQueryFilters(t *testing.T) {
	s := openStore(t, "", Options{})
	for i, tg := range []map[string]string{
		tags("host=web1", "dc=eu"),
		tags("host=web2", "dc=us"),
		tags("host=db1", "dc=eu"),
		tags("host=WEB3", "dc=us"),
		tags("host=web.x"), // no dc tag
	} {
		mustAppend(t, s, series("m", tg, sv{0, float64(i + 1)}))
	}
	for _, tc := range []struct {
		name    string
		filters []tsdb.Filter
		want    []string
	}{
		{"literal_or picks the listed values", []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "web1|db1"}}, []string{"db1", "web1"}},
		{"literal_or is case-sensitive", []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "WEB1"}}, nil},
		{"literal_or takes dots literally", []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "web.x"}}, []string{"web.x"}},
		{"iliteral_or ignores case", []tsdb.Filter{{Type: tsdb.ILiteralOr, Tag: "host", Expr: "WEB1|Db1"}}, []string{"db1", "web1"}},
		{"not_literal_or excludes, and needs the tag", []tsdb.Filter{{Type: tsdb.NotLiteralOr, Tag: "dc", Expr: "eu"}}, []string{"WEB3", "web2"}},
		{"wildcard is case-sensitive", []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "host", Expr: "web*"}}, []string{"web.x", "web1", "web2"}},
		{"wildcard in the middle", []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "host", Expr: "w*1"}}, []string{"web1"}},
		{"wildcard * needs the tag", []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "dc", Expr: "*"}}, []string{"WEB3", "db1", "web1", "web2"}},
		{"iwildcard ignores case", []tsdb.Filter{{Type: tsdb.IWildcard, Tag: "host", Expr: "WEB*"}}, []string{"WEB3", "web.x", "web1", "web2"}},
		{"regexp", []tsdb.Filter{{Type: tsdb.Regexp, Tag: "host", Expr: "web[0-9]"}}, []string{"web1", "web2"}},
		{"regexp is anchored", []tsdb.Filter{{Type: tsdb.Regexp, Tag: "host", Expr: "eb1"}}, nil},
		{"filters are ANDed", []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "host", Expr: "*1"}, {Type: tsdb.LiteralOr, Tag: "dc", Expr: "eu"}}, []string{"db1", "web1"}},
		{"a filter on a missing tag matches nothing", []tsdb.Filter{{Type: tsdb.Regexp, Tag: "rack", Expr: ".*"}}, nil},
	} {
		out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(0), Filters: tc.filters})
		if got := hostsOf(out); !slices.Equal(got, tc.want) {
			t.Errorf("%s: hosts %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestQueryGroupBy(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("m", tags("host=web1", "dc=eu", "role=web"), sv{0, 1}),
		series("m", tags("host=db1", "dc=eu", "role=db"), sv{0, 2}),
		series("m", tags("host=web2", "dc=us", "role=web"), sv{0, 4}),
		series("m", tags("host=web3", "dc=us", "role=web"), sv{0, 8}),
		series("m", tags("host=x"), sv{0, 100}), // no dc: excluded by the filter
	)
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(0), Aggregator: "sum", Filters: []tsdb.Filter{
		{Type: tsdb.Wildcard, Tag: "dc", Expr: "*", GroupBy: true},
	}})
	if len(out) != 2 {
		t.Fatalf("got %d series, want one per dc: %+v", len(out), out)
	}
	checkSVs(t, "dc=eu", out[0], sv{0, 3})
	checkSVs(t, "dc=us", out[1], sv{0, 12})
	if !maps.Equal(out[0].Tags, tags("dc=eu")) || !slices.Equal(out[0].AggregatedTags, []string{"host", "role"}) {
		t.Errorf("eu: tags %v aggregated %v; want dc=eu and [host role]", out[0].Tags, out[0].AggregatedTags)
	}
	// In us every series has role=web, so role is a common tag there.
	if !maps.Equal(out[1].Tags, tags("dc=us", "role=web")) || !slices.Equal(out[1].AggregatedTags, []string{"host"}) {
		t.Errorf("us: tags %v aggregated %v; want dc=us,role=web and [host]", out[1].Tags, out[1].AggregatedTags)
	}
}

func TestQueryInvalid(t *testing.T) {
	s := openStore(t, "", Options{})
	ok := tsdb.Query{Metric: "m", Start: at(0), End: at(10)}
	for _, tc := range []struct {
		name   string
		change func(q *tsdb.Query)
	}{
		{"no metric", func(q *tsdb.Query) { q.Metric = "" }},
		{"unknown aggregator", func(q *tsdb.Query) { q.Aggregator = "median-ish" }},
		{"end before start", func(q *tsdb.Query) { q.End = at(-1) }},
		{"bad regexp", func(q *tsdb.Query) { q.Filters = []tsdb.Filter{{Type: tsdb.Regexp, Tag: "host", Expr: "web("}} }},
		{"unknown filter type", func(q *tsdb.Query) { q.Filters = []tsdb.Filter{{Type: "glob", Tag: "host", Expr: "x"}} }},
		{"filter without tag", func(q *tsdb.Query) { q.Filters = []tsdb.Filter{{Type: tsdb.LiteralOr, Expr: "x"}} }},
		{"filter without expression", func(q *tsdb.Query) { q.Filters = []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host"}} }},
		{"downsample without interval", func(q *tsdb.Query) { q.Downsample = &tsdb.Downsample{Aggregator: "avg"} }},
		{"unknown downsample aggregator", func(q *tsdb.Query) {
			q.Downsample = &tsdb.Downsample{Interval: time.Minute, Aggregator: "none"}
		}},
		{"unknown fill", func(q *tsdb.Query) {
			q.Downsample = &tsdb.Downsample{Interval: time.Minute, Aggregator: "avg", Fill: "previous"}
		}},
		{"fill over too many buckets", func(q *tsdb.Query) {
			q.Start = time.Unix(0, 0)
			q.Downsample = &tsdb.Downsample{Interval: time.Second, Aggregator: "avg", Fill: "zero"}
		}},
	} {
		q := ok
		tc.change(&q)
		_, err := s.Query(context.Background(), q)
		if !errors.Is(err, tsdb.ErrInvalid) {
			t.Errorf("%s: err = %v, want one wrapping tsdb.ErrInvalid", tc.name, err)
		}
	}
	if _, err := s.Query(context.Background(), ok); err != nil {
		t.Errorf("the valid query: %v", err)
	}
}

func TestLast(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s,
		series("up", tags("host=a"), sv{0, 1}, sv{60, 2}, sv{120, 3}),
		series("up", tags("host=b"), sv{0, 7}, sv{30, 8}),
		series("up", tags("host=c"), sv{90, 5}),
		series("down", tags("host=a"), sv{500, 9}),
	)
	out, err := s.Last(context.Background(), "up", []tsdb.Filter{{Type: tsdb.NotLiteralOr, Tag: "host", Expr: "c"}})
	if err != nil {
		t.Fatalf("Last: %v", err)
	}
	if len(out) != 2 {
		t.Fatalf("got %d series, want a and b: %+v", len(out), out)
	}
	if out[0].Tags["host"] != "a" || out[1].Tags["host"] != "b" {
		t.Errorf("hosts %v, %v; want a, b", out[0].Tags, out[1].Tags)
	}
	checkSVs(t, "a", out[0], sv{120, 3})
	checkSVs(t, "b", out[1], sv{30, 8})

	none, err := s.Last(context.Background(), "nothing", nil)
	if err != nil || len(none) != 0 {
		t.Errorf("Last of an unknown metric = %v, %v; want nothing, nil", none, err)
	}
}

// TestLastOldSeries checks that Last finds a series whose newest sample is
// no longer in the engine's in-memory head but in a block on disk, a day
// and more before the newest data.
func TestLastOldSeries(t *testing.T) {
	s := openStore(t, "", Options{})
	mustAppend(t, s, series("up", tags("host=old"), sv{0, 1}, sv{60, 2}))
	day := int64(24 * 3600)
	for h := int64(1); h <= 60; h++ { // an hourly series for 60 hours
		mustAppend(t, s, series("up", tags("host=new"), sv{h * 3600, float64(h)}))
	}
	if err := s.db.Compact(context.Background()); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	if len(s.db.Blocks()) == 0 || s.db.Head().MinTime() <= at(2*day).UnixMilli() {
		t.Fatalf("compaction left the old data in the head (head from %d, %d blocks); the test proves nothing",
			s.db.Head().MinTime(), len(s.db.Blocks()))
	}
	out, err := s.Last(context.Background(), "up", nil)
	if err != nil {
		t.Fatalf("Last: %v", err)
	}
	if len(out) != 2 {
		t.Fatalf("got %d series, want 2: %+v", len(out), out)
	}
	checkSVs(t, "new", out[0], sv{60 * 3600, 60})
	checkSVs(t, "old", out[1], sv{60, 2})

	// The engine dropped the old series from memory when it compacted, so
	// the reference cached for it is stale: appending to it again must
	// still land in that series.
	mustAppend(t, s, series("up", tags("host=old"), sv{61 * 3600, 3}))
	got := only(t, mustQuery(t, s, tsdb.Query{Metric: "up", Start: at(0), End: at(61 * 3600),
		Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "old"}}}))
	checkSVs(t, "old after a new append", got, sv{0, 1}, sv{60, 2}, sv{61 * 3600, 3})
}

// hostsOf returns the host tags of out, sorted.
func hostsOf(out []tsdb.Series) []string {
	var hs []string
	for _, ser := range out {
		hs = append(hs, ser.Tags["host"])
	}
	slices.Sort(hs)
	return hs
}
