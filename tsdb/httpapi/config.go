package httpapi

import (
	"net/http"
	"strconv"
	"sync/atomic"
)

// filterConfig is one entry of /api/config/filters.
type filterConfig struct {
	Examples    string `json:"examples"`
	Description string `json:"description"`
}

// filterConfigs is the answer of /api/config/filters: OpenTSDB 2.4's
// descriptions and examples of the filters /api/query takes, which are
// all of OpenTSDB 2.4's, where they say what this API does. Grafana
// offers exactly these in its filter editor.
var filterConfigs = map[string]filterConfig{
	"literal_or": {
		Examples: `host=literal_or(web01),  host=literal_or(web01|web02|web03)  {"type":"literal_or","tagk":"host","filter":"web01|web02|web03","groupBy":false}`,
		Description: "Accepts one or more exact values and matches if the series contains any of them. Multiple values can be included " +
			"and must be separated by the | (pipe) character. The filter is case sensitive and will not allow characters that TSDB does not allow at write time.",
	},
	"iliteral_or": {
		Examples: `host=iliteral_or(web01),  host=iliteral_or(web01|web02|web03)  {"type":"iliteral_or","tagk":"host","filter":"web01|web02|web03","groupBy":false}`,
		Description: "Accepts one or more exact values and matches if the series contains any of them. Multiple values can be included " +
			"and must be separated by the | (pipe) character. The filter is case insensitive and will not allow characters that TSDB does not allow at write time.",
	},
	"not_literal_or": {
		Examples: `host=not_literal_or(web01),  host=not_literal_or(web01|web02|web03)  {"type":"not_literal_or","tagk":"host","filter":"web01|web02|web03","groupBy":false}`,
		Description: "Accepts one or more exact values and matches if the series does NOT contain any of them. Multiple values can be included " +
			"and must be separated by the | (pipe) character. The filter is case sensitive and will not allow characters that TSDB does not allow at write time.",
	},
	"not_iliteral_or": {
		Examples: `host=not_iliteral_or(web01),  host=not_iliteral_or(web01|web02|web03)  {"type":"not_iliteral_or","tagk":"host","filter":"web01|web02|web03","groupBy":false}`,
		Description: "Accepts one or more exact values and matches if the series does NOT contain any of them. Multiple values can be included " +
			"and must be separated by the | (pipe) character. The filter is case insensitive and will not allow characters that TSDB does not allow at write time.",
	},
	"wildcard": {
		Examples: `host=wildcard(web*),  host=wildcard(web*.tsdb.net)  {"type":"wildcard","tagk":"host","filter":"web*.tsdb.net","groupBy":false}`,
		Description: "Performs pre, post and in-fix glob matching of values. The globs are case sensitive and multiple wildcards can be used. " +
			"The wildcard character is the * (asterisk). A wildcard by itself can be used as well to match on any value for the tag key.",
	},
	"iwildcard": {
		Examples: `host=iwildcard(web*),  host=iwildcard(web*.tsdb.net)  {"type":"iwildcard","tagk":"host","filter":"web*.tsdb.net","groupBy":false}`,
		Description: "Performs pre, post and in-fix glob matching of values. The globs are case insensitive and multiple wildcards can be used. " +
			"The wildcard character is the * (asterisk). A wildcard by itself can be used as well to match on any value for the tag key.",
	},
	"regexp": {
		Examples: `host=regexp(.*)  {"type":"regexp","tagk":"host","filter":".*","groupBy":false}`,
		Description: "Provides regular expression matching (RE2 syntax) on tag values. The expression must match the whole value: it is anchored at both ends. " +
			"Note that an expression containing curly braces {} will not parse properly in URLs. If the pattern is not a valid regular expression then an error is returned.",
	},
	"not_key": {
		Examples: `host=not_key()  {"type":"not_key","tagk":"host","filter":"","groupBy":false}`,
		Description: "Skips any time series with the given tag key, regardless of the value. This can be useful for situations where a metric has " +
			"inconsistent tag sets. NOTE: The filter value must be null or an empty string.",
	},
}

func (h *handler) serveFilters(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, filterConfigs)
	return nil
}

// serializers is the answer of /api/serializers: the one serializer
// served, JSON, with the parsers and formatters of OpenTSDB's that this
// API implements.
var serializers = []map[string]any{{
	"serializer":            "json",
	"class":                 "github.com/dmonitor/dmonitor/tsdb/httpapi",
	"request_content_type":  "application/json",
	"response_content_type": "application/json; charset=UTF-8",
	"parsers": []string{"parsePutV1", "parseQueryV1", "parseLastPointQueryV1", "parseSuggestV1", "parseSearchQueryV1",
		"parseAnnotationV1", "parseAnnotationsV1", "parseAnnotationBulkDeleteV1"},
	"formatters": []string{"formatSuggestV1", "formatSerializersV1", "formatAggregatorsV1", "formatVersionV1",
		"formatDropCachesV1", "formatPutV1", "formatQueryV1", "formatLastPointQueryV1", "formatSearchResultsV1",
		"formatAnnotationV1", "formatAnnotationsV1", "formatAnnotationBulkDeleteV1", "formatStatsV1",
		"formatFilterConfigV1", "formatErrorV1", "formatNotFoundV1"},
}}

func (h *handler) serveSerializers(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, serializers)
	return nil
}

// serveDropCaches answers /api/dropcaches as OpenTSDB does. OpenTSDB drops
// its caches of UIDs; the embedded store has no UIDs and no such caches,
// so there is nothing to drop, and the state after the call is the one
// OpenTSDB's leaves: every name read afresh. Scripts that call it after
// renaming a UID get the answer they expect.
func (h *handler) serveDropCaches(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"message": "Caches dropped", "status": "200"})
	return nil
}

// counters are what /api/stats and the line protocol's stats report: the
// work of this API since it started, counted as it happens.
type counters struct {
	http          atomic.Int64 // HTTP requests
	lines         atomic.Int64 // line protocol commands
	putPoints     atomic.Int64 // data points received by put, HTTP and lines
	stored        atomic.Int64 // data points the store took
	invalidValues atomic.Int64 // line puts refused for a timestamp or value that is no number
	illegalArgs   atomic.Int64 // line puts refused for anything else
	connsOpen     atomic.Int64 // line protocol connections open now
	connsTotal    atomic.Int64 // line protocol connections ever accepted
}

// stat is one entry of /api/stats: OpenTSDB's shape, value as a string.
type stat struct {
	Metric    string            `json:"metric"`
	Timestamp int64             `json:"timestamp"`
	Value     string            `json:"value"`
	Tags      map[string]string `json:"tags"`
}

// stats returns the counters as OpenTSDB's stats, each tagged with the
// host, as OpenTSDB tags them.
func (h *handler) stats() []stat {
	now := h.now().Unix()
	c := &h.counters
	mk := func(metric string, v int64, kv ...string) stat {
		tags := map[string]string{"host": h.host}
		for i := 0; i+1 < len(kv); i += 2 {
			tags[kv[i]] = kv[i+1]
		}
		return stat{Metric: metric, Timestamp: now, Value: strconv.FormatInt(v, 10), Tags: tags}
	}
	return []stat{
		mk("tsd.connectionmgr.connections", c.connsOpen.Load(), "type", "open"),
		mk("tsd.connectionmgr.connections", c.connsTotal.Load(), "type", "total"),
		mk("tsd.rpc.received", c.lines.Load(), "type", "telnet"),
		mk("tsd.rpc.received", c.http.Load(), "type", "http"),
		mk("tsd.rpc.received", c.putPoints.Load(), "type", "put"),
		mk("tsd.rpc.errors", c.invalidValues.Load(), "type", "invalid_values"),
		mk("tsd.rpc.errors", c.illegalArgs.Load(), "type", "illegal_arguments"),
		mk("tsd.datapoints.added", c.stored.Load(), "type", "all"),
	}
}

func (h *handler) serveStats(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, h.stats())
	return nil
}
