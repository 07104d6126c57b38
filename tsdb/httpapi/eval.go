package httpapi

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// This file evaluates what tsdb.Query cannot express (counter rates,
// explicitTags and the "all" downsampler) over the raw, per-series answer
// of the store, with OpenTSDB's order: downsample, then rate, then group
// and aggregate. The aggregation follows embedded's (and OpenTSDB's):
// linear interpolation except for zimsum, mimmin and mimmax, and NaN
// ignored.

// reduceFunc combines values into one, ignoring NaN; over no usable value
// it yields NaN, except count, which yields 0.
type reduceFunc func(vs []float64) float64

// reducer returns the function called name (an aggregator or downsampler)
// and whether a missing value is interpolated when it aggregates series.
func reducer(name string) (fn reduceFunc, lerp bool) {
	switch name {
	case "sum":
		return reduceSum, true
	case "zimsum":
		return reduceSum, false
	case "avg":
		return reduceAvg, true
	case "min":
		return reduceMin, true
	case "mimmin":
		return reduceMin, false
	case "max":
		return reduceMax, true
	case "mimmax":
		return reduceMax, false
	case "dev":
		return reduceDev, true
	case "count":
		return reduceCount, true
	case "first":
		return reduceFirst, false
	case "last":
		return reduceLast, false
	}
	return nil, false
}

func usable(vs []float64) []float64 {
	out := vs[:0:0]
	for _, v := range vs {
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

func reduceSum(vs []float64) float64 {
	vs = usable(vs)
	if len(vs) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, v := range vs {
		s += v
	}
	return s
}

func reduceAvg(vs []float64) float64 {
	vs = usable(vs)
	if len(vs) == 0 {
		return math.NaN()
	}
	return reduceSum(vs) / float64(len(vs))
}

func reduceMin(vs []float64) float64 {
	vs = usable(vs)
	if len(vs) == 0 {
		return math.NaN()
	}
	return slices.Min(vs)
}

func reduceMax(vs []float64) float64 {
	vs = usable(vs)
	if len(vs) == 0 {
		return math.NaN()
	}
	return slices.Max(vs)
}

// reduceDev is the population standard deviation, as OpenTSDB's dev.
func reduceDev(vs []float64) float64 {
	vs = usable(vs)
	if len(vs) == 0 {
		return math.NaN()
	}
	mean := reduceAvg(vs)
	ss := 0.0
	for _, v := range vs {
		ss += (v - mean) * (v - mean)
	}
	return math.Sqrt(ss / float64(len(vs)))
}

func reduceCount(vs []float64) float64 { return float64(len(usable(vs))) }

func reduceFirst(vs []float64) float64 {
	if vs = usable(vs); len(vs) > 0 {
		return vs[0]
	}
	return math.NaN()
}

func reduceLast(vs []float64) float64 {
	if vs = usable(vs); len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return math.NaN()
}

// downsampleAll reduces a series to one sample stamped with the query's
// start, as OpenTSDB 2.4's "0all-" downsampler does.
func downsampleAll(s []tsdb.Sample, fn reduceFunc, start time.Time) []tsdb.Sample {
	vs := make([]float64, len(s))
	for i := range s {
		vs[i] = s[i].Value
	}
	return []tsdb.Sample{{Time: start, Value: fn(vs)}}
}

// counterRate is OpenTSDB's RateSpan: the per-second rate between
// consecutive samples, stamped with the later one. With counter set, a
// decrease is a counter that wrapped at counterMax (or was reset): the
// rate is computed across the wrap, dropped with dropResets, and turned
// into 0 when resetValue is positive and the rate exceeds it.
func counterRate(s []tsdb.Sample, p *plan) []tsdb.Sample {
	if len(s) < 2 {
		return nil
	}
	out := make([]tsdb.Sample, 0, len(s)-1)
	prev := s[0]
	for _, cur := range s[1:] {
		dt := cur.Time.Sub(prev.Time).Seconds()
		diff := cur.Value - prev.Value
		if p.counter && diff < 0 {
			if p.dropResets {
				prev = cur
				continue
			}
			r := (p.counterMax - prev.Value + cur.Value) / dt
			if p.resetValue > 0 && r > p.resetValue {
				r = 0
			}
			out = append(out, tsdb.Sample{Time: cur.Time, Value: r})
		} else {
			out = append(out, tsdb.Sample{Time: cur.Time, Value: diff / dt})
		}
		prev = cur
	}
	return out
}

// group is one output series with the series it was made of.
type group struct {
	series  tsdb.Series
	members []map[string]string
}

// groupBy returns the sorted distinct tags of filters with GroupBy.
func groupByTags(filters []tsdb.Filter) []string {
	var gb []string
	for _, f := range filters {
		if f.GroupBy && !slices.Contains(gb, f.Tag) {
			gb = append(gb, f.Tag)
		}
	}
	slices.Sort(gb)
	return gb
}

// groupKey is the values of gb in tags, joined by a byte no tag value holds.
func groupKey(tags map[string]string, gb []string) string {
	var b strings.Builder
	for _, k := range gb {
		b.WriteString(tags[k])
		b.WriteByte(0xff)
	}
	return b.String()
}

// aggregateGroups groups series by the group-by tags and aggregates each
// group with agg ("none": every series on its own).
func aggregateGroups(metric string, series []tsdb.Series, agg string, gb []string) []group {
	var out []group
	if agg == "none" {
		for _, s := range series {
			out = append(out, group{series: s, members: []map[string]string{s.Tags}})
		}
		return out
	}
	fn, lerp := reducer(agg)
	idx := map[string]int{}
	var members [][]tsdb.Series
	for _, s := range series {
		k := groupKey(s.Tags, gb)
		i, ok := idx[k]
		if !ok {
			i = len(members)
			idx[k] = i
			members = append(members, nil)
		}
		members[i] = append(members[i], s)
	}
	for _, g := range members {
		tags, aggTags := commonTags(g)
		grp := group{series: tsdb.Series{Metric: metric, Tags: tags, AggregatedTags: aggTags, Samples: aggregate(g, fn, lerp)}}
		for _, s := range g {
			grp.members = append(grp.members, s.Tags)
		}
		out = append(out, grp)
	}
	return out
}

// aggregate combines series over the union of their timestamps. Where a
// series has no sample it is interpolated between its neighbours when lerp
// is set and the time lies inside the series, else left out.
func aggregate(series []tsdb.Series, fn reduceFunc, lerp bool) []tsdb.Sample {
	cur := make([]int, len(series))
	vals := make([]float64, 0, len(series))
	var out []tsdb.Sample
	for {
		var t time.Time
		more := false
		for i, s := range series {
			if c := cur[i]; c < len(s.Samples) && (!more || s.Samples[c].Time.Before(t)) {
				t, more = s.Samples[c].Time, true
			}
		}
		if !more {
			return out
		}
		vals = vals[:0]
		for i, s := range series {
			c := cur[i]
			switch {
			case c < len(s.Samples) && s.Samples[c].Time.Equal(t):
				vals = append(vals, s.Samples[c].Value)
				cur[i]++
			case lerp && c > 0 && c < len(s.Samples):
				a, b := s.Samples[c-1], s.Samples[c]
				frac := float64(t.Sub(a.Time)) / float64(b.Time.Sub(a.Time))
				vals = append(vals, a.Value+(b.Value-a.Value)*frac)
			}
		}
		out = append(out, tsdb.Sample{Time: t, Value: fn(vals)})
	}
}

// commonTags splits the tag keys of a group into those with one value in
// every series and the rest, sorted.
func commonTags(g []tsdb.Series) (map[string]string, []string) {
	common := map[string]string{}
	var differ []string
	seen := map[string]bool{}
	for _, s := range g {
		for k, v := range s.Tags {
			if seen[k] {
				continue
			}
			seen[k] = true
			same := true
			for _, o := range g {
				if ov, ok := o.Tags[k]; !ok || ov != v {
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

// sortGroups orders an answer by tags, as the store orders its own.
func sortGroups(gs []group) {
	slices.SortStableFunc(gs, func(a, b group) int { return cmp.Compare(tagString(a.series.Tags), tagString(b.series.Tags)) })
}

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
		b.WriteString(k + "=" + tags[k])
	}
	return b.String()
}
