package httpapi

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// flexBool is a JSON boolean that may also arrive as the string "true" or
// "false", which OpenTSDB's parser accepts.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch strings.ToLower(unquote(data)) {
	case "true", "1":
		*b = true
	case "false", "0", "", "null":
		*b = false
	default:
		return fmt.Errorf("%s is not a boolean", data)
	}
	return nil
}

// queryRequest is the body of a POST to /api/query.
type queryRequest struct {
	Start             json.RawMessage `json:"start"`
	End               json.RawMessage `json:"end"`
	Queries           []subQuery      `json:"queries"`
	NoAnnotations     flexBool        `json:"noAnnotations"`
	GlobalAnnotations flexBool        `json:"globalAnnotations"`
	MsResolution      flexBool        `json:"msResolution"`
	ShowTSUIDs        flexBool        `json:"showTSUIDs"`
	ShowQuery         flexBool        `json:"showQuery"`
	Delete            flexBool        `json:"delete"`
	Timezone          string          `json:"timezone"`
	UseCalendar       flexBool        `json:"useCalendar"`
}

// subQuery is one entry of queries.
type subQuery struct {
	Aggregator   string            `json:"aggregator"`
	Metric       string            `json:"metric"`
	TSUIDs       []string          `json:"tsuids"`
	Rate         flexBool          `json:"rate"`
	RateOptions  *rateOptions      `json:"rateOptions"`
	Downsample   string            `json:"downsample"`
	Tags         map[string]string `json:"tags"`
	Filters      []filterSpec      `json:"filters"`
	ExplicitTags flexBool          `json:"explicitTags"`
	Percentiles  []float64         `json:"percentiles"`
}

// rateOptions are OpenTSDB's counter options of a rate.
type rateOptions struct {
	Counter    flexBool `json:"counter"`
	CounterMax *float64 `json:"counterMax"`
	ResetValue float64  `json:"resetValue"`
	DropResets flexBool `json:"dropResets"`
}

// filterSpec is one entry of filters.
type filterSpec struct {
	Type    string   `json:"type"`
	Tagk    string   `json:"tagk"`
	Filter  string   `json:"filter"`
	GroupBy flexBool `json:"groupBy"`
}

// plan is one validated sub query.
type plan struct {
	index        int // its place in the request, echoed by showQuery
	metric       string
	filters      []tsdb.Filter
	agg          string // an entry of aggregatorNames
	downsample   *tsdb.Downsample
	fill         string // the downsample fill policy, "" without one or with "0all-"
	rate         bool
	rateOptions  tsdb.RateOptions
	explicitTags bool
	// downsampleSpec is the downsample as sent, echoed by showQuery.
	downsampleSpec string
}

// query is the store query that answers p over [start, end].
func (p *plan) query(start, end time.Time) tsdb.Query {
	return tsdb.Query{Metric: p.metric, Filters: p.filters, Start: start, End: end, Aggregator: p.agg,
		Downsample: p.downsample, Rate: p.rate, RateOptions: p.rateOptions, ExplicitTags: p.explicitTags}
}

// request is a validated query.
type request struct {
	start, end        time.Time
	plans             []plan
	noAnnotations     bool
	globalAnnotations bool
	msResolution      bool
	showTSUIDs        bool
	showQuery         bool
	arrays            bool // dps as [[time, value], ...]
}

// parseQueryJSON validates the body of a POST.
func (h *handler) parseQueryJSON(body []byte) (*request, error) {
	var qr queryRequest
	if err := decodeJSON(body, &qr); err != nil {
		return nil, err
	}
	if qr.Delete {
		return nil, badRequest("Deleting data is not enabled", "the embedded store does not delete data through the query endpoint")
	}
	loc, err := location(qr.Timezone)
	if err != nil {
		return nil, err
	}
	req := &request{
		noAnnotations:     bool(qr.NoAnnotations),
		globalAnnotations: bool(qr.GlobalAnnotations),
		msResolution:      bool(qr.MsResolution),
		showTSUIDs:        bool(qr.ShowTSUIDs),
		showQuery:         bool(qr.ShowQuery),
	}
	if err := h.parseRange(req, unquote(qr.Start), unquote(qr.End), loc); err != nil {
		return nil, err
	}
	if len(qr.Queries) == 0 {
		return nil, badRequest("Missing queries", "Supply at least one sub query in \"queries\"")
	}
	for i, sq := range qr.Queries {
		p, err := compileSubQuery(sq)
		if err != nil {
			err.details = fmt.Sprintf("sub query %d: %s", i, err.details)
			return nil, err
		}
		p.index = i
		req.plans = append(req.plans, p)
	}
	return req, nil
}

// parseQueryString validates a GET: start, end, m (repeated), tz and the
// flags ms, show_tsuids, no_annotations, global_annotations.
func (h *handler) parseQueryString(r *http.Request) (*request, error) {
	q := r.URL.Query()
	if len(q["tsuid"]) > 0 {
		return nil, badRequest("TSUID queries are not supported", "the embedded store's TSUIDs are hashes and cannot be resolved back to series; query by metric with m=")
	}
	loc, err := location(q.Get("tz"))
	if err != nil {
		return nil, err
	}
	req := &request{
		noAnnotations:     flag(r, "no_annotations"),
		globalAnnotations: flag(r, "global_annotations"),
		msResolution:      flag(r, "ms") || flag(r, "msResolution"),
		showTSUIDs:        flag(r, "show_tsuids"),
		showQuery:         flag(r, "show_query"),
	}
	if err := h.parseRange(req, q.Get("start"), q.Get("end"), loc); err != nil {
		return nil, err
	}
	ms := q["m"]
	if len(ms) == 0 {
		return nil, badRequest("Missing sub queries", "Supply at least one m= (or tsuid=) parameter")
	}
	for _, m := range ms {
		sq, err := parseM(m)
		if err != nil {
			return nil, err
		}
		p, aerr := compileSubQuery(sq)
		if aerr != nil {
			aerr.details = fmt.Sprintf("m=%s: %s", m, aerr.details)
			return nil, aerr
		}
		p.index = len(req.plans)
		req.plans = append(req.plans, p)
	}
	return req, nil
}

func location(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, badRequest("Invalid timezone", err.Error())
	}
	return loc, nil
}

// parseRange sets req's start and end; a missing end is now.
func (h *handler) parseRange(req *request, start, end string, loc *time.Location) error {
	now := h.now()
	if start == "" || start == "null" {
		return badRequest("Missing start time", "Supply a start time (absolute, or relative such as 1h-ago)")
	}
	var err error
	if req.start, err = parseTime(start, now, loc); err != nil {
		return badRequest("Invalid start time", err.Error())
	}
	req.end = now
	if end != "" && end != "null" {
		if req.end, err = parseTime(end, now, loc); err != nil {
			return badRequest("Invalid end time", err.Error())
		}
	}
	if !req.end.After(req.start) {
		return badRequest("End time must be greater than the start time",
			fmt.Sprintf("start %d ms, end %d ms", req.start.UnixMilli(), req.end.UnixMilli()))
	}
	return nil
}

// absoluteLayouts are OpenTSDB's absolute date formats.
var absoluteLayouts = [...]string{"2006/01/02-15:04:05", "2006/01/02 15:04:05", "2006/01/02-15:04", "2006/01/02 15:04", "2006/01/02"}

// parseTime reads an OpenTSDB time: "now", a relative "<n><unit>-ago",
// Unix seconds (10 digits or fewer, optionally with a fraction) or
// milliseconds (more digits), or an absolute date in loc.
func parseTime(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "now") {
		return now, nil
	}
	if rel, ok := strings.CutSuffix(s, "-ago"); ok {
		d, err := parseDuration(rel)
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(-d), nil
	}
	if isDigits(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("timestamp %q: %w", s, err)
		}
		if len(s) <= 10 {
			return time.Unix(n, 0).UTC(), nil
		}
		return time.UnixMilli(n).UTC(), nil
	}
	if sec, frac, ok := strings.Cut(s, "."); ok && isDigits(sec) && isDigits(frac) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("timestamp %q: %w", s, err)
		}
		return time.UnixMilli(int64(math.Round(f * 1000))).UTC(), nil
	}
	for _, layout := range absoluteLayouts {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (want e.g. 1h-ago, 1356998400, 1356998400000 or 2013/01/01-12:00:00)", s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseDuration reads an OpenTSDB interval: a positive integer and one of
// ms s m h d w n (30 days) y (365 days).
func parseDuration(s string) (time.Duration, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("interval %q has no number", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("interval %q: %w", s, err)
	}
	var unit time.Duration
	switch s[i:] {
	case "ms":
		unit = time.Millisecond
	case "s":
		unit = time.Second
	case "m":
		unit = time.Minute
	case "h":
		unit = time.Hour
	case "d":
		unit = 24 * time.Hour
	case "w":
		unit = 7 * 24 * time.Hour
	case "n":
		unit = 30 * 24 * time.Hour
	case "y":
		unit = 365 * 24 * time.Hour
	default:
		return 0, fmt.Errorf("interval %q: unknown unit %q (want ms, s, m, h, d, w, n or y)", s, s[i:])
	}
	if n > int64(math.MaxInt64/unit) {
		return 0, fmt.Errorf("interval %q is too long", s)
	}
	return time.Duration(n) * unit, nil
}

// downsamplers are the functions a downsample spec may name.
var downsamplers = []string{"avg", "count", "dev", "first", "last", "max", "mimmax", "mimmin", "min", "sum", "zimsum"}

// compileSubQuery validates one sub query.
func compileSubQuery(sq subQuery) (plan, *apiError) {
	p := plan{metric: sq.Metric, agg: strings.ToLower(sq.Aggregator), rate: bool(sq.Rate), explicitTags: bool(sq.ExplicitTags),
		downsampleSpec: sq.Downsample}
	if len(sq.TSUIDs) > 0 && sq.Metric == "" {
		return p, badRequest("TSUID queries are not supported", "the embedded store's TSUIDs are hashes and cannot be resolved back to series; query by metric")
	}
	if p.metric == "" {
		return p, badRequest("Missing metric", "each sub query needs a metric")
	}
	if p.agg == "" {
		return p, badRequest("Missing aggregator", "each sub query needs an aggregator, one of "+strings.Join(aggregatorNames, ", "))
	}
	if !slices.Contains(aggregatorNames, p.agg) {
		return p, badRequest("No such aggregator", fmt.Sprintf("%q is not one of %s", sq.Aggregator, strings.Join(aggregatorNames, ", ")))
	}
	if len(sq.Percentiles) > 0 {
		return p, badRequest("Percentiles are not supported", "the embedded store keeps no histograms")
	}
	if ro := sq.RateOptions; ro != nil && p.rate {
		// A counterMax left out is zero, which the store takes as
		// OpenTSDB's default.
		p.rateOptions = tsdb.RateOptions{Counter: bool(ro.Counter), ResetValue: ro.ResetValue, DropResets: bool(ro.DropResets)}
		if ro.CounterMax != nil {
			p.rateOptions.CounterMax = *ro.CounterMax
		}
	}
	if sq.Downsample != "" {
		if err := p.parseDownsample(sq.Downsample); err != nil {
			return p, err
		}
	}
	// Filters first, then the tags map, as OpenTSDB merges them: a tag
	// whose filter equals one already listed only turns its group-by on.
	for _, f := range sq.Filters {
		tf, err := newFilter(f.Type, f.Tagk, f.Filter, bool(f.GroupBy))
		if err != nil {
			return p, err
		}
		p.filters = append(p.filters, tf)
	}
	keys := make([]string, 0, len(sq.Tags))
	for k := range sq.Tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		tf, err := tagFilter(k, sq.Tags[k], true)
		if err != nil {
			return p, err
		}
		p.addFilter(tf)
	}
	return p, nil
}

// addFilter appends f unless an equal filter is there, in which case that
// one takes f's group-by.
func (p *plan) addFilter(f tsdb.Filter) {
	for i, g := range p.filters {
		if g.Type == f.Type && g.Tag == f.Tag && g.Expr == f.Expr {
			p.filters[i].GroupBy = g.GroupBy || f.GroupBy
			return
		}
	}
	p.filters = append(p.filters, f)
}

// parseDownsample reads "<interval>-<agg>[-<fill>]" or "0all-<agg>[-<fill>]".
func (p *plan) parseDownsample(spec string) *apiError {
	bad := func(why string) *apiError {
		return badRequest("Invalid downsampling specifier", fmt.Sprintf("%q: %s", spec, why))
	}
	parts := strings.Split(spec, "-")
	if len(parts) < 2 || len(parts) > 3 {
		return bad("want <interval>-<aggregator>[-<fill policy>], e.g. 1m-avg or 1h-sum-zero")
	}
	fn := strings.ToLower(parts[1])
	if !slices.Contains(downsamplers, fn) {
		return bad(fmt.Sprintf("unknown function %q (want one of %s)", parts[1], strings.Join(downsamplers, ", ")))
	}
	fill := "none"
	if len(parts) == 3 {
		fill = strings.ToLower(parts[2])
		switch fill {
		case "none", "nan", "null", "zero":
		default:
			return bad(fmt.Sprintf("unknown fill policy %q (want none, nan, null or zero)", parts[2]))
		}
	}
	iv := strings.ToLower(parts[0])
	if strings.HasSuffix(iv, "all") {
		p.downsample = &tsdb.Downsample{All: true, Aggregator: fn, Fill: fill}
		return nil
	}
	if strings.HasSuffix(iv, "c") {
		return bad("calendar intervals are not supported; intervals align to the epoch, so a day is a UTC day")
	}
	d, err := parseDuration(iv)
	if err != nil {
		return bad(err.Error())
	}
	if d <= 0 {
		return bad("the interval must be positive")
	}
	p.downsample = &tsdb.Downsample{Interval: d, Aggregator: fn, Fill: fill}
	p.fill = fill
	return nil
}

// filterTypes maps OpenTSDB 2.4's filter names to tsdb's: every filter
// type OpenTSDB 2.4 has built in.
var filterTypes = map[string]tsdb.FilterType{
	"literal_or":      tsdb.LiteralOr,
	"iliteral_or":     tsdb.ILiteralOr,
	"not_literal_or":  tsdb.NotLiteralOr,
	"not_iliteral_or": tsdb.NotILiteralOr,
	"wildcard":        tsdb.Wildcard,
	"iwildcard":       tsdb.IWildcard,
	"regexp":          tsdb.Regexp,
	"not_key":         tsdb.NotKey,
}

// filterTypeNames lists filterTypes' names, sorted, for messages.
var filterTypeNames = strings.Join(slices.Sorted(maps.Keys(filterTypes)), ", ")

// newFilter validates one filter of the filters list.
func newFilter(typ, tagk, expr string, groupBy bool) (tsdb.Filter, *apiError) {
	ft, ok := filterTypes[strings.ToLower(typ)]
	if !ok {
		return tsdb.Filter{}, badRequest("Invalid filter type", fmt.Sprintf("%q is not one of %s", typ, filterTypeNames))
	}
	if tagk == "" {
		return tsdb.Filter{}, badRequest("Missing filter tag key", fmt.Sprintf("%s filter %q has no tagk", typ, expr))
	}
	if ft == tsdb.NotKey {
		// OpenTSDB's words. Its series have no value of the tag to group
		// by, so a group-by is dropped rather than refused.
		if expr != "" {
			return tsdb.Filter{}, badRequest("The filter must be empty for the not_key filter", fmt.Sprintf("not_key filter on %q has filter %q", tagk, expr))
		}
		return tsdb.Filter{Type: ft, Tag: tagk}, nil
	}
	if expr == "" {
		return tsdb.Filter{}, badRequest("Missing filter expression", fmt.Sprintf("%s filter on %q has no filter", typ, tagk))
	}
	return tsdb.Filter{Type: ft, Tag: tagk, Expr: expr, GroupBy: groupBy}, nil
}

// tagFilter maps an old-style tag value to a filter as OpenTSDB 2.2+
// does: "type(expr)" names the filter, a value with "*" is a wildcard,
// anything else (including "a|b") is literal_or.
func tagFilter(tagk, v string, groupBy bool) (tsdb.Filter, *apiError) {
	if open := strings.IndexByte(v, '('); open > 0 && strings.HasSuffix(v, ")") {
		if _, known := filterTypes[strings.ToLower(v[:open])]; known {
			return newFilter(v[:open], tagk, v[open+1:len(v)-1], groupBy)
		}
	}
	if strings.Contains(v, "*") {
		return newFilter("wildcard", tagk, v, groupBy)
	}
	return newFilter("literal_or", tagk, v, groupBy)
}

// parseM reads the m= parameter of a GET:
// <agg>:[rate[{counter[,max[,reset]]}]:][<downsample>:][explicit_tags:]<metric>[{group-by filters}][{other filters}].
func parseM(m string) (subQuery, error) {
	bad := func(why string) error { return badRequest("Invalid m= parameter", fmt.Sprintf("%q: %s", m, why)) }
	parts := splitTop(m, ':')
	if len(parts) < 2 {
		return subQuery{}, bad("want <aggregator>:[rate:][<downsample>:]<metric>{tags}")
	}
	sq := subQuery{Aggregator: parts[0]}
	for _, part := range parts[1 : len(parts)-1] {
		switch {
		case part == "rate" || strings.HasPrefix(part, "rate{"):
			sq.Rate = true
			if opts, ok := strings.CutPrefix(part, "rate{"); ok {
				ro, err := parseRateOptions(strings.TrimSuffix(opts, "}"))
				if err != nil {
					return sq, bad(err.Error())
				}
				sq.RateOptions = ro
			}
		case part == "explicit_tags":
			sq.ExplicitTags = true
		case strings.HasPrefix(part, "percentiles"):
			sq.Percentiles = []float64{0} // refused in compileSubQuery
		case strings.Contains(part, "-"):
			sq.Downsample = part
		default:
			return sq, bad(fmt.Sprintf("unknown part %q", part))
		}
	}
	last := parts[len(parts)-1]
	brace := strings.IndexByte(last, '{')
	if brace < 0 {
		sq.Metric = last
		return sq, nil
	}
	sq.Metric = last[:brace]
	groups := 0
	for rest := last[brace:]; rest != ""; groups++ {
		if rest[0] != '{' || groups == 2 {
			return sq, bad("want at most two {...} tag groups after the metric")
		}
		end := closing(rest)
		if end < 0 {
			return sq, bad("unbalanced braces")
		}
		for _, kv := range splitTop(rest[1:end], ',') {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return sq, bad(fmt.Sprintf("tag filter %q has no '='", kv))
			}
			f, err := tagFilter(k, v, groups == 0)
			if err != nil {
				return sq, err
			}
			sq.Filters = append(sq.Filters, filterSpec{Type: string(f.Type), Tagk: f.Tag, Filter: f.Expr, GroupBy: flexBool(f.GroupBy)})
		}
		rest = rest[end+1:]
	}
	return sq, nil
}

// parseRateOptions reads "counter[,max[,reset]]" (also "dropcounter").
func parseRateOptions(s string) (*rateOptions, error) {
	parts := strings.Split(s, ",")
	ro := &rateOptions{}
	switch parts[0] {
	case "counter":
		ro.Counter = true
	case "dropcounter":
		ro.Counter, ro.DropResets = true, true
	case "":
	default:
		return nil, fmt.Errorf("rate option %q is not counter or dropcounter", parts[0])
	}
	if len(parts) > 1 && parts[1] != "" {
		v, err := strconv.ParseFloat(parts[1], 64)
		if err != nil {
			return nil, fmt.Errorf("counter max %q: %w", parts[1], err)
		}
		ro.CounterMax = &v
	}
	if len(parts) > 2 && parts[2] != "" {
		v, err := strconv.ParseFloat(parts[2], 64)
		if err != nil {
			return nil, fmt.Errorf("reset value %q: %w", parts[2], err)
		}
		ro.ResetValue = v
	}
	if len(parts) > 3 {
		return nil, fmt.Errorf("rate options %q: at most counter,max,reset", s)
	}
	return ro, nil
}

// splitTop splits s at sep outside braces and parentheses.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, from := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{', '(':
			depth++
		case '}', ')':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[from:i])
				from = i + 1
			}
		}
	}
	return append(out, s[from:])
}

// closing returns the index of the brace closing the one at s[0], or -1.
func closing(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{', '(':
			depth++
		case '}', ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}
