package httpapi

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// defaultLookupLimit is OpenTSDB's default limit of a lookup.
const defaultLookupLimit = 25

// lookupPair is one tag pair of a lookup: Value nil (JSON null), or
// either side "*", is a wildcard.
type lookupPair struct {
	Key   string  `json:"key"`
	Value *string `json:"value"`
}

// lookupRequest is the body of a POST to /api/search/lookup.
type lookupRequest struct {
	Metric  string       `json:"metric"`
	Tags    []lookupPair `json:"tags"`
	Limit   *int         `json:"limit"`
	UseMeta flexBool     `json:"useMeta"` // ignored: there is one index
}

// lookupResult is one series of a lookup answer.
type lookupResult struct {
	Tags   map[string]string `json:"tags"`
	Metric string            `json:"metric"`
	TSUID  string            `json:"tsuid"`
}

// lookupAnswer is OpenTSDB's search answer for type LOOKUP.
type lookupAnswer struct {
	Type         string         `json:"type"`
	Metric       *string        `json:"metric"`
	Tags         []lookupPair   `json:"tags"`
	Limit        int            `json:"limit"`
	Time         int64          `json:"time"`
	Results      []lookupResult `json:"results"`
	StartIndex   int            `json:"startIndex"`
	TotalResults int            `json:"totalResults"`
}

// serveLookup answers /api/search/lookup: the series of a metric (or of
// every metric) that have every tag pair asked for, from the store's
// index. GET takes m=<metric>{<tagk>=<tagv>,...} and limit; POST
// OpenTSDB's JSON body. Either side of a pair may be "*". useMeta is
// ignored: the store has one index, and it is always current.
// totalResults counts every series found, results holds the first limit
// of them, sorted by metric and tags.
func (h *handler) serveLookup(w http.ResponseWriter, r *http.Request) error {
	if h.lister == nil || h.suggester == nil {
		return &apiError{code: http.StatusNotImplemented, msg: "Lookups are not implemented", details: "this store cannot list its series"}
	}
	began := time.Now()
	var req lookupRequest
	if r.Method == http.MethodPost {
		if err := h.decodeBody(w, r, &req); err != nil {
			return err
		}
	} else {
		q := r.URL.Query()
		m := q.Get("m")
		if m == "" {
			return badRequest("Missing parameter m", "a lookup needs m=<metric>{<tagk>=<tagv>,...}; either side of a pair may be *")
		}
		var err error
		if req.Metric, req.Tags, err = parseLookup(m); err != nil {
			return badRequest("Unable to parse query", err.Error())
		}
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil {
				return badRequest("Unable to convert 'limit' to a valid number", "limit "+l)
			}
			req.Limit = &n
		}
	}
	if req.Metric == "*" {
		req.Metric = ""
	}
	if req.Metric == "" && len(req.Tags) == 0 {
		return badRequest("Missing metric and tags. Please supply at least one value.", "")
	}
	limit := defaultLookupLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return badRequest("Invalid 'limit' parameter", fmt.Sprintf("limit %d is negative", *req.Limit))
		}
		if *req.Limit > 0 {
			limit = *req.Limit
		}
	}
	for _, p := range req.Tags {
		if p.Key == "" {
			return badRequest("Unable to parse query", "a tag pair has no key; use * for any key")
		}
	}
	found, err := h.lookup(r.Context(), req.Metric, req.Tags)
	if err != nil {
		return err
	}
	ans := lookupAnswer{Type: "LOOKUP", Tags: req.Tags, Limit: limit, StartIndex: 0, TotalResults: len(found)}
	if ans.Tags == nil {
		ans.Tags = []lookupPair{}
	}
	if req.Metric != "" {
		ans.Metric = &req.Metric
	}
	ans.Results = found[:min(limit, len(found))]
	if ans.Results == nil {
		ans.Results = []lookupResult{}
	}
	ans.Time = time.Since(began).Milliseconds()
	writeJSON(w, http.StatusOK, ans)
	return nil
}

// lookup lists the series of metric (every metric when "") that have
// every pair, sorted by metric and tags.
func (h *handler) lookup(ctx context.Context, metric string, pairs []lookupPair) ([]lookupResult, error) {
	metrics := []string{metric}
	if metric == "" {
		var err error
		// No limit: every metric the index holds.
		if metrics, err = h.suggester.Suggest(ctx, tsdb.SuggestMetrics, "", 0); err != nil {
			return nil, err
		}
	}
	// The pairs with a literal key narrow the store's selection; every
	// pair is then checked exactly here (the index has no filter for a
	// value under any key).
	var filters []tsdb.Filter
	for _, p := range pairs {
		switch v := p.value(); {
		case p.Key == "*":
		case v == "*":
			filters = append(filters, tsdb.Filter{Type: tsdb.Wildcard, Tag: p.Key, Expr: "*"})
		case !strings.Contains(v, "|"):
			filters = append(filters, tsdb.Filter{Type: tsdb.LiteralOr, Tag: p.Key, Expr: v})
		}
	}
	// The whole time the store can hold.
	start, end := time.UnixMilli(0), time.UnixMilli(math.MaxInt64)
	var out []lookupResult
	for _, m := range metrics {
		series, err := h.lister.ListSeries(ctx, m, filters, start, end)
		if err != nil {
			return nil, err
		}
		for _, tags := range series {
			if !matchPairs(tags, pairs) {
				continue
			}
			res := lookupResult{Tags: tags, Metric: m}
			if h.tsuider != nil {
				res.TSUID = h.tsuider.TSUID(m, tags)
			}
			out = append(out, res)
		}
	}
	slices.SortFunc(out, func(a, b lookupResult) int {
		if c := strings.Compare(a.Metric, b.Metric); c != 0 {
			return c
		}
		return strings.Compare(seriesString("", a.Tags), seriesString("", b.Tags))
	})
	return out, nil
}

// value is p's value, "*" for a wildcard.
func (p lookupPair) value() string {
	if p.Value == nil || *p.Value == "" {
		return "*"
	}
	return *p.Value
}

// matchPairs says whether tags has every pair: a tag of that key and
// value, "*" on either side matching any.
func matchPairs(tags map[string]string, pairs []lookupPair) bool {
	for _, p := range pairs {
		v := p.value()
		switch {
		case p.Key == "*" && v == "*":
		case p.Key == "*":
			found := false
			for _, tv := range tags {
				if tv == v {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		default:
			tv, ok := tags[p.Key]
			if !ok || v != "*" && tv != v {
				return false
			}
		}
	}
	return true
}

// parseLookup reads a lookup's m: [<metric>][{<tagk>=<tagv>[,...]}], as
// OpenTSDB's Tags.parseWithMetric does.
func parseLookup(m string) (string, []lookupPair, error) {
	brace := strings.IndexByte(m, '{')
	if brace < 0 {
		return strings.TrimSpace(m), nil, nil
	}
	if !strings.HasSuffix(m, "}") {
		return "", nil, fmt.Errorf("%q: missing the closing '}'", m)
	}
	metric := strings.TrimSpace(m[:brace])
	var pairs []lookupPair
	for kv := range strings.SplitSeq(m[brace+1:len(m)-1], ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return "", nil, fmt.Errorf("%q: invalid tag %q: want <tagk>=<tagv>, either side may be *", m, kv)
		}
		pairs = append(pairs, lookupPair{Key: k, Value: &v})
	}
	return metric, pairs, nil
}
