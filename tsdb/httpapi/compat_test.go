package httpapi

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestLookup: /api/search/lookup by GET (m=) and POST (OpenTSDB's body),
// each answer in OpenTSDB's shape with the series' tsuids.
func TestLookup(t *testing.T) {
	s := startServer(t, "", Options{})
	s.put(t, `[{"metric":"cpu","timestamp":1356998400,"value":1,"tags":{"host":"a","dc":"eu"}},
		{"metric":"cpu","timestamp":1356998400,"value":1,"tags":{"host":"b","dc":"us"}},
		{"metric":"cpu","timestamp":1356998400,"value":1,"tags":{"host":"c"}},
		{"metric":"mem","timestamp":1356998400,"value":1,"tags":{"host":"a"}}]`)
	type result struct {
		Tags   map[string]string `json:"tags"`
		Metric string            `json:"metric"`
		TSUID  string            `json:"tsuid"`
	}
	type answer struct {
		Type         string         `json:"type"`
		Metric       *string        `json:"metric"`
		Tags         []lookupPair   `json:"tags"`
		Limit        int            `json:"limit"`
		Time         *int64         `json:"time"`
		Results      []result       `json:"results"`
		StartIndex   int            `json:"startIndex"`
		TotalResults int            `json:"totalResults"`
		Extra        map[string]any `json:"-"`
	}
	series := func(a answer) []string {
		var out []string
		for _, r := range a.Results {
			if r.TSUID != s.store.TSUID(r.Metric, r.Tags) {
				t.Errorf("%s %v: tsuid %q, want the store's", r.Metric, r.Tags, r.TSUID)
			}
			out = append(out, r.Metric+seriesString("", r.Tags))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		get   string // m=
		post  string // or a body
		want  []string
		total int
		limit int
	}{
		{name: "a metric", get: "cpu", want: []string{"cpu{dc=eu,host=a}", "cpu{dc=us,host=b}", "cpu{host=c}"}, total: 3, limit: 25},
		{name: "a tag key", get: "cpu{dc=*}", want: []string{"cpu{dc=eu,host=a}", "cpu{dc=us,host=b}"}, total: 2, limit: 25},
		{name: "a pair", get: "cpu{dc=us}", want: []string{"cpu{dc=us,host=b}"}, total: 1, limit: 25},
		{name: "a value under any key, every metric", get: "{*=a}", want: []string{"cpu{dc=eu,host=a}", "mem{host=a}"}, total: 2, limit: 25},
		{name: "the limit cuts the results, not the total", get: "cpu", want: []string{"cpu{dc=eu,host=a}"}, total: 3, limit: 1},
		{name: "POST", post: `{"metric":"cpu","tags":[{"key":"host","value":null},{"key":"dc","value":"eu"}],"limit":5,"useMeta":true}`,
			want: []string{"cpu{dc=eu,host=a}"}, total: 1, limit: 5},
		{name: "no such metric", get: "disk", total: 0, limit: 25},
	} {
		var r response
		if tc.post != "" {
			r = s.post(t, "/api/search/lookup", tc.post)
		} else {
			path := "/api/search/lookup?m=" + url.QueryEscape(tc.get)
			if tc.limit != 25 {
				path += "&limit=1"
			}
			r = s.get(t, path)
		}
		var a answer
		if err := json.Unmarshal(r.body, &a); err != nil || r.code != 200 {
			t.Errorf("%s: %d %s", tc.name, r.code, r.body)
			continue
		}
		if got := series(a); !slices.Equal(got, tc.want) || a.TotalResults != tc.total || a.Limit != tc.limit ||
			a.Type != "LOOKUP" || a.Time == nil || a.Results == nil {
			t.Errorf("%s: %s\nwant results %v, totalResults %d, limit %d", tc.name, r.body, tc.want, tc.total, tc.limit)
		}
	}
	checkError(t, "no m", s.get(t, "/api/search/lookup"), 400, "Missing parameter m")
	checkError(t, "nothing to look up", s.get(t, "/api/search/lookup?m=*"), 400, "Missing metric and tags. Please supply at least one value.")
	checkError(t, "a bad pair", s.get(t, "/api/search/lookup?m="+url.QueryEscape("cpu{host}")), 400, "Unable to parse query")
}

// TestFilters24: every filter type /api/config/filters lists is taken by
// /api/query, in m= and in a body; not_key selects the series without
// the tag.
func TestFilters24(t *testing.T) {
	s := startServer(t, "", Options{})
	s.put(t, `[{"metric":"cpu","timestamp":1356998400,"value":1,"tags":{"host":"a","dc":"EU"}},
		{"metric":"cpu","timestamp":1356998400,"value":2,"tags":{"host":"b","dc":"us"}},
		{"metric":"cpu","timestamp":1356998400,"value":4,"tags":{"host":"c"}}]`)
	var listed map[string]filterConfig
	if err := json.Unmarshal(s.get(t, "/api/config/filters").body, &listed); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{"literal_or": "a", "iliteral_or": "A", "not_literal_or": "a", "not_iliteral_or": "A",
		"wildcard": "*", "iwildcard": "A*", "regexp": "[ab]", "not_key": ""}
	for typ := range listed {
		expr, ok := exprs[typ]
		if !ok {
			t.Errorf("%s is listed but untested", typ)
			continue
		}
		m := "sum:cpu{}{host=" + typ + "(" + expr + ")}"
		if r := s.get(t, "/api/query?start=1356998400&m="+url.QueryEscape(m)); r.code != 200 {
			t.Errorf("%s: %d %s", m, r.code, r.body)
		}
	}
	if len(listed) != len(exprs) {
		t.Errorf("listed %d filter types, want OpenTSDB 2.4's %d", len(listed), len(exprs))
	}
	checkJSON(t, "not_key", s.get(t, "/api/query?start=1356998400&m="+url.QueryEscape("sum:cpu{}{dc=not_key()}")), 200,
		`[{"metric":"cpu","tags":{"host":"c"},"aggregateTags":[],"dps":{"1356998400":4}}]`)
	checkJSON(t, "not_iliteral_or", s.post(t, "/api/query",
		`{"start":1356998400,"queries":[{"metric":"cpu","aggregator":"sum","filters":[{"type":"not_iliteral_or","tagk":"dc","filter":"eu"}]}]}`), 200,
		`[{"metric":"cpu","tags":{"dc":"us","host":"b"},"aggregateTags":[],"dps":{"1356998400":2}}]`)
	checkError(t, "not_key with a filter", s.post(t, "/api/query",
		`{"start":1356998400,"queries":[{"metric":"cpu","aggregator":"sum","filters":[{"type":"not_key","tagk":"dc","filter":"eu"}]}]}`),
		400, "The filter must be empty for the not_key filter")
	checkError(t, "an unknown type", s.post(t, "/api/query",
		`{"start":1356998400,"queries":[{"metric":"cpu","aggregator":"sum","filters":[{"type":"glob","tagk":"dc","filter":"eu"}]}]}`),
		400, "Invalid filter type")
}

// TestShowQuery: with showQuery (GET show_query) every series carries
// its sub query, with the index Grafana maps it back by; without, none.
func TestShowQuery(t *testing.T) {
	s := startServer(t, "", Options{})
	s.put(t, `[{"metric":"a","timestamp":1356998400,"value":1,"tags":{"host":"x"}},
		{"metric":"b","timestamp":1356998400,"value":1,"tags":{"host":"x"}},{"metric":"b","timestamp":1356998460,"value":61,"tags":{"host":"x"}}]`)
	checkJSON(t, "two queries", s.get(t, "/api/query?start=1356998400&show_query&m=sum:1m-avg:rate:b{host=*}&m=max:a"), 200, `[
		{"metric":"b","tags":{"host":"x"},"aggregateTags":[],"dps":{"1356998460":1},
		 "query":{"aggregator":"sum","metric":"b","tsuids":null,"downsample":"1m-avg","rate":true,
		  "filters":[{"tagk":"host","filter":"*","group_by":true,"type":"wildcard"}],"index":0,"tags":{"host":"wildcard(*)"},
		  "rateOptions":{"counter":false,"counterMax":9223372036854775807,"resetValue":0,"dropResets":false},
		  "explicitTags":false,"percentiles":null}},
		{"metric":"a","tags":{"host":"x"},"aggregateTags":[],"dps":{"1356998400":1},
		 "query":{"aggregator":"max","metric":"a","tsuids":null,"downsample":null,"rate":false,"filters":[],"index":1,"tags":{},
		  "rateOptions":null,"explicitTags":false,"percentiles":null}}]`)
	if r := s.get(t, "/api/query?start=1356998400&m=max:a"); strings.Contains(string(r.body), `"query"`) {
		t.Errorf("without showQuery: %s", r.body)
	}
	// arrays (OpenTSDB 2.4's serializer), which Grafana's "==2.4" setting
	// sends for server-side queries, in the query string of a POST.
	checkJSON(t, "arrays", s.post(t, "/api/query?arrays=true", `{"start":1356998400,"queries":[{"metric":"b","aggregator":"sum"}]}`), 200,
		`[{"metric":"b","tags":{"host":"x"},"aggregateTags":[],"dps":[[1356998400,1],[1356998460,61]]}]`)
}

// TestStatsSerializersDropCaches: the small endpoints answer in
// OpenTSDB's shapes, and the stats count what happened.
func TestStatsSerializersDropCaches(t *testing.T) {
	s := startServer(t, "", Options{})
	s.put(t, `[{"metric":"a","timestamp":1356998400,"value":1,"tags":{"host":"x"}},{"metric":"a","timestamp":1356998401,"value":1,"tags":{"host":"x"}}]`)
	var stats []stat
	if err := json.Unmarshal(s.get(t, "/api/stats").body, &stats); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, st := range stats {
		if st.Tags["host"] == "" || st.Timestamp != now.Unix() {
			t.Errorf("stat %+v: want a host tag and the time", st)
		}
		got[st.Metric+"/"+st.Tags["type"]] = st.Value
	}
	for k, want := range map[string]string{"tsd.rpc.received/put": "2", "tsd.datapoints.added/all": "2", "tsd.rpc.received/http": "2"} {
		if got[k] != want {
			t.Errorf("stat %s = %q, want %s (all: %v)", k, got[k], want, got)
		}
	}
	var ser []map[string]any
	if err := json.Unmarshal(s.get(t, "/api/serializers").body, &ser); err != nil || len(ser) != 1 || ser[0]["serializer"] != "json" {
		t.Errorf("serializers: %v %v", ser, err)
	}
	checkJSON(t, "dropcaches", s.get(t, "/api/dropcaches"), 200, `{"message":"Caches dropped","status":"200"}`)
}
