package embedded

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// This file holds the OpenTSDB query semantics as pure functions over
// samples already read from the engine: downsampling, rate, grouping and
// cross-series aggregation. Nothing here touches the engine.

// rawSeries is one stored series as read for a query: its tags (without the
// metric) and its samples, timestamps in milliseconds, ascending.
type rawSeries struct {
	tags map[string]string
	ts   []int64
	vs   []float64
}

// reduceFunc combines values into one. NaN inputs are ignored, as OpenTSDB's
// aggregators do since 2.2 (they are what fill "nan" and "null" produce); a
// reduce over no usable value yields NaN, except count, which yields 0.
type reduceFunc func(vs []float64) float64

// aggregator is one of OpenTSDB's aggregators: how values are combined and
// whether a series without a point at a timestamp is linearly interpolated
// (lerp) or left out (OpenTSDB's zimsum, mimmin and mimmax: for a sum,
// leaving a series out is the same as counting it as zero).
type aggregator struct {
	reduce reduceFunc
	lerp   bool
}

// lookupAggregator returns the cross-series aggregator called name. "none"
// (and "") is handled apart: it does not combine.
func lookupAggregator(name string) (aggregator, bool) {
	switch name {
	case "sum":
		return aggregator{reduceSum, true}, true
	case "avg":
		return aggregator{reduceAvg, true}, true
	case "min":
		return aggregator{reduceMin, true}, true
	case "max":
		return aggregator{reduceMax, true}, true
	case "dev":
		return aggregator{reduceDev, true}, true
	case "count":
		return aggregator{reduceCount, true}, true
	case "zimsum":
		return aggregator{reduceSum, false}, true
	case "mimmin":
		return aggregator{reduceMin, false}, true
	case "mimmax":
		return aggregator{reduceMax, false}, true
	}
	return aggregator{}, false
}

// lookupDownsampler returns the reduce function a Downsample may name.
// Within one series there is nothing to interpolate, so zimsum, mimmin and
// mimmax are plain sum, min and max; first and last are OpenTSDB 2.3's
// additions.
func lookupDownsampler(name string) (reduceFunc, bool) {
	switch name {
	case "first":
		return reduceFirst, true
	case "last":
		return reduceLast, true
	}
	a, ok := lookupAggregator(name)
	return a.reduce, ok
}

func reduceSum(vs []float64) float64 {
	sum, n := 0.0, 0
	for _, v := range vs {
		if !math.IsNaN(v) {
			sum += v
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum
}

func reduceAvg(vs []float64) float64 {
	sum, n := 0.0, 0
	for _, v := range vs {
		if !math.IsNaN(v) {
			sum += v
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

func reduceMin(vs []float64) float64 {
	m := math.NaN()
	for _, v := range vs {
		if !math.IsNaN(v) && (math.IsNaN(m) || v < m) {
			m = v
		}
	}
	return m
}

func reduceMax(vs []float64) float64 {
	m := math.NaN()
	for _, v := range vs {
		if !math.IsNaN(v) && (math.IsNaN(m) || v > m) {
			m = v
		}
	}
	return m
}

// reduceDev is the population standard deviation, as OpenTSDB's dev
// computes it (Welford's method, divided by n): one value has deviation 0.
func reduceDev(vs []float64) float64 {
	mean, m2, n := 0.0, 0.0, 0
	for _, v := range vs {
		if math.IsNaN(v) {
			continue
		}
		n++
		d := v - mean
		mean += d / float64(n)
		m2 += d * (v - mean)
	}
	if n == 0 {
		return math.NaN()
	}
	return math.Sqrt(m2 / float64(n))
}

func reduceCount(vs []float64) float64 {
	n := 0
	for _, v := range vs {
		if !math.IsNaN(v) {
			n++
		}
	}
	return float64(n)
}

func reduceFirst(vs []float64) float64 {
	for _, v := range vs {
		if !math.IsNaN(v) {
			return v
		}
	}
	return math.NaN()
}

func reduceLast(vs []float64) float64 {
	for i := len(vs) - 1; i >= 0; i-- {
		if !math.IsNaN(vs[i]) {
			return vs[i]
		}
	}
	return math.NaN()
}

// fillPolicy says what an empty downsampling bucket yields.
type fillPolicy int

const (
	fillNone fillPolicy = iota // no sample
	fillNaN                    // a NaN sample ("nan" and "null")
	fillZero                   // a zero sample
)

// maxFilledBuckets bounds the buckets one series may get from a fill policy
// other than none, which emits a sample for every interval of the query
// range whether or not there is data: a 1s interval over a year would
// otherwise allocate 31 million samples per series.
const maxFilledBuckets = 1 << 20

// downsampleSpec is a validated tsdb.Downsample.
type downsampleSpec struct {
	all      bool  // one bucket over the whole range; interval and fill unused
	interval int64 // milliseconds, > 0
	reduce   reduceFunc
	fill     fillPolicy
}

// defaultCounterMax is OpenTSDB's counterMax default, Java's Long.MAX_VALUE.
const defaultCounterMax = float64(math.MaxInt64)

// plan is a validated query, ready to evaluate over raw series.
type plan struct {
	metric     string
	mint, maxt int64       // inclusive, milliseconds
	agg        *aggregator // nil: "none", every series on its own
	downsample *downsampleSpec
	rate       *tsdb.RateOptions // nil: no rate; CounterMax set
	explicit   []string          // with explicitTags: the filters' sorted distinct tags, else nil
	groupBy    []string          // sorted, distinct
}

// floorDiv rounds a/b towards minus infinity, so buckets stay aligned to
// multiples of the interval for timestamps before the epoch too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// downsample puts the samples of one series into buckets aligned to
// multiples of d.interval since the epoch and reduces each bucket to one
// sample stamped with the bucket's start. With a fill policy, every bucket
// from the one holding mint to the one holding maxt gets a sample.
func downsample(ts []int64, vs []float64, d *downsampleSpec, mint, maxt int64) ([]int64, []float64) {
	var outT []int64
	var outV []float64
	emitFill := func(from, to int64) { // buckets [from, to) without data
		if d.fill == fillNone {
			return
		}
		fv := 0.0
		if d.fill == fillNaN {
			fv = math.NaN()
		}
		for b := from; b < to; b += d.interval {
			outT = append(outT, b)
			outV = append(outV, fv)
		}
	}
	next := floorDiv(mint, d.interval) * d.interval // first bucket not yet emitted
	for i := 0; i < len(ts); {
		b := floorDiv(ts[i], d.interval) * d.interval
		j := i + 1
		for j < len(ts) && ts[j] < b+d.interval {
			j++
		}
		emitFill(next, b)
		outT = append(outT, b)
		outV = append(outV, d.reduce(vs[i:j]))
		next = b + d.interval
		i = j
	}
	emitFill(next, floorDiv(maxt, d.interval)*d.interval+d.interval)
	return outT, outV
}

// downsampleAll reduces a series to one sample stamped with mint, as
// OpenTSDB 2.4's "0all-" downsampler does.
func downsampleAll(vs []float64, d *downsampleSpec, mint int64) ([]int64, []float64) {
	return []int64{mint}, []float64{d.reduce(vs)}
}

// rate turns a series into its per-second rate of change between
// consecutive samples, stamped with the later one; the first sample has no
// predecessor and is dropped. It is OpenTSDB's RateSpan: for a counter
// (o.Counter), a decrease is a wrap at o.CounterMax (or a reset), so the
// rate across it is computed across the wrap, left out with o.DropResets,
// and turned into 0 when o.ResetValue is positive and the rate exceeds it.
func rate(ts []int64, vs []float64, o *tsdb.RateOptions) ([]int64, []float64) {
	if len(ts) < 2 {
		return nil, nil
	}
	outT := make([]int64, 0, len(ts)-1)
	outV := make([]float64, 0, len(ts)-1)
	for i := 1; i < len(ts); i++ {
		dt := float64(ts[i]-ts[i-1]) / 1000
		r := (vs[i] - vs[i-1]) / dt
		if o.Counter && vs[i] < vs[i-1] {
			if o.DropResets {
				continue
			}
			r = (o.CounterMax - vs[i-1] + vs[i]) / dt
			if o.ResetValue > 0 && r > o.ResetValue {
				r = 0
			}
		}
		outT = append(outT, ts[i])
		outV = append(outV, r)
	}
	return outT, outV
}

// hasExactly says whether tags has exactly the keys keys (sorted,
// distinct): OpenTSDB's explicitTags.
func hasExactly(tags map[string]string, keys []string) bool {
	if len(tags) != len(keys) {
		return false
	}
	for _, k := range keys {
		if _, ok := tags[k]; !ok {
			return false
		}
	}
	return true
}

// aggregate combines series into one over the union of their timestamps.
// At a timestamp where a series has no sample it is interpolated linearly
// between its neighbours when agg.lerp is set and the timestamp lies
// between the series' first and last samples; otherwise it is left out.
//
// The cost is O(union timestamps × series), as in OpenTSDB: linear
// interpolation needs every series' value at every timestamp.
func aggregate(series []rawSeries, agg aggregator) ([]int64, []float64) {
	cur := make([]int, len(series))
	vals := make([]float64, 0, len(series))
	var outT []int64
	var outV []float64
	for {
		t, more := int64(math.MaxInt64), false
		for i, s := range series {
			if c := cur[i]; c < len(s.ts) && s.ts[c] <= t {
				t, more = s.ts[c], true
			}
		}
		if !more {
			return outT, outV
		}
		vals = vals[:0]
		for i, s := range series {
			c := cur[i]
			switch {
			case c < len(s.ts) && s.ts[c] == t:
				vals = append(vals, s.vs[c])
				cur[i]++
			case agg.lerp && c > 0 && c < len(s.ts):
				// s.ts[c-1] < t < s.ts[c]: t is inside the series.
				t0, t1 := s.ts[c-1], s.ts[c]
				v0, v1 := s.vs[c-1], s.vs[c]
				vals = append(vals, v0+(v1-v0)*float64(t-t0)/float64(t1-t0))
			}
		}
		outT = append(outT, t)
		outV = append(outV, agg.reduce(vals))
	}
}

// evaluate applies p to the raw series that matched its filters: series
// without exactly the explicit tags are left out, each other series is
// downsampled, then turned into a rate (OpenTSDB's order), then the series
// are grouped by p.groupBy and each group aggregated. The answer is sorted
// by tags; series left without samples are omitted.
func evaluate(p *plan, raws []rawSeries) []tsdb.Series {
	prepared := raws[:0:0]
	for _, r := range raws {
		if p.explicit != nil && !hasExactly(r.tags, p.explicit) {
			continue
		}
		switch {
		case p.downsample == nil:
		case p.downsample.all:
			r.ts, r.vs = downsampleAll(r.vs, p.downsample, p.mint)
		default:
			r.ts, r.vs = downsample(r.ts, r.vs, p.downsample, p.mint, p.maxt)
		}
		if p.rate != nil {
			r.ts, r.vs = rate(r.ts, r.vs, p.rate)
		}
		if len(r.ts) > 0 {
			prepared = append(prepared, r)
		}
	}

	var out []tsdb.Series
	if p.agg == nil {
		for _, r := range prepared {
			out = append(out, tsdb.Series{
				Metric:  p.metric,
				Tags:    r.tags,
				Samples: samples(r.ts, r.vs),
			})
		}
		sortSeries(out)
		return out
	}

	groups := map[string][]rawSeries{}
	var keys []string
	var kb strings.Builder
	for _, r := range prepared {
		kb.Reset()
		for _, k := range p.groupBy {
			kb.WriteString(r.tags[k])
			kb.WriteByte(0xff) // never inside a valid tag value
		}
		k := kb.String()
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range keys {
		g := groups[k]
		ts, vs := aggregate(g, *p.agg)
		tags, aggTags := commonTags(g)
		out = append(out, tsdb.Series{
			Metric:         p.metric,
			Tags:           tags,
			AggregatedTags: aggTags,
			Samples:        samples(ts, vs),
		})
	}
	sortSeries(out)
	return out
}

// commonTags splits the tag keys of a group into those with one value in
// every series and the rest, sorted.
func commonTags(g []rawSeries) (map[string]string, []string) {
	common := map[string]string{}
	var differ []string
	seen := map[string]bool{}
	for _, r := range g {
		for k := range r.tags {
			if seen[k] {
				continue
			}
			seen[k] = true
			v, same := r.tags[k], true
			for _, o := range g {
				if ov, ok := o.tags[k]; !ok || ov != v {
					same = false
					break
				}
			}
			if same {
				common[k] = v
			} else {
				differ = append(differ, k)
			}
		}
	}
	slices.Sort(differ)
	return common, differ
}

func samples(ts []int64, vs []float64) []tsdb.Sample {
	out := make([]tsdb.Sample, len(ts))
	for i := range ts {
		out[i] = tsdb.Sample{Time: time.UnixMilli(ts[i]).UTC(), Value: vs[i]}
	}
	return out
}

// sortSeries orders an answer by its tags, compared as sorted key=value
// lists, so the same data always yields the same order.
func sortSeries(ss []tsdb.Series) {
	type keyed struct {
		key string
		s   tsdb.Series
	}
	tmp := make([]keyed, len(ss))
	for i, s := range ss {
		tmp[i] = keyed{tagString(s.Tags), s}
	}
	slices.SortStableFunc(tmp, func(a, b keyed) int { return cmp.Compare(a.key, b.key) })
	for i := range tmp {
		ss[i] = tmp[i].s
	}
}

// tagString renders tags as "k=v,k=v" sorted by key, for ordering and for
// naming a point in an error.
func tagString(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(tags[k])
	}
	return b.String()
}
