package httpapi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"testing"
)

// t0 is the documentation's example start, 2013/01/01-00:00:00 UTC.
const t0 = 1356998400

// queryData is the data the query tests read, stored through /api/put.
var queryData = fmt.Sprintf(`[
	{"metric":"sys.cpu.user","timestamp":%[1]d,"value":10,"tags":{"host":"web01","dc":"lga"}},
	{"metric":"sys.cpu.user","timestamp":%[2]d,"value":20,"tags":{"host":"web01","dc":"lga"}},
	{"metric":"sys.cpu.user","timestamp":%[3]d,"value":30,"tags":{"host":"web01","dc":"lga"}},
	{"metric":"sys.cpu.user","timestamp":%[1]d,"value":1,"tags":{"host":"web02","dc":"lga"}},
	{"metric":"sys.cpu.user","timestamp":%[2]d,"value":2,"tags":{"host":"web02","dc":"lga"}},
	{"metric":"sys.cpu.user","timestamp":%[3]d,"value":3,"tags":{"host":"web02","dc":"lga"}},
	{"metric":"sys.cpu.user","timestamp":%[1]d,"value":100,"tags":{"host":"db01","dc":"dal"}},
	{"metric":"sys.cpu.user","timestamp":%[2]d,"value":200,"tags":{"host":"db01","dc":"dal"}},
	{"metric":"sys.cpu.user","timestamp":%[3]d,"value":300,"tags":{"host":"db01","dc":"dal"}},
	{"metric":"sys.cpu.user","timestamp":%[1]d,"value":5,"tags":{"host":"Web03","dc":"dal"}},
	{"metric":"lerp.test","timestamp":%[1]d,"value":0,"tags":{"host":"a"}},
	{"metric":"lerp.test","timestamp":%[3]d,"value":120,"tags":{"host":"a"}},
	{"metric":"lerp.test","timestamp":%[2]d,"value":1000,"tags":{"host":"b"}},
	{"metric":"ds.test","timestamp":%[1]d,"value":1,"tags":{"host":"a"}},
	{"metric":"ds.test","timestamp":%[4]d,"value":3,"tags":{"host":"a"}},
	{"metric":"ds.test","timestamp":%[5]d,"value":5,"tags":{"host":"a"}},
	{"metric":"net.bytes","timestamp":%[1]d,"value":10,"tags":{"host":"a"}},
	{"metric":"net.bytes","timestamp":%[4]d,"value":20,"tags":{"host":"a"}},
	{"metric":"net.bytes","timestamp":%[6]d,"value":5,"tags":{"host":"a"}},
	{"metric":"net.bytes","timestamp":%[7]d,"value":15,"tags":{"host":"a"}},
	{"metric":"ms.test","timestamp":%[8]d100,"value":1,"tags":{"host":"a"}},
	{"metric":"ms.test","timestamp":%[8]d600,"value":3,"tags":{"host":"a"}},
	{"metric":"ms.test","timestamp":%[9]d000,"value":5,"tags":{"host":"a"}}
]`, t0, t0+60, t0+120, t0+10, t0+130, t0+20, t0+30, t0, t0+1)

func startQueryServer(t *testing.T) *server {
	t.Helper()
	s := startServer(t, "", Options{})
	s.put(t, queryData)
	return s
}

// queryBody is a POST body over [t0, t0+179] with one sub query.
func queryBody(sub string) string {
	return fmt.Sprintf(`{"start":%d,"end":%d,"queries":[%s]}`, t0, t0+179, sub)
}

// hostsOf returns the host tag of each series of an answer, in order.
func hostsOf(t *testing.T, r response) []string {
	t.Helper()
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	var out []struct {
		Tags map[string]string `json:"tags"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("answer %s: %v", r.body, err)
	}
	hosts := []string{}
	for _, s := range out {
		hosts = append(hosts, s.Tags["host"])
	}
	return hosts
}

func TestQueryFilters(t *testing.T) {
	s := startQueryServer(t)
	tests := []struct {
		name  string
		sub   string
		hosts []string
	}{
		// literal_or: any of the values.
		{"literal_or", `{"aggregator":"none","metric":"sys.cpu.user","filters":[{"type":"literal_or","tagk":"host","filter":"web01|web02","groupBy":false}]}`, []string{"web01", "web02"}},
		// iliteral_or: the same, ignoring case.
		{"iliteral_or", `{"aggregator":"none","metric":"sys.cpu.user","filters":[{"type":"iliteral_or","tagk":"host","filter":"WEB03","groupBy":false}]}`, []string{"Web03"}},
		// not_literal_or: none of the values.
		{"not_literal_or", `{"aggregator":"none","metric":"sys.cpu.user","filters":[{"type":"not_literal_or","tagk":"host","filter":"web01|db01","groupBy":false}]}`, []string{"Web03", "web02"}},
		// wildcard is case sensitive.
		{"wildcard", `{"aggregator":"none","metric":"sys.cpu.user","filters":[{"type":"wildcard","tagk":"host","filter":"web*","groupBy":false}]}`, []string{"web01", "web02"}},
		// iwildcard is not.
		{"iwildcard", `{"aggregator":"none","metric":"sys.cpu.user","filters":[{"type":"iwildcard","tagk":"host","filter":"web*","groupBy":false}]}`, []string{"Web03", "web01", "web02"}},
		// regexp, as in the documentation's example.
		{"regexp", `{"aggregator":"none","metric":"sys.cpu.user","filters":[{"type":"regexp","tagk":"host","filter":"web0[12]","groupBy":false}]}`, []string{"web01", "web02"}},
		// Old-style tags: "a|b" is literal_or.
		{"tags pipe", `{"aggregator":"none","metric":"sys.cpu.user","tags":{"host":"web01|db01"}}`, []string{"db01", "web01"}},
		// Old-style tags: "*" selects every series with the tag.
		{"tags star", `{"aggregator":"none","metric":"sys.cpu.user","tags":{"host":"*"}}`, []string{"Web03", "db01", "web01", "web02"}},
		// Old-style tags: a value with * is a wildcard.
		{"tags wildcard", `{"aggregator":"none","metric":"sys.cpu.user","tags":{"host":"w*"}}`, []string{"web01", "web02"}},
		// Old-style tags may name a filter type.
		{"tags typed", `{"aggregator":"none","metric":"sys.cpu.user","tags":{"host":"regexp(db.*)"}}`, []string{"db01"}},
		// A tag no series has selects nothing.
		{"missing tag", `{"aggregator":"none","metric":"sys.cpu.user","tags":{"rack":"*"}}`, []string{}},
		// A metric nobody wrote: an empty answer.
		{"unknown metric", `{"aggregator":"sum","metric":"no.such.metric"}`, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := hostsOf(t, s.post(t, "/api/query", queryBody(tc.sub)))
			if !reflect.DeepEqual(got, tc.hosts) {
				t.Errorf("hosts %v, want %v", got, tc.hosts)
			}
		})
	}
}

func TestQueryGroupBy(t *testing.T) {
	s := startQueryServer(t)
	// Web03 has one point: at t0+60 and t0+120 it is outside its own
	// range, so it is not interpolated into dc=dal's sum there.
	want := fmt.Sprintf(`[
		{"metric":"sys.cpu.user","tags":{"dc":"dal"},"aggregateTags":["host"],"dps":{"%[1]d":105,"%[2]d":200,"%[3]d":300}},
		{"metric":"sys.cpu.user","tags":{"dc":"lga"},"aggregateTags":["host"],"dps":{"%[1]d":11,"%[2]d":22,"%[3]d":33}}]`, t0, t0+60, t0+120)
	tests := []struct{ name, sub string }{
		// A filter with groupBy.
		{"filter", `{"aggregator":"sum","metric":"sys.cpu.user","filters":[{"type":"wildcard","tagk":"dc","filter":"*","groupBy":true}]}`},
		// Old-style tags always group.
		{"tags", `{"aggregator":"sum","metric":"sys.cpu.user","tags":{"dc":"*"}}`},
		// groupBy given as a string, which OpenTSDB's parser takes too.
		{"string bool", `{"aggregator":"sum","metric":"sys.cpu.user","filters":[{"type":"literal_or","tagk":"dc","filter":"lga|dal","groupBy":"true"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkJSON(t, "query", s.post(t, "/api/query", queryBody(tc.sub)), 200, want)
		})
	}
	// Without group-by, one series; tags common to all are kept.
	checkJSON(t, "no group-by", s.post(t, "/api/query", queryBody(`{"aggregator":"max","metric":"sys.cpu.user","filters":[{"type":"literal_or","tagk":"dc","filter":"lga","groupBy":false}]}`)), 200,
		fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga"},"aggregateTags":["host"],"dps":{"%d":10,"%d":20,"%d":30}}]`, t0, t0+60, t0+120))
}

func TestQueryAggregators(t *testing.T) {
	s := startQueryServer(t)
	two := `"filters":[{"type":"literal_or","tagk":"host","filter":"web01|web02","groupBy":false}]`
	tests := []struct {
		agg  string
		want string // the dps at t0 over web01 (10) and web02 (1)
	}{
		{"sum", "11"}, {"avg", "5.5"}, {"min", "1"}, {"max", "10"}, {"count", "2"},
		{"dev", "4.5"}, {"zimsum", "11"}, {"mimmin", "1"}, {"mimmax", "10"},
	}
	for _, tc := range tests {
		t.Run(tc.agg, func(t *testing.T) {
			sub := fmt.Sprintf(`{"aggregator":%q,"metric":"sys.cpu.user",%s}`, tc.agg, two)
			body := fmt.Sprintf(`{"start":%d,"end":%d,"queries":[%s]}`, t0, t0+1, sub)
			checkJSON(t, tc.agg, s.post(t, "/api/query", body), 200,
				fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga"},"aggregateTags":["host"],"dps":{"%d":%s}}]`, t0, tc.want))
		})
	}
	// Interpolation: sum fills a's missing t0+60 by lerp (60), zimsum
	// counts it as absent; mimmax at t0 sees only a.
	lerp := []struct{ agg, want string }{
		{"sum", fmt.Sprintf(`{"%d":0,"%d":1060,"%d":120}`, t0, t0+60, t0+120)},
		{"zimsum", fmt.Sprintf(`{"%d":0,"%d":1000,"%d":120}`, t0, t0+60, t0+120)},
		{"mimmax", fmt.Sprintf(`{"%d":0,"%d":1000,"%d":120}`, t0, t0+60, t0+120)},
	}
	for _, tc := range lerp {
		t.Run("lerp "+tc.agg, func(t *testing.T) {
			r := s.post(t, "/api/query", queryBody(fmt.Sprintf(`{"aggregator":%q,"metric":"lerp.test"}`, tc.agg)))
			checkJSON(t, tc.agg, r, 200, `[{"metric":"lerp.test","tags":{},"aggregateTags":["host"],"dps":`+tc.want+`}]`)
		})
	}
	// none: no combining, one answer per series.
	r := s.post(t, "/api/query", queryBody(`{"aggregator":"none","metric":"lerp.test"}`))
	checkJSON(t, "none", r, 200, fmt.Sprintf(`[
		{"metric":"lerp.test","tags":{"host":"a"},"aggregateTags":[],"dps":{"%d":0,"%d":120}},
		{"metric":"lerp.test","tags":{"host":"b"},"aggregateTags":[],"dps":{"%d":1000}}]`, t0, t0+120, t0+60))
}

func TestQueryDownsample(t *testing.T) {
	s := startQueryServer(t)
	// ds.test: 1 at t0, 3 at t0+10, 5 at t0+130: minute t0+60 is empty.
	a, b, c := t0, t0+60, t0+120
	tests := []struct {
		name, ds, dps string
	}{
		{"fill none (default)", "1m-sum", fmt.Sprintf(`{"%d":4,"%d":5}`, a, c)},
		{"fill none", "1m-sum-none", fmt.Sprintf(`{"%d":4,"%d":5}`, a, c)},
		{"fill zero", "1m-sum-zero", fmt.Sprintf(`{"%d":4,"%d":0,"%d":5}`, a, b, c)},
		// NaN is written as the string "NaN", as Jackson writes it.
		{"fill nan", "1m-sum-nan", fmt.Sprintf(`{"%d":4,"%d":"NaN","%d":5}`, a, b, c)},
		{"fill null", "1m-sum-null", fmt.Sprintf(`{"%d":4,"%d":null,"%d":5}`, a, b, c)},
		{"avg", "1m-avg", fmt.Sprintf(`{"%d":2,"%d":5}`, a, c)},
		{"count", "1m-count", fmt.Sprintf(`{"%d":2,"%d":1}`, a, c)},
		{"first", "1m-first", fmt.Sprintf(`{"%d":1,"%d":5}`, a, c)},
		// "all": one value over the whole range, stamped with its start.
		{"all", "0all-sum", fmt.Sprintf(`{"%d":9}`, a)},
		{"all max", "0all-max", fmt.Sprintf(`{"%d":5}`, a)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.post(t, "/api/query", queryBody(fmt.Sprintf(`{"aggregator":"sum","metric":"ds.test","downsample":%q}`, tc.ds)))
			checkJSON(t, tc.ds, r, 200, `[{"metric":"ds.test","tags":{"host":"a"},"aggregateTags":[],"dps":`+tc.dps+`}]`)
		})
	}
}

func TestQueryRate(t *testing.T) {
	s := startQueryServer(t)
	// net.bytes: 10, 20, 5, 15 at 10 s steps: the counter wraps (or
	// resets) between the second and third.
	b, c, d := t0+10, t0+20, t0+30
	tests := []struct {
		name, sub, dps string
	}{
		// A plain rate goes negative at the wrap.
		{"rate", `"rate":true`, fmt.Sprintf(`{"%d":1,"%d":-1.5,"%d":1}`, b, c, d)},
		// A counter wraps at counterMax: (30-20+5)/10.
		{"counter max", `"rate":true,"rateOptions":{"counter":true,"counterMax":30}`, fmt.Sprintf(`{"%d":1,"%d":1.5,"%d":1}`, b, c, d)},
		// dropResets drops the rate across the wrap.
		{"drop resets", `"rate":true,"rateOptions":{"counter":true,"dropResets":true}`, fmt.Sprintf(`{"%d":1,"%d":1}`, b, d)},
		// A rate above resetValue across a wrap is a reset: 0.
		{"reset value", `"rate":true,"rateOptions":{"counter":true,"counterMax":30,"resetValue":1}`, fmt.Sprintf(`{"%d":1,"%d":0,"%d":1}`, b, c, d)},
		// The default counterMax is Java's Long.MAX_VALUE.
		{"counter default max", `"rate":true,"rateOptions":{"counter":true}`, fmt.Sprintf(`{"%d":1,"%d":922337203685477580.8,"%d":1}`, b, c, d)},
		// rateOptions without rate change nothing.
		{"options without rate", `"rateOptions":{"counter":true}`, fmt.Sprintf(`{"%d":10,"%d":20,"%d":5,"%d":15}`, t0, b, c, d)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.post(t, "/api/query", queryBody(fmt.Sprintf(`{"aggregator":"sum","metric":"net.bytes",%s}`, tc.sub)))
			checkJSON(t, tc.name, r, 200, `[{"metric":"net.bytes","tags":{"host":"a"},"aggregateTags":[],"dps":`+tc.dps+`}]`)
		})
	}
}

// The GET form: m= in OpenTSDB's syntax, with the documentation's flags.
func TestQueryGet(t *testing.T) {
	s := startQueryServer(t)
	get := func(m string, extra string) response {
		return s.get(t, fmt.Sprintf("/api/query?start=%d&end=%d&m=%s%s", t0, t0+179, url.QueryEscape(m), extra))
	}
	b, c, d := t0+10, t0+20, t0+30
	tests := []struct {
		name, m, want string
	}{
		{"counter rate", "sum:rate{counter,30,1}:net.bytes{host=a}",
			fmt.Sprintf(`[{"metric":"net.bytes","tags":{"host":"a"},"aggregateTags":[],"dps":{"%d":1,"%d":0,"%d":1}}]`, b, c, d)},
		{"dropcounter", "sum:rate{dropcounter}:net.bytes",
			fmt.Sprintf(`[{"metric":"net.bytes","tags":{"host":"a"},"aggregateTags":[],"dps":{"%d":1,"%d":1}}]`, b, d)},
		{"downsample fill", "sum:1m-sum-zero:ds.test",
			fmt.Sprintf(`[{"metric":"ds.test","tags":{"host":"a"},"aggregateTags":[],"dps":{"%d":4,"%d":0,"%d":5}}]`, t0, t0+60, t0+120)},
		// The first braces group, the second only filter.
		{"group and filter", "sum:sys.cpu.user{dc=*}{host=wildcard(web*)}",
			fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga"},"aggregateTags":["host"],"dps":{"%d":11,"%d":22,"%d":33}}]`, t0, t0+60, t0+120)},
		{"literal pipe", "max:sys.cpu.user{host=web01|db01}",
			fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"dal","host":"db01"},"aggregateTags":[],"dps":{"%[1]d":100,"%[2]d":200,"%[3]d":300}},
			              {"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"%[1]d":10,"%[2]d":20,"%[3]d":30}}]`, t0, t0+60, t0+120)},
		{"explicit tags", "sum:explicit_tags:sys.cpu.user{host=*}", `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkJSON(t, tc.m, get(tc.m, ""), 200, tc.want) })
	}
	// explicit_tags keeps only series with exactly the tags named.
	checkJSON(t, "explicit tags match", get("sum:explicit_tags:sys.cpu.user{dc=lga}{host=*}", ""), 200,
		fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga"},"aggregateTags":["host"],"dps":{"%d":11,"%d":22,"%d":33}}]`, t0, t0+60, t0+120))
	// Relative times against the server's clock: now is 2013/01/01-12:00.
	r := s.get(t, "/api/query?start=12h-ago&end=11h57m-ago&m=sum:sys.cpu.user{host=web01}")
	if r.code != 400 {
		t.Errorf("compound relative time: %d %s, want 400", r.code, r.body)
	}
	r = s.get(t, "/api/query?start=12h-ago&m=sum:sys.cpu.user{host=web01}")
	checkJSON(t, "relative start", r, 200,
		fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"%d":10,"%d":20,"%d":30}}]`, t0, t0+60, t0+120))
	r = s.get(t, "/api/query?start=2013/01/01-00:00:00&end=2013/01/01-00:01:00&m=sum:sys.cpu.user{host=web01}")
	checkJSON(t, "absolute dates", r, 200,
		fmt.Sprintf(`[{"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},"aggregateTags":[],"dps":{"%d":10,"%d":20}}]`, t0, t0+60))
}

func TestQueryMsResolution(t *testing.T) {
	s := startQueryServer(t)
	// ms.test: 1 at t0.100, 3 at t0.600, 5 at t0+1.
	tests := []struct {
		name, extra, agg, dps string
	}{
		{"ms", `,"msResolution":true`, "sum", fmt.Sprintf(`{"%[1]d100":1,"%[1]d600":3,"%[2]d000":5}`, t0, t0+1)},
		// In seconds, the samples of one second combine: summed for sum...
		{"seconds sum", ``, "sum", fmt.Sprintf(`{"%d":4,"%d":5}`, t0, t0+1)},
		// ...averaged for none.
		{"seconds none", ``, "none", fmt.Sprintf(`{"%d":2,"%d":5}`, t0, t0+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"start":%d,"end":%d%s,"queries":[{"aggregator":%q,"metric":"ms.test"}]}`, t0, t0+179, tc.extra, tc.agg)
			aggTags := `[]`
			checkJSON(t, tc.name, s.post(t, "/api/query", body), 200,
				`[{"metric":"ms.test","tags":{"host":"a"},"aggregateTags":`+aggTags+`,"dps":`+tc.dps+`}]`)
		})
	}
	// GET: the ms flag.
	r := s.get(t, fmt.Sprintf("/api/query?start=%d&end=%d&ms&m=sum:ms.test", t0, t0+179))
	checkJSON(t, "GET ms", r, 200, fmt.Sprintf(`[{"metric":"ms.test","tags":{"host":"a"},"aggregateTags":[],"dps":{"%[1]d100":1,"%[1]d600":3,"%[2]d000":5}}]`, t0, t0+1))
}

func TestQueryErrors(t *testing.T) {
	s := startQueryServer(t)
	tests := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"missing start", "POST", "/api/query", `{"queries":[{"aggregator":"sum","metric":"sys.cpu.user"}]}`, 400, "Missing start time"},
		{"bad start", "POST", "/api/query", `{"start":"yesterday","queries":[{"aggregator":"sum","metric":"m"}]}`, 400, "Invalid start time"},
		{"end before start", "POST", "/api/query", fmt.Sprintf(`{"start":%d,"end":%d,"queries":[{"aggregator":"sum","metric":"m"}]}`, t0, t0-1), 400, "End time must be greater than the start time"},
		{"no queries", "POST", "/api/query", fmt.Sprintf(`{"start":%d,"queries":[]}`, t0), 400, "Missing queries"},
		{"no metric", "POST", "/api/query", queryBody(`{"aggregator":"sum"}`), 400, "Missing metric"},
		{"no aggregator", "POST", "/api/query", queryBody(`{"metric":"m"}`), 400, "Missing aggregator"},
		{"unknown aggregator", "POST", "/api/query", queryBody(`{"aggregator":"p99","metric":"m"}`), 400, "No such aggregator"},
		{"unknown filter", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","filters":[{"type":"glob","tagk":"host","filter":"*"}]}`), 400, "Invalid filter type"},
		{"filter without tagk", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","filters":[{"type":"wildcard","filter":"*"}]}`), 400, "Missing filter tag key"},
		{"bad regexp", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"sys.cpu.user","filters":[{"type":"regexp","tagk":"host","filter":"web("}]}`), 400, "Invalid request"},
		{"bad downsample", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","downsample":"1m"}`), 400, "Invalid downsampling specifier"},
		{"bad downsample fn", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","downsample":"1m-median"}`), 400, "Invalid downsampling specifier"},
		{"bad fill", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","downsample":"1m-sum-previous"}`), 400, "Invalid downsampling specifier"},
		{"calendar", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","downsample":"1dc-sum"}`), 400, "Invalid downsampling specifier"},
		{"percentiles", "POST", "/api/query", queryBody(`{"aggregator":"sum","metric":"m","percentiles":[99]}`), 400, "Percentiles are not supported"},
		{"tsuids", "POST", "/api/query", queryBody(`{"aggregator":"sum","tsuids":["000001000001000001"]}`), 400, "TSUID queries are not supported"},
		{"delete flag", "POST", "/api/query", fmt.Sprintf(`{"start":%d,"delete":true,"queries":[{"aggregator":"sum","metric":"m"}]}`, t0), 400, "Deleting data is not enabled"},
		{"DELETE", "DELETE", "/api/query", "", 400, "Deleting data is not enabled"},
		{"invalid JSON", "POST", "/api/query", `{"start":`, 400, "Unable to parse the given JSON"},
		{"GET without m", "GET", fmt.Sprintf("/api/query?start=%d", t0), "", 400, "Missing sub queries"},
		{"GET bad m", "GET", fmt.Sprintf("/api/query?start=%d&m=sys.cpu.user", t0), "", 400, "Invalid m= parameter"},
		{"GET bad rate", "GET", fmt.Sprintf("/api/query?start=%d&m=sum:rate{gauge}:m", t0), "", 400, "Invalid m= parameter"},
		{"GET bad tz", "GET", fmt.Sprintf("/api/query?start=%d&tz=Mars/Olympus&m=sum:m", t0), "", 400, "Invalid timezone"},
		{"wrong method", "PUT", "/api/query", "", 405, "Method not allowed"},
		{"put with GET", "GET", "/api/put", "", 405, "Method not allowed"},
		{"unknown endpoint", "GET", "/api/nothing", "", 404, "Endpoint not found"},
		{"root", "GET", "/", "", 404, "Endpoint not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			checkError(t, tc.name, s.do(t, tc.method, tc.path, body), tc.code, tc.msg)
		})
	}
	r := s.do(t, "PUT", "/api/query", nil)
	if got := r.hdr.Get("Allow"); got != "GET, POST, DELETE" {
		t.Errorf("405 Allow header %q", got)
	}
}

// A failing store is a 500 with the error object.
func TestStoreFailure(t *testing.T) {
	s := startQueryServer(t)
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
	checkError(t, "query", s.post(t, "/api/query", queryBody(`{"aggregator":"sum","metric":"sys.cpu.user"}`)), 500, "Store failure")
	checkError(t, "put", s.post(t, "/api/put", docPutSingle), 500, "Store failure")
	checkError(t, "last", s.get(t, "/api/query/last?timeseries=sys.cpu.user"), 500, "Store failure")
	checkError(t, "suggest", s.get(t, "/api/suggest?type=metrics"), 500, "Store failure")
}
