package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// lastRequest is the body of a POST to /api/query/last.
type lastRequest struct {
	Queries []struct {
		Metric string            `json:"metric"`
		Tags   map[string]string `json:"tags"`
		TSUIDs []string          `json:"tsuids"`
	} `json:"queries"`
	ResolveNames flexBool `json:"resolveNames"`
	BackScan     int      `json:"backScan"`
}

// lastPoint is one entry of the answer: the value as a string and the
// time in milliseconds, as OpenTSDB writes them.
type lastPoint struct {
	Metric    string            `json:"metric,omitempty"`
	Timestamp int64             `json:"timestamp"`
	Value     string            `json:"value"`
	Tags      map[string]string `json:"tags,omitempty"`
	TSUID     string            `json:"tsuid"`
}

type lastQuery struct {
	metric  string
	filters []tsdb.Filter
}

// serveLast answers /api/query/last: the newest point of every series a
// query selects. Metric and tags are in the answer with resolveNames (GET:
// resolve); with backScan hours (GET: back_scan), points older than that
// are left out.
func (h *handler) serveLast(w http.ResponseWriter, r *http.Request) error {
	var (
		queries  []lastQuery
		resolve  bool
		backScan int
	)
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		if len(q["tsuids"]) > 0 {
			return badRequest("TSUID queries are not supported", "the embedded store's TSUIDs are hashes and cannot be resolved back to series; use timeseries=")
		}
		for _, ts := range q["timeseries"] {
			sq, err := parseM("none:" + ts)
			if err != nil {
				return badRequest("Invalid timeseries parameter", err.(*apiError).details)
			}
			lq := lastQuery{metric: sq.Metric}
			for _, f := range sq.Filters {
				tf, _ := newFilter(f.Type, f.Tagk, f.Filter, false) // parseM made them valid
				lq.filters = append(lq.filters, tf)
			}
			queries = append(queries, lq)
		}
		resolve = flag(r, "resolve")
		if bs := q.Get("back_scan"); bs != "" {
			n, err := strconv.Atoi(bs)
			if err != nil || n < 0 {
				return badRequest("Invalid back_scan", "back_scan must be a whole number of hours")
			}
			backScan = n
		}
	} else {
		var lr lastRequest
		if err := h.decodeBody(w, r, &lr); err != nil {
			return err
		}
		for _, sq := range lr.Queries {
			if sq.Metric == "" && len(sq.TSUIDs) > 0 {
				return badRequest("TSUID queries are not supported", "the embedded store's TSUIDs are hashes and cannot be resolved back to series; query by metric")
			}
			lq := lastQuery{metric: sq.Metric}
			for k, v := range sq.Tags {
				tf, err := tagFilter(k, v, false)
				if err != nil {
					return err
				}
				lq.filters = append(lq.filters, tf)
			}
			queries = append(queries, lq)
		}
		resolve, backScan = bool(lr.ResolveNames), lr.BackScan
		if backScan < 0 {
			return badRequest("Invalid backScan", "backScan must be a whole number of hours")
		}
	}
	if len(queries) == 0 {
		return badRequest("Missing sub queries", "Supply at least one query (GET: timeseries=)")
	}
	var oldest time.Time
	if backScan > 0 {
		oldest = h.now().Add(-time.Duration(backScan) * time.Hour)
	}
	out := []lastPoint{}
	for _, lq := range queries {
		if lq.metric == "" {
			return badRequest("Missing metric", "each query needs a metric")
		}
		series, err := h.store.Last(r.Context(), lq.metric, lq.filters)
		if err != nil {
			return err
		}
		for _, s := range series {
			if len(s.Samples) == 0 || s.Samples[0].Time.Before(oldest) {
				continue
			}
			lp := lastPoint{
				Timestamp: s.Samples[0].Time.UnixMilli(),
				Value:     strings.Trim(string(appendValue(nil, s.Samples[0].Value, false)), `"`),
			}
			if h.tsuider != nil {
				lp.TSUID = h.tsuider.TSUID(lq.metric, s.Tags)
			}
			if resolve {
				lp.Metric, lp.Tags = lq.metric, s.Tags
			}
			out = append(out, lp)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
