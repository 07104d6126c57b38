package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
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
		for _, g := range groups {
			if !first {
				buf.WriteByte(',')
			}
			first = false
			if err := h.render(ctx, buf, req, p, g, global); err != nil {
				return nil, err
			}
		}
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// evaluate answers one sub query. The store evaluates what tsdb.Query
// expresses; counter rates, explicitTags and the "all" downsampler are
// evaluated here over the store's per-series answer (see eval.go).
func (h *handler) evaluate(ctx context.Context, req *request, p *plan, wantMembers bool) ([]group, error) {
	q := tsdb.Query{Metric: p.metric, Filters: p.filters, Start: req.start, End: req.end, Aggregator: p.agg, Downsample: p.downsample, Rate: p.rate}
	if !p.counter && !p.explicitTags && p.dsAll == "" {
		series, err := h.store.Query(ctx, q)
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

	q.Aggregator, q.Rate = "none", false
	series, err := h.store.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	if p.explicitTags {
		series = slices.DeleteFunc(series, func(s tsdb.Series) bool { return !hasExactly(s.Tags, p.filters) })
	}
	kept := series[:0]
	for _, s := range series {
		if p.dsAll != "" {
			fn, _ := reducer(p.dsAll)
			s.Samples = downsampleAll(s.Samples, fn, req.start)
		}
		if p.rate {
			s.Samples = counterRate(s.Samples, p)
		}
		if len(s.Samples) > 0 {
			kept = append(kept, s)
		}
	}
	groups := aggregateGroups(p.metric, kept, p.agg, groupByTags(p.filters))
	sortGroups(groups)
	return groups, nil
}

// hasExactly says whether tags has exactly the keys the filters name.
func hasExactly(tags map[string]string, filters []tsdb.Filter) bool {
	n := 0
	for k := range tags {
		if !slices.ContainsFunc(filters, func(f tsdb.Filter) bool { return f.Tag == k }) {
			return false
		}
		n++
	}
	return n > 0
}

// findMembers fills in the series each group was made of, from the
// store's index when it can list series, else from its samples.
func (h *handler) findMembers(ctx context.Context, req *request, p *plan, groups []group) error {
	var all []map[string]string
	if h.lister != nil {
		var err error
		if all, err = h.lister.ListSeries(ctx, p.metric, p.filters, req.start, req.end); err != nil {
			return err
		}
	} else {
		raw, err := h.store.Query(ctx, tsdb.Query{Metric: p.metric, Filters: p.filters, Start: req.start, End: req.end, Aggregator: "none"})
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

// annotationJSON is an annotation as OpenTSDB writes it.
type annotationJSON struct {
	TSUID       string            `json:"tsuid,omitempty"`
	Description string            `json:"description"`
	Notes       string            `json:"notes"`
	Custom      map[string]string `json:"custom,omitempty"`
	StartTime   int64             `json:"startTime"`
	EndTime     int64             `json:"endTime"`
}

func toJSON(a tsdb.Annotation) annotationJSON {
	j := annotationJSON{TSUID: a.TSUID, Description: a.Description, Notes: a.Notes, Custom: a.Custom, StartTime: a.Start.Unix()}
	if !a.End.IsZero() {
		j.EndTime = a.End.Unix()
	}
	return j
}

// render appends one answer series to buf.
func (h *handler) render(ctx context.Context, buf *bytes.Buffer, req *request, p *plan, g group, global []tsdb.Annotation) error {
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
	writeDPS(buf, s.Samples, req.msResolution, p)

	var tsuids []string
	if h.tsuider != nil {
		for _, m := range g.members {
			tsuids = append(tsuids, h.tsuider.TSUID(s.Metric, m))
		}
		slices.Sort(tsuids)
		tsuids = slices.Compact(tsuids)
	}
	if !req.noAnnotations && h.annotator != nil {
		var notes []annotationJSON
		for _, id := range tsuids {
			as, err := h.annotator.Annotations(ctx, id, req.start, req.end)
			if err != nil {
				return err
			}
			for _, a := range as {
				notes = append(notes, toJSON(a))
			}
		}
		if len(notes) > 0 {
			slices.SortStableFunc(notes, func(a, b annotationJSON) int { return int(a.StartTime - b.StartTime) })
			buf.WriteString(`,"annotations":`)
			writeJSONValue(buf, notes)
		}
	}
	if len(global) > 0 {
		notes := make([]annotationJSON, len(global))
		for i, a := range global {
			notes[i] = toJSON(a)
		}
		buf.WriteString(`,"globalAnnotations":`)
		writeJSONValue(buf, notes)
	}
	if req.showTSUIDs {
		if tsuids == nil {
			tsuids = []string{}
		}
		buf.WriteString(`,"tsuids":`)
		writeJSONValue(buf, tsuids)
	}
	buf.WriteByte('}')
	return nil
}

func writeJSONValue(buf *bytes.Buffer, v any) {
	b, _ := json.Marshal(v) // strings, maps of strings and our structs always marshal
	buf.Write(b)
}

// writeDPS writes samples as OpenTSDB's "dps" object, keys in time order.
// In seconds (without msResolution) the samples of one second are
// combined into one (see secondReducer). NaN is written as the string
// "NaN", or null under the fill policy null, as OpenTSDB writes them.
func writeDPS(buf *bytes.Buffer, samples []tsdb.Sample, ms bool, p *plan) {
	buf.WriteByte('{')
	var scratch []byte
	fn := secondReducer(p.agg)
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
				v = fn(vals)
			}
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		buf.WriteByte('"')
		scratch = strconv.AppendInt(scratch[:0], key, 10)
		buf.Write(scratch)
		buf.WriteString(`":`)
		scratch = appendValue(scratch[:0], v, p.fill == "null")
		buf.Write(scratch)
	}
	buf.WriteByte('}')
}

func floorSecond(t time.Time) int64 {
	ms := t.UnixMilli()
	s := ms / 1000
	if ms%1000 < 0 {
		s--
	}
	return s
}

// secondReducer combines samples of one second in an answer in seconds:
// sums for the summing aggregators and count, minimum and maximum for
// theirs, and the average otherwise (avg, dev, none).
func secondReducer(agg string) reduceFunc {
	switch agg {
	case "sum", "zimsum", "count":
		return reduceSum
	case "min", "mimmin":
		return reduceMin
	case "max", "mimmax":
		return reduceMax
	}
	return reduceAvg
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
