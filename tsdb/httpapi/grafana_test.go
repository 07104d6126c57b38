package httpapi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestGrafanaSequence replays what Grafana's OpenTSDB data source
// (public/app/plugins/datasource/opentsdb/datasource.ts) sends, request
// for request, with its version setting "==2.3" (tsdbVersion 3, the
// highest its settings page offers), and reads each answer the way it
// does: "Save & test", the query editor's aggregators, filter types,
// metric, tag key and tag value completion, the template variables
// tag_names() and tag_values(), a panel of two queries (one with filters,
// one with old-style tags) with showQuery, and an annotation query.
func TestGrafanaSequence(t *testing.T) {
	s := startServer(t, "", Options{})
	var points []string
	for i := range 5 {
		ts := now.Unix() - 300 + int64(i)*60
		for _, h := range []string{"web1", "web2", "db1"} {
			points = append(points,
				fmt.Sprintf(`{"metric":"dmonitor.check.duration","timestamp":%d,"value":%d,"tags":{"host":%q,"check":"http","observer":"n1"}}`, ts, i+1, h),
				fmt.Sprintf(`{"metric":"dmonitor.check.status","timestamp":%d,"value":0,"tags":{"host":%q,"check":"http"}}`, ts, h))
		}
	}
	s.put(t, "["+strings.Join(points, ",")+"]")
	if r := s.post(t, "/api/annotation", fmt.Sprintf(`{"startTime":%d,"description":"deploy"}`, now.Unix()-120)); r.code != 200 {
		t.Fatalf("global annotation: %d %s", r.code, r.body)
	}

	getJSON := func(what, path string, v any) {
		t.Helper()
		r := s.get(t, path)
		if r.code != 200 {
			t.Fatalf("%s: GET %s: %d %s", what, path, r.code, r.body)
		}
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("%s: %v: %s", what, err, r.body)
		}
	}
	q := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v.Encode()
	}

	// testDatasource: a suggest for "cpu" must answer 200, even empty.
	var names []string
	getJSON("save & test", "/api/suggest?"+q("type", "metrics", "q", "cpu", "max", "1000"), &names)

	// getAggregators and getFilterTypes: Grafana offers the sorted keys
	// of /api/config/filters; without the endpoint it falls back to a
	// list of its own, which names filters the API might refuse.
	var aggs []string
	getJSON("aggregators", "/api/aggregators", &aggs)
	if !slices.Contains(aggs, "avg") || !slices.Contains(aggs, "sum") {
		t.Errorf("aggregators %v: the editor's defaults avg and sum missing", aggs)
	}
	var filters map[string]map[string]string
	getJSON("filter types", "/api/config/filters", &filters)
	for _, f := range []string{"iliteral_or", "iwildcard", "literal_or", "not_iliteral_or", "not_key", "not_literal_or", "regexp", "wildcard"} {
		if e := filters[f]; e["description"] == "" || !strings.Contains(e["examples"], f+"(") {
			t.Errorf("filter %s: %v, want a description and examples", f, e)
		}
	}

	// Metric completion, then the tag keys and values of the editor and
	// of tag_names(dmonitor.check.duration) and
	// tag_values(dmonitor.check.duration, host).
	getJSON("metric completion", "/api/suggest?"+q("type", "metrics", "q", "dmonitor.check", "max", "1000"), &names)
	if !slices.Equal(names, []string{"dmonitor.check.duration", "dmonitor.check.status"}) {
		t.Errorf("metric completion: %v", names)
	}
	var lookup struct {
		Results []struct {
			Tags   map[string]string `json:"tags"`
			Metric string            `json:"metric"`
			TSUID  string            `json:"tsuid"`
		} `json:"results"`
		TotalResults int `json:"totalResults"`
	}
	getJSON("tag_names()", "/api/search/lookup?"+q("m", "dmonitor.check.duration", "limit", "1000"), &lookup)
	var tagks []string
	for _, r := range lookup.Results {
		if r.Metric != "dmonitor.check.duration" || len(r.TSUID) != 24 {
			t.Errorf("tag_names(): result %+v: want the metric and a tsuid", r)
		}
		for k := range r.Tags {
			if !slices.Contains(tagks, k) {
				tagks = append(tagks, k)
			}
		}
	}
	slices.Sort(tagks)
	if !slices.Equal(tagks, []string{"check", "host", "observer"}) || lookup.TotalResults != 3 {
		t.Errorf("tag_names(): keys %v of %d series, want check host observer of 3", tagks, lookup.TotalResults)
	}
	getJSON("tag_values()", "/api/search/lookup?"+q("m", "dmonitor.check.duration{host=*}", "limit", "1000"), &lookup)
	var hosts []string
	for _, r := range lookup.Results {
		hosts = append(hosts, r.Tags["host"])
	}
	slices.Sort(hosts)
	if !slices.Equal(hosts, []string{"db1", "web1", "web2"}) {
		t.Errorf("tag_values(dmonitor.check.duration, host): %v", hosts)
	}
	getJSON("tag key completion", "/api/suggest?"+q("type", "tagk", "q", "", "max", "1000"), &names)
	if !slices.Equal(names, []string{"check", "host", "observer"}) {
		t.Errorf("tag key completion: %v", names)
	}

	// A panel: the request body performTimeSeriesQuery builds from two
	// targets (convertTargetToQuery), the second hidden-then-shown one
	// with tags. Grafana maps each answer series to its target by
	// query.index.
	body := fmt.Sprintf(`{"start":%d,"queries":[
		{"metric":"dmonitor.check.duration","aggregator":"avg","downsample":"1m-avg",
		 "filters":[{"type":"not_iliteral_or","tagk":"host","filter":"DB1","groupBy":true}]},
		{"metric":"dmonitor.check.status","aggregator":"sum","downsample":"1m-max-zero","tags":{"host":"*"},
		 "rate":true,"rateOptions":{"counter":false,"dropResets":true}}
	],"msResolution":false,"globalAnnotations":true,"showQuery":true}`, now.Add(-3600e9).UnixMilli())
	r := s.post(t, "/api/query", body)
	if r.code != 200 {
		t.Fatalf("panel query: %d %s", r.code, r.body)
	}
	var series []struct {
		Metric            string            `json:"metric"`
		Tags              map[string]string `json:"tags"`
		DPS               map[string]any    `json:"dps"`
		GlobalAnnotations []struct {
			Description string `json:"description"`
			StartTime   int64  `json:"startTime"`
		} `json:"globalAnnotations"`
		Query *struct {
			Index   int    `json:"index"`
			Metric  string `json:"metric"`
			Filters []struct {
				Tagk    string `json:"tagk"`
				Filter  string `json:"filter"`
				GroupBy bool   `json:"group_by"`
				Type    string `json:"type"`
			} `json:"filters"`
		} `json:"query"`
	}
	if err := json.Unmarshal(r.body, &series); err != nil {
		t.Fatalf("panel query: %v: %s", err, r.body)
	}
	byIndex := map[int][]string{}
	for _, sr := range series {
		if sr.Query == nil {
			t.Fatalf("panel query: a series without query: %s", r.body)
		}
		if sr.Query.Metric != sr.Metric {
			t.Errorf("series of %s carries the query of %s", sr.Metric, sr.Query.Metric)
		}
		byIndex[sr.Query.Index] = append(byIndex[sr.Query.Index], sr.Metric+"/"+sr.Tags["host"])
		if len(sr.GlobalAnnotations) != 1 || sr.GlobalAnnotations[0].Description != "deploy" {
			t.Errorf("series %s: global annotations %+v, want the deploy", sr.Metric, sr.GlobalAnnotations)
		}
		if len(sr.DPS) == 0 {
			t.Errorf("series %s/%s: no points", sr.Metric, sr.Tags["host"])
		}
	}
	for _, l := range byIndex {
		slices.Sort(l)
	}
	if want := []string{"dmonitor.check.duration/web1", "dmonitor.check.duration/web2"}; !slices.Equal(byIndex[0], want) {
		t.Errorf("query 0 (not_iliteral_or DB1, grouped by host): %v, want %v", byIndex[0], want)
	}
	if want := []string{"dmonitor.check.status/db1", "dmonitor.check.status/web1", "dmonitor.check.status/web2"}; !slices.Equal(byIndex[1], want) {
		t.Errorf("query 1 (host=*): %v, want %v", byIndex[1], want)
	}
	if f := series[0].Query.Filters; len(f) != 1 || f[0].Type != "not_iliteral_or" || !f[0].GroupBy || f[0].Tagk != "host" {
		t.Errorf("query 0 echoed filters %+v", f)
	}

	// The annotation query of annotationEvent: sum over the metric, the
	// global annotations of the first series.
	body = fmt.Sprintf(`{"start":%d,"queries":[{"aggregator":"sum","metric":"dmonitor.check.status"}],"msResolution":false,"globalAnnotations":true,"showQuery":true}`,
		now.Add(-3600e9).UnixMilli())
	r = s.post(t, "/api/query", body)
	series = nil
	if err := json.Unmarshal(r.body, &series); err != nil || r.code != 200 || len(series) != 1 ||
		len(series[0].GlobalAnnotations) != 1 || series[0].GlobalAnnotations[0].StartTime != now.Unix()-120 || series[0].Query.Index != 0 {
		t.Errorf("annotation query: %d %s", r.code, r.body)
	}
}
