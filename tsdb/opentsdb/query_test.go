package opentsdb

import (
	"errors"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestQueryRequestJSON(t *testing.T) {
	start, end := time.UnixMilli(1356998400000), time.UnixMilli(1356998460500)
	for _, tc := range []struct {
		name string
		q    tsdb.Query
		want string // the exact JSON body
	}{
		// No aggregator means none; no filters, no downsample.
		{"bare", tsdb.Query{Metric: "sys.cpu.0", Start: start, End: end},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"none","metric":"sys.cpu.0"}]}`},
		// The documentation's 2.2 filter example: wildcard grouped, literal_or not.
		{"doc filters", tsdb.Query{Metric: "sys.cpu.0", Start: start, End: end, Aggregator: "sum", Rate: true, Filters: []tsdb.Filter{
			{Type: tsdb.Wildcard, Tag: "host", Expr: "*", GroupBy: true},
			{Type: tsdb.LiteralOr, Tag: "dc", Expr: "lga|lga1|lga2"},
		}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"sys.cpu.0","rate":true,"filters":[
			    {"type":"wildcard","tagk":"host","filter":"*","groupBy":true},
			    {"type":"literal_or","tagk":"dc","filter":"lga|lga1|lga2","groupBy":false}]}]}`},
		// Every other filter type goes through verbatim.
		{"other filters", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "max", Filters: []tsdb.Filter{
			{Type: tsdb.ILiteralOr, Tag: "a", Expr: "X|y"},
			{Type: tsdb.NotLiteralOr, Tag: "b", Expr: "z"},
			{Type: tsdb.IWildcard, Tag: "c", Expr: "Web*"},
			{Type: tsdb.Regexp, Tag: "d", Expr: "web[0-9]+\\.lga", GroupBy: true},
		}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"max","metric":"m","filters":[
			    {"type":"iliteral_or","tagk":"a","filter":"X|y","groupBy":false},
			    {"type":"not_literal_or","tagk":"b","filter":"z","groupBy":false},
			    {"type":"iwildcard","tagk":"c","filter":"Web*","groupBy":false},
			    {"type":"regexp","tagk":"d","filter":"web[0-9]+\\.lga","groupBy":true}]}]}`},
		// Downsample with a fill policy, interval in seconds.
		{"downsample nan", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "none",
			Downsample: &tsdb.Downsample{Interval: 10 * time.Second, Aggregator: "avg", Fill: "nan"}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"none","metric":"m","downsample":"10s-avg-nan"}]}`},
		// Whole minutes and hours use the larger unit; fill none is the default and left out.
		{"downsample units", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum",
			Downsample: &tsdb.Downsample{Interval: 90 * time.Minute, Aggregator: "max", Fill: "none"}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","downsample":"90m-max"}]}`},
		// Sub-second intervals in milliseconds, zero fill, rate.
		{"downsample ms", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "avg", Rate: true,
			Downsample: &tsdb.Downsample{Interval: 1500 * time.Millisecond, Aggregator: "sum", Fill: "zero"}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"avg","metric":"m","rate":true,"downsample":"1500ms-sum-zero"}]}`},
		// No end: OpenTSDB uses its current time.
		{"open end", tsdb.Query{Metric: "m", Start: start, Aggregator: "count",
			Downsample: &tsdb.Downsample{Interval: 24 * time.Hour, Aggregator: "count", Fill: "null"}},
			`{"start":1356998400000,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"count","metric":"m","downsample":"24h-count-null"}]}`},
		// A counter rate sends its options; zero max and reset are left
		// to OpenTSDB's defaults.
		{"counter rate", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum", Rate: true,
			RateOptions: tsdb.RateOptions{Counter: true, DropResets: true}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","rate":true,"rateOptions":{"counter":true,"dropResets":true}}]}`},
		{"counter max and reset", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum", Rate: true,
			RateOptions: tsdb.RateOptions{Counter: true, CounterMax: 65535, ResetValue: 100}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","rate":true,"rateOptions":{"counter":true,"counterMax":65535,"resetValue":100}}]}`},
		// Options of no counter, or without a rate, change nothing and are not sent.
		{"options without counter", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum", Rate: true,
			RateOptions: tsdb.RateOptions{CounterMax: 10, DropResets: true}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","rate":true}]}`},
		{"options without rate", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum",
			RateOptions: tsdb.RateOptions{Counter: true}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m"}]}`},
		// explicitTags, with the filters it refers to.
		{"explicit tags", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum", ExplicitTags: true,
			Filters: []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "host", Expr: "*"}}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","filters":[
			    {"type":"wildcard","tagk":"host","filter":"*","groupBy":false}],"explicitTags":true}]}`},
		// One bucket over the whole range: "0all-", with its fill policy.
		{"downsample all", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum",
			Downsample: &tsdb.Downsample{All: true, Aggregator: "max"}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","downsample":"0all-max"}]}`},
		{"downsample all fill", tsdb.Query{Metric: "m", Start: start, End: end, Aggregator: "sum",
			Downsample: &tsdb.Downsample{All: true, Aggregator: "sum", Fill: "zero"}},
			`{"start":1356998400000,"end":1356998460500,"msResolution":true,"noAnnotations":true,
			  "queries":[{"aggregator":"sum","metric":"m","downsample":"0all-sum-zero"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			f.queryAnswer = "[]"
			c := f.client(t, nil)
			out, err := c.Query(testContext(t), tc.q)
			if err != nil || len(out) != 0 {
				t.Fatalf("Query = %v, %v; want an empty answer", out, err)
			}
			assertJSON(t, f.body(t, "/api/query", 0), tc.want)
		})
	}
}

func TestQueryRefusesInvalidLocally(t *testing.T) {
	start := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name string
		q    tsdb.Query
	}{
		{"no metric", tsdb.Query{Start: start}},
		{"no start", tsdb.Query{Metric: "m"}},
		{"end before start", tsdb.Query{Metric: "m", Start: start, End: start.Add(-time.Second)}},
		{"zero interval", tsdb.Query{Metric: "m", Start: start, Downsample: &tsdb.Downsample{Aggregator: "avg"}}},
		{"no downsample aggregator", tsdb.Query{Metric: "m", Start: start, Downsample: &tsdb.Downsample{Interval: time.Minute}}},
		{"all with an interval", tsdb.Query{Metric: "m", Start: start, Downsample: &tsdb.Downsample{All: true, Interval: time.Minute, Aggregator: "sum"}}},
		{"unknown fill", tsdb.Query{Metric: "m", Start: start, Downsample: &tsdb.Downsample{Interval: time.Minute, Aggregator: "avg", Fill: "scalar"}}},
		{"filter without tag", tsdb.Query{Metric: "m", Start: start, Filters: []tsdb.Filter{{Type: tsdb.Wildcard, Expr: "*"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			c := f.client(t, nil)
			if _, err := c.Query(testContext(t), tc.q); !errors.Is(err, tsdb.ErrInvalid) {
				t.Errorf("err = %v; want ErrInvalid", err)
			}
			if n := len(f.requestLog()); n != 0 {
				t.Errorf("%d requests sent; want none", n)
			}
		})
	}
}

func TestQueryParsesDocumentedAnswers(t *testing.T) {
	at := func(sec int64) time.Time { return time.Unix(sec, 0) }
	for _, tc := range []struct {
		name   string
		answer string
		want   []tsdb.Series
	}{
		// "Example Multi-Set Response": two series, second timestamps.
		{"multi-set", string(readTestdata(t, "query_multiset.json")), []tsdb.Series{
			{Metric: "tsd.hbase.puts", Tags: map[string]string{"host": "tsdb-1.mysite.com"}, Samples: []tsdb.Sample{
				{Time: at(1365966001), Value: 3758788892}, {Time: at(1365966061), Value: 3758804070}, {Time: at(1365974281), Value: 3778141673}}},
			{Metric: "tsd.hbase.puts", Tags: map[string]string{"host": "tsdb-2.mysite.com"}, Samples: []tsdb.Sample{
				{Time: at(1365966001), Value: 3902179270}, {Time: at(1365966062), Value: 3902197769}, {Time: at(1365974281), Value: 3922266478}}},
		}},
		// "Example Aggregated Default Response", annotations and all.
		{"aggregated", string(readTestdata(t, "query_aggregated.json")), []tsdb.Series{
			{Metric: "tsd.hbase.puts", Tags: map[string]string{}, AggregatedTags: []string{"host"}, Samples: []tsdb.Sample{
				{Time: at(1365966001), Value: 25595461080}, {Time: at(1365966061), Value: 25595542522}, {Time: at(1365966062), Value: 25595543979}, {Time: at(1365973801), Value: 25717417859}}},
		}},
		// "Example Aggregated Array Response".
		{"arrays", string(readTestdata(t, "query_arrays.json")), []tsdb.Series{
			{Metric: "tsd.hbase.puts", Tags: map[string]string{}, AggregatedTags: []string{"host"}, Samples: []tsdb.Sample{
				{Time: at(1365966001), Value: 25595461080}, {Time: at(1365966061), Value: 25595542522}, {Time: at(1365974221), Value: 25722266376}}},
		}},
		// "Example With Show Summary and Query": the statsSummary element is not a series.
		{"summary", string(readTestdata(t, "query_summary.json")), []tsdb.Series{
			{Metric: "tsd.hbase.puts", Tags: map[string]string{}, AggregatedTags: []string{"host"}, Samples: []tsdb.Sample{
				{Time: at(1365966001), Value: 25595461080}, {Time: at(1365966061), Value: 25595542522}, {Time: at(1365966062), Value: 25595543979}, {Time: at(1365973801), Value: 25717417859}}},
		}},
		// msResolution answer, keys out of order, filled buckets: a bare
		// NaN (Jackson's output), a quoted one, and null.
		{"ms with fills", `[{"metric":"m","tags":{"host":"b"},"aggregateTags":[],"dps":{
			"1700000020000":NaN,"1700000000500":1.5,"1700000010000":null,"1700000030000":"NaN","1700000040000":-2}},
			{"metric":"m","tags":{"host":"a"},"aggregateTags":[],"dps":{}}]`, []tsdb.Series{
			{Metric: "m", Tags: map[string]string{"host": "a"}, Samples: []tsdb.Sample{}},
			{Metric: "m", Tags: map[string]string{"host": "b"}, Samples: []tsdb.Sample{
				{Time: time.UnixMilli(1700000000500), Value: 1.5}, {Time: time.UnixMilli(1700000010000), Value: math.NaN()},
				{Time: time.UnixMilli(1700000020000), Value: math.NaN()}, {Time: time.UnixMilli(1700000030000), Value: math.NaN()},
				{Time: time.UnixMilli(1700000040000), Value: -2}}},
		}},
		// Nothing matched.
		{"empty", `[]`, []tsdb.Series{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			f.queryAnswer = tc.answer
			c := f.client(t, nil)
			got, err := c.Query(testContext(t), tsdb.Query{Metric: "tsd.hbase.puts", Start: time.Unix(1365966000, 0), Aggregator: "sum"})
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			assertSeries(t, got, tc.want)
		})
	}
}

func assertSeries(t *testing.T, got, want []tsdb.Series) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d series %+v; want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Metric != w.Metric || !maps.Equal(g.Tags, w.Tags) || g.Tags == nil || !slices.Equal(g.AggregatedTags, w.AggregatedTags) {
			t.Errorf("series %d = %s %v %v; want %s %v %v", i, g.Metric, g.Tags, g.AggregatedTags, w.Metric, w.Tags, w.AggregatedTags)
		}
		if len(g.Samples) != len(w.Samples) {
			t.Errorf("series %d: %d samples %v; want %v", i, len(g.Samples), g.Samples, w.Samples)
			continue
		}
		for j := range w.Samples {
			gs, ws := g.Samples[j], w.Samples[j]
			same := gs.Value == ws.Value || math.IsNaN(gs.Value) && math.IsNaN(ws.Value)
			if !gs.Time.Equal(ws.Time) || !same {
				t.Errorf("series %d sample %d = %v %v; want %v %v", i, j, gs.Time, gs.Value, ws.Time, ws.Value)
			}
		}
	}
}

func TestQueryErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   func(*fakeTSD)
		want     error
		wantText string
	}{
		// OpenTSDB refuses the query: the error body's message and details
		// are in the error, which blames the request.
		{"400", func(f *fakeTSD) {
			f.override = func(w http.ResponseWriter, r *http.Request) {
				writeError(w, 400, "No such aggregation function: nosuch", "java.lang.IllegalArgumentException")
			}
		}, tsdb.ErrInvalid, "No such aggregation function: nosuch"},
		// The TSD fails: retried, then unavailable.
		{"500", func(f *fakeTSD) {
			f.override = func(w http.ResponseWriter, r *http.Request) {
				writeError(w, 500, "Storage failure", "")
			}
		}, tsdb.ErrUnavailable, "500 Internal Server Error: Storage failure"},
		// A body that is not the documented JSON blames the server.
		{"garbage", func(f *fakeTSD) { f.queryAnswer = "<html>proxy error</html>" }, tsdb.ErrUnavailable, "undocumented answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			tc.answer(f)
			c := f.client(t, func(o *Options) { o.MaxRetries = 1 })
			_, err := c.Query(testContext(t), tsdb.Query{Metric: "nosuch", Start: time.Unix(1700000000, 0)})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantText) || !strings.Contains(err.Error(), f.srv.URL+"/api/query") {
				t.Errorf("err = %v; want %v naming the URL and %q", err, tc.want, tc.wantText)
			}
			var se *StatusError
			if tc.want == tsdb.ErrInvalid && (!errors.As(err, &se) || se.StatusCode != 400 || se.Details == "") {
				t.Errorf("err = %#v; want a StatusError 400 with details", err)
			}
		})
	}
}

func TestUnknownNamesAreEmptyAnswers(t *testing.T) {
	f := newFakeTSD(t)
	// OpenTSDB's answer to a read of a name it never stored.
	f.override = func(w http.ResponseWriter, r *http.Request) {
		writeError(w, 400, "No such name for 'metrics': 'nosuch'", "")
	}
	c := f.client(t, nil)
	ctx := testContext(t)
	q, err := c.Query(ctx, tsdb.Query{Metric: "nosuch", Start: time.Unix(1700000000, 0)})
	if err != nil || q == nil || len(q) != 0 {
		t.Errorf("Query = %v, %v; want an empty answer", q, err)
	}
	l, err := c.Last(ctx, "nosuch", nil)
	if err != nil || l == nil || len(l) != 0 {
		t.Errorf("Last = %v, %v; want an empty answer", l, err)
	}
	a, err := c.Annotations(ctx, "", time.Unix(1700000000, 0), time.Unix(1700003600, 0))
	if err != nil || len(a) != 0 {
		t.Errorf("Annotations = %v, %v; want none", a, err)
	}
}

func TestLast(t *testing.T) {
	for _, tc := range []struct {
		name     string
		filters  []tsdb.Filter
		wantBody string
		wantHost []string
	}{
		// A single-valued literal_or becomes a tag; both answers match.
		{"literal tag", []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "type", Expr: "put"}},
			`{"queries":[{"metric":"tsd.hbase.rpcs","tags":{"type":"put"}}],"resolveNames":true,"backScan":24}`,
			[]string{"tsd1", "tsd2"}},
		// Other filters are not sent (query/last takes literal tags only)
		// and are applied to the answer.
		{"regexp client side", []tsdb.Filter{{Type: tsdb.Regexp, Tag: "host", Expr: "tsd[2-9]"}},
			`{"queries":[{"metric":"tsd.hbase.rpcs","tags":{}}],"resolveNames":true,"backScan":24}`,
			[]string{"tsd2"}},
		// Several literal values: not a tag, filtered here.
		{"literal_or list", []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "tsd1|tsd3"}},
			`{"queries":[{"metric":"tsd.hbase.rpcs","tags":{}}],"resolveNames":true,"backScan":24}`,
			[]string{"tsd1"}},
		// not_literal_or and iwildcard, combined.
		{"not literal and iwildcard", []tsdb.Filter{
			{Type: tsdb.NotLiteralOr, Tag: "host", Expr: "tsd1"}, {Type: tsdb.IWildcard, Tag: "type", Expr: "P*"}},
			`{"queries":[{"metric":"tsd.hbase.rpcs","tags":{}}],"resolveNames":true,"backScan":24}`,
			[]string{"tsd2"}},
		// A filter on a tag the series lack never matches.
		{"missing tag", []tsdb.Filter{{Type: tsdb.Wildcard, Tag: "dc", Expr: "*"}},
			`{"queries":[{"metric":"tsd.hbase.rpcs","tags":{}}],"resolveNames":true,"backScan":24}`,
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTSD(t)
			f.queryAnswer = string(readTestdata(t, "last_resolved.json"))
			c := f.client(t, nil)
			got, err := c.Last(testContext(t), "tsd.hbase.rpcs", tc.filters)
			if err != nil {
				t.Fatalf("Last: %v", err)
			}
			assertJSON(t, f.body(t, "/api/query/last", 0), tc.wantBody)
			var hosts []string
			for _, s := range got {
				hosts = append(hosts, s.Tags["host"])
				if s.Metric != "tsd.hbase.rpcs" || len(s.Samples) != 1 || !s.Samples[0].Time.Equal(time.UnixMilli(1377186301000)) {
					t.Errorf("series %+v; want one sample at 1377186301000", s)
				}
			}
			if !slices.Equal(hosts, tc.wantHost) {
				t.Errorf("hosts %v; want %v", hosts, tc.wantHost)
			}
			if len(got) == 2 && (got[0].Samples[0].Value != 2723265185 || got[1].Samples[0].Value != 580720) {
				t.Errorf("values %v %v; want the quoted values parsed", got[0].Samples, got[1].Samples)
			}
		})
	}
}

func TestLastBackScanOption(t *testing.T) {
	for _, tc := range []struct {
		scan time.Duration
		want string
	}{
		{90 * time.Minute, `"backScan":2`}, // rounded up to whole hours
		{-1, `"backScan":0`},               // meta table counters
	} {
		f := newFakeTSD(t)
		f.queryAnswer = "[]"
		c := f.client(t, func(o *Options) { o.LastBackScan = tc.scan })
		if _, err := c.Last(testContext(t), "m", nil); err != nil {
			t.Fatal(err)
		}
		if b := string(f.body(t, "/api/query/last", 0)); !strings.Contains(b, tc.want) {
			t.Errorf("LastBackScan %v sent %s; want %s", tc.scan, b, tc.want)
		}
	}
}

func TestLastRefusesBadFilters(t *testing.T) {
	f := newFakeTSD(t)
	c := f.client(t, nil)
	for _, fl := range []tsdb.Filter{
		{Type: tsdb.Regexp, Tag: "host", Expr: "("},
		{Type: "fancy", Tag: "host", Expr: "x"},
		{Type: tsdb.LiteralOr, Expr: "x"},
	} {
		if _, err := c.Last(testContext(t), "m", []tsdb.Filter{fl}); !errors.Is(err, tsdb.ErrInvalid) {
			t.Errorf("filter %+v: err = %v; want ErrInvalid", fl, err)
		}
	}
	if n := len(f.requestLog()); n != 0 {
		t.Errorf("%d requests; want none", n)
	}
}
