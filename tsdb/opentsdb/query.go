package opentsdb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// queryRequest is the body of POST /api/query.
type queryRequest struct {
	Start             int64      `json:"start"`
	End               int64      `json:"end,omitempty"`
	Queries           []subQuery `json:"queries"`
	MsResolution      bool       `json:"msResolution"`
	NoAnnotations     bool       `json:"noAnnotations,omitempty"`
	GlobalAnnotations bool       `json:"globalAnnotations,omitempty"`
}

type subQuery struct {
	Aggregator   string        `json:"aggregator"`
	Metric       string        `json:"metric,omitempty"`
	TSUIDs       []string      `json:"tsuids,omitempty"`
	Rate         bool          `json:"rate,omitempty"`
	RateOptions  *rateOptions  `json:"rateOptions,omitempty"`
	Downsample   string        `json:"downsample,omitempty"`
	Filters      []queryFilter `json:"filters,omitempty"`
	ExplicitTags bool          `json:"explicitTags,omitempty"`
}

// rateOptions are OpenTSDB's counter options of a rate. A counterMax or
// resetValue left out is OpenTSDB's default (Long.MAX_VALUE, 0), as a
// zero in tsdb.RateOptions means.
type rateOptions struct {
	Counter    bool    `json:"counter"`
	CounterMax float64 `json:"counterMax,omitempty"`
	ResetValue float64 `json:"resetValue,omitempty"`
	DropResets bool    `json:"dropResets,omitempty"`
}

type queryFilter struct {
	Type    string `json:"type"`
	Tagk    string `json:"tagk"`
	Filter  string `json:"filter"`
	GroupBy bool   `json:"groupBy"`
}

// queryResult is one element of the /api/query answer.
type queryResult struct {
	Metric            string            `json:"metric"`
	Tags              map[string]string `json:"tags"`
	AggregatedTags    []string          `json:"aggregateTags"`
	DPS               json.RawMessage   `json:"dps"`
	Annotations       []tsdb.Annotation `json:"annotations"`
	GlobalAnnotations []tsdb.Annotation `json:"globalAnnotations"`
}

// Query answers q from POST /api/query. The aggregator "" means "none"; the
// downsample is sent as OpenTSDB's "<interval>-<aggregator>[-<fill>]", its
// interval in the largest whole unit of h, m, s or ms. Series come sorted
// by metric and tags, samples by time; a "nan" or "null" fill yields NaN
// samples. OpenTSDB's 400 for a name it has never stored ("No such name
// for 'metrics'", or a tag key or value) is an empty answer, as no
// matching series is; an invalid q, or another 400, wraps tsdb.ErrInvalid.
func (c *Client) Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) {
	body, err := buildQuery(q)
	if err != nil {
		return nil, fmt.Errorf("opentsdb query %s: %w", q.Metric, err)
	}
	results, err := c.postQuery(ctx, body)
	if isNoSuchName(err) {
		return []tsdb.Series{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]tsdb.Series, 0, len(results))
	for _, r := range results {
		if r.Metric == "" && len(r.DPS) == 0 {
			continue // a statsSummary element, not a series
		}
		samples, err := parseDPS(r.DPS)
		if err != nil {
			return nil, fmt.Errorf("opentsdb query %s: series %s%v: %w: %w", q.Metric, r.Metric, r.Tags, err, tsdb.ErrUnavailable)
		}
		s := tsdb.Series{Metric: r.Metric, Tags: r.Tags, Samples: samples}
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
		if len(r.AggregatedTags) > 0 {
			s.AggregatedTags = append([]string(nil), r.AggregatedTags...)
			sort.Strings(s.AggregatedTags)
		}
		out = append(out, s)
	}
	sortSeries(out)
	return out, nil
}

// postQuery sends a query body and decodes the answer.
func (c *Client) postQuery(ctx context.Context, body queryRequest) ([]queryResult, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("opentsdb query: encoding: %w: %w", err, tsdb.ErrInvalid)
	}
	r := request{method: http.MethodPost, path: "/api/query", body: data, ok: []int{http.StatusOK}}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, notFoundUnavailable(err)
	}
	var results []queryResult
	if err := decodeJSON(r.method, c.base+r.path, resp.body, &results); err != nil {
		return nil, err
	}
	return results, nil
}

// buildQuery validates q and turns it into OpenTSDB's request.
func buildQuery(q tsdb.Query) (queryRequest, error) {
	if q.Metric == "" {
		return queryRequest{}, fmt.Errorf("no metric: %w", tsdb.ErrInvalid)
	}
	if q.Start.IsZero() {
		return queryRequest{}, fmt.Errorf("no start time: %w", tsdb.ErrInvalid)
	}
	if !q.End.IsZero() && q.End.Before(q.Start) {
		return queryRequest{}, fmt.Errorf("end %s is before start %s: %w",
			q.End.Format(time.RFC3339), q.Start.Format(time.RFC3339), tsdb.ErrInvalid)
	}
	sq := subQuery{Aggregator: q.Aggregator, Metric: q.Metric, Rate: q.Rate, ExplicitTags: q.ExplicitTags}
	if sq.Aggregator == "" {
		sq.Aggregator = "none"
	}
	if o := q.RateOptions; q.Rate && o.Counter {
		// Without counter OpenTSDB ignores the other options.
		sq.RateOptions = &rateOptions{Counter: true, CounterMax: o.CounterMax, ResetValue: o.ResetValue, DropResets: o.DropResets}
	}
	if d := q.Downsample; d != nil {
		spec, err := downsampleSpec(*d)
		if err != nil {
			return queryRequest{}, err
		}
		sq.Downsample = spec
	}
	for _, f := range q.Filters {
		if f.Type == "" || f.Tag == "" {
			return queryRequest{}, fmt.Errorf("filter %s(%s=%q): type and tag are required: %w", f.Type, f.Tag, f.Expr, tsdb.ErrInvalid)
		}
		sq.Filters = append(sq.Filters, queryFilter{Type: string(f.Type), Tagk: f.Tag, Filter: f.Expr, GroupBy: f.GroupBy})
	}
	req := queryRequest{
		Start:         q.Start.UnixMilli(),
		Queries:       []subQuery{sq},
		MsResolution:  true,
		NoAnnotations: true, // a Query returns samples only; do not ship notes
	}
	if !q.End.IsZero() {
		req.End = q.End.UnixMilli()
	}
	return req, nil
}

// downsampleSpec writes d as OpenTSDB's <interval><unit>-<agg>[-<fill>],
// the interval "0all" with All.
func downsampleSpec(d tsdb.Downsample) (string, error) {
	switch {
	case d.All && d.Interval != 0:
		return "", fmt.Errorf("downsample over all the range with an interval %s: %w", d.Interval, tsdb.ErrInvalid)
	case !d.All && d.Interval < time.Millisecond:
		return "", fmt.Errorf("downsample interval %s is below 1ms: %w", d.Interval, tsdb.ErrInvalid)
	}
	if d.Aggregator == "" {
		return "", fmt.Errorf("downsample without an aggregator: %w", tsdb.ErrInvalid)
	}
	var iv string
	switch ms := d.Interval.Milliseconds(); {
	case d.All:
		iv = "0all"
	case ms%3600000 == 0:
		iv = strconv.FormatInt(ms/3600000, 10) + "h"
	case ms%60000 == 0:
		iv = strconv.FormatInt(ms/60000, 10) + "m"
	case ms%1000 == 0:
		iv = strconv.FormatInt(ms/1000, 10) + "s"
	default:
		iv = strconv.FormatInt(ms, 10) + "ms"
	}
	spec := iv + "-" + d.Aggregator
	switch d.Fill {
	case "", "none":
	case "nan", "null", "zero":
		spec += "-" + d.Fill
	default:
		return "", fmt.Errorf("unknown downsample fill policy %q: %w", d.Fill, tsdb.ErrInvalid)
	}
	return spec, nil
}

// parseDPS reads a series' datapoints: OpenTSDB's default map
// {"<timestamp>": value} or the arrays form [[timestamp, value], …].
// Timestamps below 1e11 are taken as seconds (a server that ignored
// msResolution), others as milliseconds. Values may be numbers, null (a
// "null" fill), or NaN and infinities, bare or quoted.
func parseDPS(raw json.RawMessage) ([]tsdb.Sample, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var out []tsdb.Sample
	if raw[0] == '[' {
		var pairs [][2]jsonValue
		if err := json.Unmarshal(raw, &pairs); err != nil {
			return nil, fmt.Errorf("dps: %w", err)
		}
		out = make([]tsdb.Sample, 0, len(pairs))
		for _, p := range pairs {
			if math.IsNaN(float64(p[0])) {
				return nil, fmt.Errorf("dps: timestamp is not a number")
			}
			out = append(out, tsdb.Sample{Time: epoch(int64(p[0])), Value: float64(p[1])})
		}
	} else {
		var m map[string]jsonValue
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("dps: %w", err)
		}
		out = make([]tsdb.Sample, 0, len(m))
		for k, v := range m {
			ts, err := strconv.ParseInt(k, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("dps: timestamp %q: %w", k, err)
			}
			out = append(out, tsdb.Sample{Time: epoch(ts), Value: float64(v)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// epoch reads an OpenTSDB timestamp in seconds or milliseconds.
func epoch(ts int64) time.Time {
	if ts < 1e11 && ts > -1e11 {
		return time.Unix(ts, 0)
	}
	return time.UnixMilli(ts)
}

// jsonValue is a datapoint value as OpenTSDB writes it: a number, a
// string holding one (query/last), null, or NaN and infinities.
type jsonValue float64

func (v *jsonValue) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if s == "null" {
		*v = jsonValue(math.NaN())
		return nil
	}
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	switch s {
	case "NaN", "nan":
		*v = jsonValue(math.NaN())
		return nil
	case "Infinity", "+Infinity", "Inf", "+Inf":
		*v = jsonValue(math.Inf(1))
		return nil
	case "-Infinity", "-Inf":
		*v = jsonValue(math.Inf(-1))
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("value %s is not a number", b)
	}
	*v = jsonValue(f)
	return nil
}

// sanitizeNonFinite quotes the bare NaN, Infinity and -Infinity tokens a
// Jackson generator may write (they are not JSON), so that encoding/json
// can read the document; jsonValue reads them back.
func sanitizeNonFinite(b []byte) []byte {
	if !bytes.Contains(b, []byte("NaN")) && !bytes.Contains(b, []byte("Infinity")) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if inString {
			out = append(out, ch)
			switch {
			case escaped:
				escaped = false
			case ch == '\\':
				escaped = true
			case ch == '"':
				inString = false
			}
			continue
		}
		if ch == '"' {
			inString = true
			out = append(out, ch)
			continue
		}
		matched := false
		for _, tok := range []string{"NaN", "-Infinity", "Infinity"} {
			if bytes.HasPrefix(b[i:], []byte(tok)) {
				out = append(out, '"')
				out = append(out, tok...)
				out = append(out, '"')
				i += len(tok) - 1
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, ch)
		}
	}
	return out
}

// sortSeries orders series by metric, then by their tags.
func sortSeries(ss []tsdb.Series) {
	key := func(s tsdb.Series) string {
		keys := make([]string, 0, len(s.Tags))
		for k := range s.Tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(k)
			b.WriteByte(0)
			b.WriteString(s.Tags[k])
			b.WriteByte(0)
		}
		return b.String()
	}
	sort.SliceStable(ss, func(i, j int) bool {
		if ss[i].Metric != ss[j].Metric {
			return ss[i].Metric < ss[j].Metric
		}
		return key(ss[i]) < key(ss[j])
	})
}

// lastRequest is the body of POST /api/query/last. OpenTSDB 2.4 reads the
// flag the documentation calls "resolve" from the JSON property
// "resolveNames" (LastPointQuery.setResolveNames), and its JSON reader
// refuses unknown properties, so only resolveNames is sent.
type lastRequest struct {
	Queries      []lastSubQuery `json:"queries"`
	ResolveNames bool           `json:"resolveNames"`
	BackScan     int            `json:"backScan"`
}

type lastSubQuery struct {
	Metric string            `json:"metric"`
	Tags   map[string]string `json:"tags"`
}

type lastResult struct {
	Metric    string            `json:"metric"`
	Timestamp int64             `json:"timestamp"`
	Value     jsonValue         `json:"value"`
	Tags      map[string]string `json:"tags"`
	TSUID     string            `json:"tsuid"`
}

// Last returns the newest sample of each series of metric that matches
// filters, from POST /api/query/last with resolveNames and backScan
// (Options.LastBackScan, 24 hours by default).
//
// /api/query/last takes literal tags, not filters. A literal_or filter
// with a single value is sent as a tag; every other filter is applied here
// to the answer. Limits of OpenTSDB 2.4 to know:
//   - with backScan > 0 it resolves the metric and tags to one series, so
//     the tags sent must be that series' complete tag set: filters that
//     name only some tags, or use another filter type, find nothing on a
//     real TSD. With LastBackScan negative (backScan 0) it scans its meta
//     table instead, which matches partial tag sets but needs
//     tsd.core.meta.enable_tsuid_tracking and is wrong for backfilled data.
//   - a series whose newest point is older than the back scan is absent.
func (c *Client) Last(ctx context.Context, metric string, filters []tsdb.Filter) ([]tsdb.Series, error) {
	if metric == "" {
		return nil, fmt.Errorf("opentsdb last: no metric: %w", tsdb.ErrInvalid)
	}
	tags := map[string]string{}
	matchers := make([]func(map[string]string) bool, 0, len(filters))
	for _, f := range filters {
		m, err := compileFilter(f)
		if err != nil {
			return nil, fmt.Errorf("opentsdb last %s: filter %s(%s=%q): %w", metric, f.Type, f.Tag, f.Expr, err)
		}
		matchers = append(matchers, m)
		if f.Type == tsdb.LiteralOr && !strings.Contains(f.Expr, "|") {
			tags[f.Tag] = f.Expr
		}
	}
	backScan := 0
	if c.opts.LastBackScan > 0 {
		backScan = int((c.opts.LastBackScan + time.Hour - 1) / time.Hour)
	}
	data, err := json.Marshal(lastRequest{
		Queries:      []lastSubQuery{{Metric: metric, Tags: tags}},
		ResolveNames: true,
		BackScan:     backScan,
	})
	if err != nil {
		return nil, fmt.Errorf("opentsdb last %s: encoding: %w: %w", metric, err, tsdb.ErrInvalid)
	}
	r := request{method: http.MethodPost, path: "/api/query/last", body: data, ok: []int{http.StatusOK}}
	resp, err := c.do(ctx, r)
	if isNoSuchName(err) {
		return []tsdb.Series{}, nil
	}
	if err != nil {
		return nil, notFoundUnavailable(err)
	}
	var results []lastResult
	if err := decodeJSON(r.method, c.base+r.path, resp.body, &results); err != nil {
		return nil, err
	}
	out := make([]tsdb.Series, 0, len(results))
next:
	for _, res := range results {
		if res.Metric != "" && res.Metric != metric {
			continue
		}
		for _, m := range matchers {
			if !m(res.Tags) {
				continue next
			}
		}
		s := tsdb.Series{
			Metric:  metric,
			Tags:    res.Tags,
			Samples: []tsdb.Sample{{Time: epoch(res.Timestamp), Value: float64(res.Value)}},
		}
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
		out = append(out, s)
	}
	sortSeries(out)
	return out, nil
}

// compileFilter returns a matcher with the semantics of tsdb.Filter: a
// series without the tag never matches, but for not_key, which matches
// only those.
func compileFilter(f tsdb.Filter) (func(map[string]string) bool, error) {
	if f.Tag == "" {
		return nil, fmt.Errorf("no tag: %w", tsdb.ErrInvalid)
	}
	var match func(string) bool
	switch f.Type {
	case tsdb.NotKey:
		if f.Expr != "" {
			return nil, fmt.Errorf("not_key takes no expression, got %q: %w", f.Expr, tsdb.ErrInvalid)
		}
		return func(tags map[string]string) bool { _, ok := tags[f.Tag]; return !ok }, nil
	case tsdb.LiteralOr, tsdb.ILiteralOr, tsdb.NotLiteralOr, tsdb.NotILiteralOr:
		fold := f.Type == tsdb.ILiteralOr || f.Type == tsdb.NotILiteralOr
		vals := strings.Split(f.Expr, "|")
		in := func(v string) bool {
			for _, w := range vals {
				if v == w || fold && strings.EqualFold(v, w) {
					return true
				}
			}
			return false
		}
		if f.Type == tsdb.NotLiteralOr || f.Type == tsdb.NotILiteralOr {
			match = func(v string) bool { return !in(v) }
		} else {
			match = in
		}
	case tsdb.Wildcard, tsdb.IWildcard:
		parts := strings.Split(f.Expr, "*")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		expr := "^" + strings.Join(parts, ".*") + "$"
		if f.Type == tsdb.IWildcard {
			expr = "(?i)" + expr
		}
		re := regexp.MustCompile(expr) // quoted: always compiles
		match = re.MatchString
	case tsdb.Regexp:
		re, err := regexp.Compile("^(?:" + f.Expr + ")$")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, tsdb.ErrInvalid)
		}
		match = re.MatchString
	default:
		return nil, fmt.Errorf("unknown filter type %q: %w", f.Type, tsdb.ErrInvalid)
	}
	return func(tags map[string]string) bool {
		v, ok := tags[f.Tag]
		return ok && match(v)
	}, nil
}
