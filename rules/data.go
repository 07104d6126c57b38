package rules

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Querier answers TSDB queries; tsdb.Store satisfies it.
type Querier interface {
	Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error)
}

var _ Querier = tsdb.Store(nil)

// QueryKey names one prefetched query: a metric over a window ending at
// the tick's time.
type QueryKey struct {
	Metric string
	Window time.Duration
}

// String returns "metric over window".
func (k QueryKey) String() string { return fmt.Sprintf("%s over %s", k.Metric, k.Window) }

// QueryError is the error of a condition whose TSDB query failed or was not
// prefetched. The instance is then unknown, with this error as the reason.
type QueryError struct {
	QueryKey
	Err error
}

// Error names the metric and window and says what went wrong.
func (e *QueryError) Error() string {
	return fmt.Sprintf("query %s over %s: %v", e.Metric, e.Window, e.Err)
}

// Unwrap returns the store's error, so errors.Is(err, tsdb.ErrUnavailable) works.
func (e *QueryError) Unwrap() error { return e.Err }

// errNotFetched is a QueryError's Err when Env.Data lacks the query: Data
// is nil or came from another Set.
var errNotFetched = fmt.Errorf("not prefetched for this tick")

// Data is the TSDB series of one tick, fetched by Set.Prefetch with one
// query per metric and window, and indexed by tag so that each rule
// instance reads only its own series. It is immutable and safe for
// concurrent use.
type Data struct {
	queries int
	results map[QueryKey]*result
}

// result is the answer to one query: per series, the aggregates the
// functions combine, and an index tag → value → series.
type result struct {
	err    error
	series []seriesStats
	index  map[string]map[string][]int32
}

// seriesStats are a series' aggregates over the window, computed once per
// tick so that a rule instance combines a few numbers per series.
type seriesStats struct {
	tags     map[string]string
	count    int
	sum      float64
	min, max float64
	last     tsdb.Sample
	// increase is the counter's increase from its first to its last sample,
	// counting a drop as a reset to zero; span is the time between them.
	increase float64
	span     time.Duration
}

// Queries returns the number of TSDB queries issued to build d.
func (d *Data) Queries() int {
	if d == nil {
		return 0
	}
	return d.queries
}

// Err returns the error of the query for metric over window, nil when it
// succeeded or was not made.
func (d *Data) Err(metric string, window time.Duration) error {
	if d == nil {
		return nil
	}
	if r := d.results[QueryKey{metric, window}]; r != nil {
		return r.err
	}
	return nil
}

// prefetchParallel bounds the queries of one tick in flight at once.
const prefetchParallel = 4

// prefetch issues one query per key, at most prefetchParallel at once, and
// returns when all have finished or failed. A failed query is kept as the
// error of its key.
func prefetch(ctx context.Context, q Querier, now time.Time, keys []QueryKey) *Data {
	d := &Data{results: make(map[QueryKey]*result, len(keys))}
	results := make([]*result, len(keys))
	sem := make(chan struct{}, prefetchParallel)
	var wg sync.WaitGroup
	for i, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			series, err := q.Query(ctx, tsdb.Query{
				Metric: k.Metric, Start: now.Add(-k.Window), End: now, Aggregator: "none",
			})
			if err != nil {
				results[i] = &result{err: err}
				return
			}
			results[i] = newResult(series)
		})
	}
	wg.Wait()
	for i, k := range keys {
		d.results[k] = results[i]
	}
	d.queries = len(keys)
	return d
}

// NewData returns Data holding the given answers as if prefetched, for
// tests and tools that have series at hand. An entry of errs marks that
// query failed.
func NewData(series map[QueryKey][]tsdb.Series, errs map[QueryKey]error) *Data {
	d := &Data{results: make(map[QueryKey]*result, len(series)+len(errs))}
	for k, s := range series {
		d.results[k] = newResult(s)
	}
	for k, err := range errs {
		d.results[k] = &result{err: err}
	}
	return d
}

func newResult(series []tsdb.Series) *result {
	r := &result{series: make([]seriesStats, 0, len(series)), index: make(map[string]map[string][]int32)}
	for _, s := range series {
		if len(s.Samples) == 0 {
			continue
		}
		st := seriesStats{tags: s.Tags, min: math.Inf(1), max: math.Inf(-1)}
		samples := s.Samples
		if !slices.IsSortedFunc(samples, func(a, b tsdb.Sample) int { return a.Time.Compare(b.Time) }) {
			samples = slices.Clone(samples)
			slices.SortStableFunc(samples, func(a, b tsdb.Sample) int { return a.Time.Compare(b.Time) })
		}
		for i, p := range samples {
			st.count++
			st.sum += p.Value
			st.min = min(st.min, p.Value)
			st.max = max(st.max, p.Value)
			if i > 0 {
				if prev := samples[i-1].Value; p.Value >= prev {
					st.increase += p.Value - prev
				} else {
					st.increase += p.Value // a counter reset: it restarted from zero
				}
			}
		}
		st.last = samples[len(samples)-1]
		st.span = st.last.Time.Sub(samples[0].Time)
		i := int32(len(r.series))
		r.series = append(r.series, st)
		for k, v := range s.Tags {
			byValue := r.index[k]
			if byValue == nil {
				byValue = make(map[string][]int32)
				r.index[k] = byValue
			}
			byValue[v] = append(byValue[v], i)
		}
	}
	return r
}

// agg names the function a condition calls over the TSDB.
type agg int

const (
	aggAvg agg = iota
	aggMin
	aggMax
	aggSum
	aggLast
	aggCount
	aggRate
	aggNodata
)

// tsdbFuncs are the functions over prefetched series, by name as
// conditions call them.
var tsdbFuncs = map[string]agg{
	"avg": aggAvg, "min": aggMin, "max": aggMax, "sum": aggSum,
	"last": aggLast, "count": aggCount, "rate": aggRate, "nodata": aggNodata,
}

// eval computes fn over the series of key that match filter. See the
// package documentation in docs/RULES.md for each function's definition.
func (d *Data) eval(fn agg, key QueryKey, filter map[string]any) (any, error) {
	var r *result
	if d != nil {
		r = d.results[key]
	}
	if r == nil {
		return nil, &QueryError{QueryKey: key, Err: errNotFetched}
	}
	if r.err != nil {
		return nil, &QueryError{QueryKey: key, Err: r.err}
	}
	tags, err := filterTags(filter)
	if err != nil {
		return nil, err
	}
	var (
		count, n       int
		sum, rate      float64
		lo, hi         = math.Inf(1), math.Inf(-1)
		last           tsdb.Sample
		rated, hasLast bool
	)
	r.each(tags, func(s *seriesStats) {
		n++
		count += s.count
		sum += s.sum
		lo, hi = min(lo, s.min), max(hi, s.max)
		if !hasLast || s.last.Time.After(last.Time) {
			last, hasLast = s.last, true
		}
		if s.span > 0 {
			rate += s.increase / s.span.Seconds()
			rated = true
		}
	})
	switch fn {
	case aggCount:
		return float64(count), nil
	case aggNodata:
		return count == 0, nil
	}
	if count == 0 {
		return math.NaN(), nil
	}
	switch fn {
	case aggAvg:
		return sum / float64(count), nil
	case aggMin:
		return lo, nil
	case aggMax:
		return hi, nil
	case aggSum:
		return sum, nil
	case aggLast:
		return last.Value, nil
	case aggRate:
		if !rated {
			return math.NaN(), nil
		}
		return rate, nil
	}
	return nil, fmt.Errorf("unknown function %d", fn)
}

// tagFilter is one tag of a function's filter: an exact value, or a
// wildcard when the value holds a *.
type tagFilter struct {
	key, value string
	wildcard   bool
}

func filterTags(m map[string]any) ([]tagFilter, error) {
	tags := make([]tagFilter, 0, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("tag %q: want a string, got %T", k, v)
		}
		tags = append(tags, tagFilter{key: k, value: s, wildcard: strings.Contains(s, "*")})
	}
	return tags, nil
}

// each calls fn for every series whose tags match all of tags.
func (r *result) each(tags []tagFilter, fn func(*seriesStats)) {
	// Walk the shortest list of series that one exact tag allows; with no
	// exact tag, all of them.
	var candidates []int32
	exact := false
	for _, t := range tags {
		if t.wildcard {
			continue
		}
		ids := r.index[t.key][t.value]
		if !exact || len(ids) < len(candidates) {
			candidates, exact = ids, true
		}
	}
	match := func(s *seriesStats) bool {
		for _, t := range tags {
			v, ok := s.tags[t.key]
			if !ok || (t.wildcard && !wildcardMatch(t.value, v)) || (!t.wildcard && v != t.value) {
				return false
			}
		}
		return true
	}
	if exact {
		for _, i := range candidates {
			if s := &r.series[i]; match(s) {
				fn(s)
			}
		}
		return
	}
	for i := range r.series {
		if s := &r.series[i]; match(s) {
			fn(s)
		}
	}
}

// wildcardMatch reports whether s matches pattern, in which * stands for
// any run of characters, / included, as in OpenTSDB's wildcard filter.
func wildcardMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	last := len(parts) - 1
	if last == 0 {
		return s == pattern
	}
	if len(s) < len(parts[0])+len(parts[last]) || !strings.HasPrefix(s, parts[0]) || !strings.HasSuffix(s, parts[last]) {
		return false
	}
	// The middle parts must appear in order between prefix and suffix;
	// taking each at its leftmost place leaves the most room for the rest.
	s = s[len(parts[0]) : len(s)-len(parts[last])]
	for _, p := range parts[1:last] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}
