package embedded

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Query answers q with OpenTSDB's semantics: see tsdb.Query, and evaluate
// for the order of downsampling, rate and aggregation. Every filter maps
// exactly to an engine label matcher, so series are selected by the
// engine's index. An unknown aggregator, filter type or fill policy, a bad
// regexp or an End before Start wraps tsdb.ErrInvalid.
func (s *Store) Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	p, ms, err := compileQuery(q)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: query %q: %w", s.dir, q.Metric, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: query: %w", s.dir, err)
	}
	raws, err := s.read(ctx, p.mint, p.maxt, ms)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: query %q: %w", s.dir, q.Metric, err)
	}
	return evaluate(p, raws), nil
}

// read returns the samples in [mint, maxt] of every series matching ms.
func (s *Store) read(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]rawSeries, error) {
	qr, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	defer qr.Close()
	set := qr.Select(ctx, false, &storage.SelectHints{Start: mint, End: maxt}, ms...)
	var raws []rawSeries
	var it chunkenc.Iterator
	for set.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		series := set.At()
		r := rawSeries{tags: tagsOf(series.Labels())}
		it = series.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				continue // only floats are ever written
			}
			t, v := it.At()
			r.ts = append(r.ts, t)
			r.vs = append(r.vs, v)
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("read series %s: %w", series.Labels(), err)
		}
		if len(r.ts) > 0 {
			raws = append(raws, r)
		}
	}
	return raws, set.Err()
}

// lastDayMillis is the second look-back of Last, after the head.
const lastDayMillis = int64(24 * time.Hour / time.Millisecond)

// Last returns, per series of metric matching filters, its newest sample,
// sorted by tags. It looks first in the engine's in-memory head (the last
// two to three hours), then in the day before the newest sample, and only
// for series still missing in everything the store holds, which is at
// most the retention period plus one block. Per series it decodes only
// the newest chunk (at most 120 samples). Filters are as for Query;
// GroupBy is ignored.
func (s *Store) Last(ctx context.Context, metric string, filters []tsdb.Filter) ([]tsdb.Series, error) {
	ms, _, err := compileMatchers(metric, filters)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: last %q: %w", s.dir, metric, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: last: %w", s.dir, err)
	}
	out, err := s.last(ctx, metric, ms)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: last %q: %w", s.dir, metric, err)
	}
	sortSeries(out)
	return out, nil
}

func (s *Store) last(ctx context.Context, metric string, ms []*labels.Matcher) ([]tsdb.Series, error) {
	// How many series are there to find? The index answers without
	// reading any chunk.
	want, err := s.countSeries(ctx, ms)
	if err != nil || want == 0 {
		return nil, err
	}
	var windows []int64
	if head := s.db.Head(); head.MinTime() <= head.MaxTime() {
		windows = append(windows, head.MinTime(), head.MaxTime()-lastDayMillis)
	}
	windows = append(windows, math.MinInt64)
	found := map[string]tsdb.Series{}
	for _, mint := range windows {
		if err := s.lastIn(ctx, metric, mint, ms, found); err != nil {
			return nil, err
		}
		if len(found) >= want {
			break
		}
	}
	out := make([]tsdb.Series, 0, len(found))
	for _, ser := range found {
		out = append(out, ser)
	}
	return out, nil
}

// countSeries counts the series matching ms that have data anywhere.
func (s *Store) countSeries(ctx context.Context, ms []*labels.Matcher) (int, error) {
	qr, err := s.db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return 0, err
	}
	defer qr.Close()
	set := qr.Select(ctx, false, &storage.SelectHints{Start: math.MinInt64, End: math.MaxInt64, Func: "series"}, ms...)
	n := 0
	for set.Next() {
		n++
	}
	return n, set.Err()
}

// lastIn adds to found the newest sample of every series matching ms with
// data at or after mint that found does not hold yet, keyed by labels.
func (s *Store) lastIn(ctx context.Context, metric string, mint int64, ms []*labels.Matcher, found map[string]tsdb.Series) error {
	qr, err := s.db.ChunkQuerier(mint, math.MaxInt64)
	if err != nil {
		return err
	}
	defer qr.Close()
	set := qr.Select(ctx, false, &storage.SelectHints{Start: mint, End: math.MaxInt64}, ms...)
	var cit chunks.Iterator
	var it chunkenc.Iterator
	for set.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		series := set.At()
		key := series.Labels().String()
		if _, ok := found[key]; ok {
			continue
		}
		// The newest sample is the last of the chunk that ends last.
		var newest chunks.Meta
		ok := false
		cit = series.Iterator(cit)
		for cit.Next() {
			if m := cit.At(); !ok || m.MaxTime > newest.MaxTime {
				newest, ok = m, true
			}
		}
		if err := cit.Err(); err != nil {
			return fmt.Errorf("read series %s: %w", series.Labels(), err)
		}
		if !ok {
			continue
		}
		it = newest.Chunk.Iterator(it)
		var t int64
		var v float64
		got := false
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt == chunkenc.ValFloat {
				t, v = it.At()
				got = true
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("read series %s: %w", series.Labels(), err)
		}
		if got {
			found[key] = tsdb.Series{
				Metric:  metric,
				Tags:    tagsOf(series.Labels()),
				Samples: []tsdb.Sample{{Time: time.UnixMilli(t).UTC(), Value: v}},
			}
		}
	}
	return set.Err()
}

// tagsOf returns the tags of a series: its labels without the metric name.
func tagsOf(ls labels.Labels) map[string]string {
	tags := make(map[string]string, ls.Len()-1)
	ls.Range(func(l labels.Label) {
		if l.Name != nameLabel {
			tags[l.Name] = l.Value
		}
	})
	return tags
}

// compileQuery validates q and turns it into a plan and engine matchers.
func compileQuery(q tsdb.Query) (*plan, []*labels.Matcher, error) {
	ms, groupBy, err := compileMatchers(q.Metric, q.Filters)
	if err != nil {
		return nil, nil, err
	}
	p := &plan{
		metric:  q.Metric,
		mint:    ceilMillis(q.Start),
		maxt:    q.End.UnixMilli(),
		groupBy: groupBy,
	}
	if q.Rate {
		o := q.RateOptions
		if o.CounterMax == 0 {
			o.CounterMax = defaultCounterMax
		}
		p.rate = &o
	}
	if q.ExplicitTags {
		p.explicit = []string{}
		for _, f := range q.Filters {
			// A not_key filter names a tag the series must not have.
			if f.Type != tsdb.NotKey && !slices.Contains(p.explicit, f.Tag) {
				p.explicit = append(p.explicit, f.Tag)
			}
		}
		slices.Sort(p.explicit)
	}
	if q.End.Before(q.Start) {
		return nil, nil, fmt.Errorf("end %s is before start %s: %w", q.End.Format(time.RFC3339), q.Start.Format(time.RFC3339), tsdb.ErrInvalid)
	}
	switch q.Aggregator {
	case "", "none":
	default:
		agg, ok := lookupAggregator(q.Aggregator)
		if !ok {
			return nil, nil, fmt.Errorf("unknown aggregator %q: %w", q.Aggregator, tsdb.ErrInvalid)
		}
		p.agg = &agg
	}
	if d := q.Downsample; d != nil {
		switch {
		case d.All && d.Interval != 0:
			return nil, nil, fmt.Errorf("downsample over all the range with an interval %s: %w", d.Interval, tsdb.ErrInvalid)
		case !d.All && d.Interval < time.Millisecond:
			return nil, nil, fmt.Errorf("downsample interval %s is below 1ms: %w", d.Interval, tsdb.ErrInvalid)
		}
		reduce, ok := lookupDownsampler(d.Aggregator)
		if !ok {
			return nil, nil, fmt.Errorf("unknown downsample aggregator %q: %w", d.Aggregator, tsdb.ErrInvalid)
		}
		ds := &downsampleSpec{all: d.All, interval: d.Interval.Milliseconds(), reduce: reduce}
		switch d.Fill {
		case "", "none":
			ds.fill = fillNone
		case "nan", "null":
			ds.fill = fillNaN
		case "zero":
			ds.fill = fillZero
		default:
			return nil, nil, fmt.Errorf("unknown downsample fill policy %q: %w", d.Fill, tsdb.ErrInvalid)
		}
		if ds.fill != fillNone && !ds.all {
			buckets := floorDiv(p.maxt, ds.interval) - floorDiv(p.mint, ds.interval) + 1
			if buckets > maxFilledBuckets || buckets < 0 {
				return nil, nil, fmt.Errorf("downsample fill %q over %s at %s would make more than %d samples per series: %w",
					d.Fill, q.End.Sub(q.Start), d.Interval, maxFilledBuckets, tsdb.ErrInvalid)
			}
		}
		p.downsample = ds
	}
	return p, ms, nil
}

// ceilMillis is t in milliseconds, rounded up so that a range starting
// inside a millisecond does not include a sample before it.
func ceilMillis(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// compileMatchers turns a metric and its filters into engine matchers, and
// returns the sorted distinct group-by tags.
func compileMatchers(metric string, filters []tsdb.Filter) ([]*labels.Matcher, []string, error) {
	if metric == "" {
		return nil, nil, fmt.Errorf("no metric: %w", tsdb.ErrInvalid)
	}
	ms := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, nameLabel, metric)}
	var groupBy []string
	for _, f := range filters {
		fm, err := filterMatchers(f)
		if err != nil {
			return nil, nil, fmt.Errorf("filter %s(%s=%q): %w", f.Type, f.Tag, f.Expr, err)
		}
		ms = append(ms, fm...)
		if f.GroupBy && f.Type != tsdb.NotKey && !slices.Contains(groupBy, f.Tag) {
			groupBy = append(groupBy, f.Tag)
		}
	}
	slices.Sort(groupBy)
	return ms, groupBy, nil
}

// filterMatchers maps an OpenTSDB filter to engine matchers that select
// exactly the series it selects. The engine anchors regexps at both ends,
// as the filters are. A series without the tag never matches: a matcher
// that would accept the empty value (which is how the engine sees a
// missing label) gets a companion requiring the tag.
func filterMatchers(f tsdb.Filter) ([]*labels.Matcher, error) {
	if f.Tag == "" {
		return nil, fmt.Errorf("no tag: %w", tsdb.ErrInvalid)
	}
	if f.Tag == nameLabel {
		return nil, fmt.Errorf("tag %q is the metric name: %w", f.Tag, tsdb.ErrInvalid)
	}
	if f.Type == tsdb.NotKey {
		// The engine sees a missing label as the empty value.
		if f.Expr != "" {
			return nil, fmt.Errorf("a not_key filter takes no expression: %w", tsdb.ErrInvalid)
		}
		return []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, f.Tag, "")}, nil
	}
	if f.Expr == "" {
		return nil, fmt.Errorf("empty expression: %w", tsdb.ErrInvalid)
	}
	var (
		typ labels.MatchType
		re  string
	)
	switch f.Type {
	case tsdb.LiteralOr, tsdb.ILiteralOr, tsdb.NotLiteralOr, tsdb.NotILiteralOr:
		var alts []string
		for v := range strings.SplitSeq(f.Expr, "|") {
			if v != "" {
				alts = append(alts, regexp.QuoteMeta(v))
			}
		}
		if len(alts) == 0 {
			return nil, fmt.Errorf("no value: %w", tsdb.ErrInvalid)
		}
		re = strings.Join(alts, "|")
		typ = labels.MatchRegexp
		switch f.Type {
		case tsdb.ILiteralOr:
			re = "(?i:" + re + ")"
		case tsdb.NotLiteralOr:
			typ = labels.MatchNotRegexp
		case tsdb.NotILiteralOr:
			re = "(?i:" + re + ")"
			typ = labels.MatchNotRegexp
		}
	case tsdb.Wildcard, tsdb.IWildcard:
		parts := strings.Split(f.Expr, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re = strings.Join(parts, ".*")
		if f.Type == tsdb.IWildcard {
			re = "(?i:" + re + ")"
		}
		typ = labels.MatchRegexp
	case tsdb.Regexp:
		if _, err := regexp.Compile(f.Expr); err != nil {
			return nil, fmt.Errorf("%w: %w", err, tsdb.ErrInvalid)
		}
		re = f.Expr
		typ = labels.MatchRegexp
	default:
		return nil, fmt.Errorf("unknown filter type %q: %w", f.Type, tsdb.ErrInvalid)
	}
	m, err := labels.NewMatcher(typ, f.Tag, re)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, tsdb.ErrInvalid)
	}
	if typ == labels.MatchNotRegexp || m.Matches("") {
		present := labels.MustNewMatcher(labels.MatchNotEqual, f.Tag, "")
		return []*labels.Matcher{m, present}, nil
	}
	return []*labels.Matcher{m}, nil
}
