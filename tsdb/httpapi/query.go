package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// serveQuery answers /api/query: GET with m= parameters, POST with a JSON
// body. DELETE is OpenTSDB's query-and-delete, which the store does not
// offer.
func (h *handler) serveQuery(w http.ResponseWriter, r *http.Request) error {
	var (
		req *request
		err error
	)
	switch r.Method {
	case http.MethodDelete:
		return badRequest("Deleting data is not enabled", "the embedded store does not delete data through the query endpoint")
	case http.MethodGet:
		req, err = h.parseQueryString(r)
	default:
		var body []byte
		if body, err = h.readBody(w, r); err == nil {
			req, err = h.parseQueryJSON(body)
		}
	}
	if err != nil {
		return err
	}
	// OpenTSDB 2.4's JSON serializer: dps as [[time, value], ...], in the
	// query string of either method (Grafana's "==2.4" setting asks so
	// for its server-side queries).
	req.arrays = flag(r, "arrays")
	out, err := h.runQuery(r.Context(), req)
	if err != nil {
		return err
	}
	writeBody(w, http.StatusOK, out)
	return nil
}

// runQuery evaluates every sub query and renders the answer.
func (h *handler) runQuery(ctx context.Context, req *request) ([]byte, error) {
	var global []tsdb.Annotation
	if req.globalAnnotations && h.annotator != nil {
		var err error
		if global, err = h.annotator.Annotations(ctx, "", req.start, req.end); err != nil {
			return nil, err
		}
	}
	wantTSUIDs := h.tsuider != nil && (req.showTSUIDs || !req.noAnnotations && h.annotator != nil)
	buf := bytes.NewBuffer(make([]byte, 0, 4096))
	buf.WriteByte('[')
	first := true
	for i := range req.plans {
		p := &req.plans[i]
		groups, err := h.evaluate(ctx, req, p, wantTSUIDs)
		if err != nil {
			return nil, err
		}
		var shown []byte // the same for every series of p
		if req.showQuery {
			shown, _ = json.Marshal(p.shown()) // our own types always marshal
		}
		for _, g := range groups {
			if !first {
				buf.WriteByte(',')
			}
			first = false
			if err := h.render(ctx, buf, req, p, g, global, shown); err != nil {
				return nil, err
			}
		}
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// group is one answer series with the tags of the stored series it was
// made of, which name its TSUIDs.
type group struct {
	series  tsdb.Series
	members []map[string]string
}

// evaluate answers one sub query from the store.
func (h *handler) evaluate(ctx context.Context, req *request, p *plan, wantMembers bool) ([]group, error) {
	series, err := h.store.Query(ctx, p.query(req.start, req.end))
	if err != nil {
		return nil, err
	}
	groups := make([]group, len(series))
	for i, s := range series {
		groups[i].series = s
	}
	if wantMembers && len(groups) > 0 {
		if err := h.findMembers(ctx, req, p, groups); err != nil {
			return nil, err
		}
	}
	return groups, nil
}

// findMembers fills in the series each group was made of, from the
// store's index when it can list series, else from its samples. The index
// knows no explicitTags, so the store answers those.
func (h *handler) findMembers(ctx context.Context, req *request, p *plan, groups []group) error {
	var all []map[string]string
	if h.lister != nil && !p.explicitTags {
		var err error
		if all, err = h.lister.ListSeries(ctx, p.metric, p.filters, req.start, req.end); err != nil {
			return err
		}
	} else {
		raw, err := h.store.Query(ctx, tsdb.Query{Metric: p.metric, Filters: p.filters, Start: req.start, End: req.end, Aggregator: "none", ExplicitTags: p.explicitTags})
		if err != nil {
			return err
		}
		for _, s := range raw {
			all = append(all, s.Tags)
		}
	}
	if p.agg == "none" {
		// Each answer series is one stored series.
		for i := range groups {
			groups[i].members = []map[string]string{groups[i].series.Tags}
		}
		return nil
	}
	gb := groupByTags(p.filters)
	idx := make(map[string]int, len(groups))
	for i, g := range groups {
		idx[groupKey(g.series.Tags, gb)] = i
	}
	for _, tags := range all {
		if i, ok := idx[groupKey(tags, gb)]; ok {
			groups[i].members = append(groups[i].members, tags)
		}
	}
	return nil
}

// groupByTags returns the sorted distinct tags of filters with GroupBy.
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

// render appends one answer series to buf.
func (h *handler) render(ctx context.Context, buf *bytes.Buffer, req *request, p *plan, g group, global []tsdb.Annotation, shown []byte) error {
	s := g.series
	tags := s.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	aggTags := s.AggregatedTags
	if aggTags == nil {
		aggTags = []string{}
	}
	buf.WriteString(`{"metric":`)
	writeJSONValue(buf, s.Metric)
	buf.WriteString(`,"tags":`)
	writeJSONValue(buf, tags)
	buf.WriteString(`,"aggregateTags":`)
	writeJSONValue(buf, aggTags)
	buf.WriteString(`,"dps":`)
	writeDPS(buf, s.Samples, req.msResolution, req.arrays, p)

	var tsuids []string
	if h.tsuider != nil {
		for _, m := range g.members {
			tsuids = append(tsuids, h.tsuider.TSUID(s.Metric, m))
		}
		slices.Sort(tsuids)
		tsuids = slices.Compact(tsuids)
	}
	if !req.noAnnotations && h.annotator != nil {
		var notes []tsdb.Annotation
		for _, id := range tsuids {
			as, err := h.annotator.Annotations(ctx, id, req.start, req.end)
			if err != nil {
				return err
			}
			notes = append(notes, as...)
		}
		if len(notes) > 0 {
			slices.SortStableFunc(notes, func(a, b tsdb.Annotation) int { return a.Start.Compare(b.Start) })
			buf.WriteString(`,"annotations":`)
			writeJSONValue(buf, notes)
		}
	}
	if len(global) > 0 {
		buf.WriteString(`,"globalAnnotations":`)
		writeJSONValue(buf, global)
	}
	if req.showTSUIDs {
		if tsuids == nil {
			tsuids = []string{}
		}
		buf.WriteString(`,"tsuids":`)
		writeJSONValue(buf, tsuids)
	}
	if shown != nil {
		buf.WriteString(`,"query":`)
		buf.Write(shown)
	}
	buf.WriteByte('}')
	return nil
}

// shownQuery is a sub query as showQuery echoes it with each answer
// series: OpenTSDB 2.3+'s TSSubQuery, with index its place in the
// request's queries. Grafana's "==2.3" setting maps each answer series to
// its panel query by index.
type shownQuery struct {
	Aggregator   string            `json:"aggregator"`
	Metric       string            `json:"metric"`
	TSUIDs       []string          `json:"tsuids"`
	Downsample   *string           `json:"downsample"`
	Rate         bool              `json:"rate"`
	Filters      []shownFilter     `json:"filters"`
	Index        int               `json:"index"`
	Tags         map[string]string `json:"tags"`
	RateOptions  *shownRate        `json:"rateOptions"`
	ExplicitTags bool              `json:"explicitTags"`
	Percentiles  []float64         `json:"percentiles"`
}

// shownFilter is a filter as OpenTSDB writes it (group_by, unlike the
// groupBy it reads).
type shownFilter struct {
	Tagk    string `json:"tagk"`
	Filter  string `json:"filter"`
	GroupBy bool   `json:"group_by"`
	Type    string `json:"type"`
}

type shownRate struct {
	Counter    bool    `json:"counter"`
	CounterMax float64 `json:"counterMax"`
	ResetValue float64 `json:"resetValue"`
	DropResets bool    `json:"dropResets"`
}

// shown returns p as showQuery echoes it. Tags holds the group-by
// filters as "type(expr)", as OpenTSDB fills it in after merging tags and
// filters.
func (p *plan) shown() shownQuery {
	q := shownQuery{Aggregator: p.agg, Metric: p.metric, Rate: p.rate, Index: p.index,
		ExplicitTags: p.explicitTags, Filters: []shownFilter{}, Tags: map[string]string{}}
	if p.downsampleSpec != "" {
		q.Downsample = &p.downsampleSpec
	}
	for _, f := range p.filters {
		q.Filters = append(q.Filters, shownFilter{Tagk: f.Tag, Filter: f.Expr, GroupBy: f.GroupBy, Type: string(f.Type)})
		if f.GroupBy {
			q.Tags[f.Tag] = string(f.Type) + "(" + f.Expr + ")"
		}
	}
	if p.rate {
		o := p.rateOptions
		if o.CounterMax == 0 {
			o.CounterMax = math.MaxInt64
		}
		q.RateOptions = &shownRate{Counter: o.Counter, CounterMax: o.CounterMax, ResetValue: o.ResetValue, DropResets: o.DropResets}
	}
	return q
}

func writeJSONValue(buf *bytes.Buffer, v any) {
	b, _ := json.Marshal(v) // strings, maps of strings and our structs always marshal
	buf.Write(b)
}

// writeDPS writes samples as OpenTSDB's "dps" object, keys in time order,
// or with arrays as its array of [time, value] pairs.
// In seconds (without msResolution) the samples of one second are
// combined into one (see secondReducer). NaN is written as the string
// "NaN", or null under the fill policy null, as OpenTSDB writes them.
func writeDPS(buf *bytes.Buffer, samples []tsdb.Sample, ms, arrays bool, p *plan) {
	open, sep, end := "{", `":`, "}"
	if arrays {
		open, sep, end = "[", ",", "]"
	}
	buf.WriteString(open)
	var scratch []byte
	var vals []float64
	first := true
	for i := 0; i < len(samples); {
		var key int64
		var v float64
		if ms {
			key, v = samples[i].Time.UnixMilli(), samples[i].Value
			i++
		} else {
			key = floorSecond(samples[i].Time)
			vals = vals[:0]
			for i < len(samples) && floorSecond(samples[i].Time) == key {
				vals = append(vals, samples[i].Value)
				i++
			}
			v = vals[0]
			if len(vals) > 1 {
				v = combineSecond(p.agg, vals)
			}
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		if arrays {
			buf.WriteByte('[')
		} else {
			buf.WriteByte('"')
		}
		scratch = strconv.AppendInt(scratch[:0], key, 10)
		buf.Write(scratch)
		buf.WriteString(sep)
		scratch = appendValue(scratch[:0], v, p.fill == "null")
		buf.Write(scratch)
		if arrays {
			buf.WriteByte(']')
		}
	}
	buf.WriteString(end)
}

func floorSecond(t time.Time) int64 {
	ms := t.UnixMilli()
	s := ms / 1000
	if ms%1000 < 0 {
		s--
	}
	return s
}

// combineSecond combines the values of one second in an answer in
// seconds, ignoring NaN as the aggregators do: the sum for the summing
// aggregators and count, the minimum or maximum for theirs, and the
// average otherwise (avg, dev, none). Without a usable value it is NaN.
func combineSecond(agg string, vs []float64) float64 {
	sum, n := 0.0, 0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if !math.IsNaN(v) {
			sum, n = sum+v, n+1
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	switch {
	case n == 0:
		return math.NaN()
	case agg == "sum" || agg == "zimsum" || agg == "count":
		return sum
	case agg == "min" || agg == "mimmin":
		return lo
	case agg == "max" || agg == "mimmax":
		return hi
	}
	return sum / float64(n)
}

// appendValue writes a value as a JSON number the way encoding/json
// does, NaN as "NaN" (or null) and infinities as strings, as Jackson
// writes non-numeric numbers.
func appendValue(b []byte, v float64, nanIsNull bool) []byte {
	switch {
	case math.IsNaN(v):
		if nanIsNull {
			return append(b, "null"...)
		}
		return append(b, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(v, -1):
		return append(b, `"-Infinity"`...)
	}
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.AppendFloat(b, v, 'e', -1, 64)
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}
