package httpapi

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// fuzzNow is the fuzz targets' clock, an hour after the points fuzzHandler
// stores, so relative times find them.
var fuzzNow = time.Date(2013, 1, 1, 12, 0, 0, 0, time.UTC)

// fuzzHandler is the API over a real embedded store in a temporary
// directory, holding a few series for queries to find. Requests come from
// loopback, so writes need no token.
func fuzzHandler(f *testing.F) http.Handler {
	f.Helper()
	st, err := embedded.Open(f.TempDir(), embedded.Options{OutOfOrderWindow: 365 * 24 * time.Hour})
	if err != nil {
		f.Fatalf("open store: %v", err)
	}
	f.Cleanup(func() {
		if err := st.Close(); err != nil {
			f.Errorf("close store: %v", err)
		}
	})
	// A small body limit, so that fuzzed bodies reach it.
	h := NewHandler(st, Options{Now: func() time.Time { return fuzzNow }, MaxBodyBytes: 16 << 10})
	seed := `[{"metric":"sys.cpu.user","timestamp":1357038000,"value":10,"tags":{"host":"web01","dc":"lga"}},
		{"metric":"sys.cpu.user","timestamp":1357038060,"value":20,"tags":{"host":"web02","dc":"lga"}},
		{"metric":"sys.cpu.user","timestamp":1357038120500,"value":-3.5,"tags":{"host":"web01","dc":"ams"}},
		{"metric":"net.bytes","timestamp":"1357038000","value":"100","tags":{"host":"web01"}},
		{"metric":"net.bytes","timestamp":1357038060,"value":50,"tags":{"host":"web01"}}]`
	if code, body := fuzzServe(h, http.MethodPost, "/api/put", "", []byte(seed), false); code != http.StatusNoContent {
		f.Fatalf("store the seed points: %d %s", code, body)
	}
	return h
}

// fuzzServe sends one request from loopback straight to h. The query
// string goes in raw, whatever it holds.
func fuzzServe(h http.Handler, method, path, query string, body []byte, gz bool) (int, []byte) {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	r.URL.RawQuery = query
	r.RemoteAddr = "127.0.0.1:40000"
	if gz {
		r.Header.Set("Content-Encoding", "gzip")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}

// checkAnswer fails unless an answer is a client's error (4xx) as
// OpenTSDB's error object, or a success: a server error (5xx) means the
// handler blamed itself or the store for a request it should have
// refused.
func checkAnswer(t *testing.T, what string, code int, body []byte) {
	t.Helper()
	if code >= 500 || code < 200 {
		t.Fatalf("%s: status %d: %s", what, code, body)
	}
	if code == http.StatusNoContent {
		if len(body) != 0 {
			t.Fatalf("%s: 204 with a body: %s", what, body)
		}
		return
	}
	if !json.Valid(body) {
		t.Fatalf("%s: status %d, body is not JSON: %q", what, code, body)
	}
	if code < 400 {
		return
	}
	var e struct {
		Error *struct {
			Code    int     `json:"code"`
			Message string  `json:"message"`
			Details *string `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil {
		if e.Error.Code != code || e.Error.Message == "" || e.Error.Details == nil {
			t.Fatalf("%s: status %d with the error object %s", what, code, body)
		}
	}
}

// FuzzPut sends fuzzed bodies (raw, or labelled gzip as they are) and
// query strings to /api/put. Every answer is a 4xx or a success, never a
// 5xx; and a summary counts every point of the body, stored or failed.
func FuzzPut(f *testing.F) {
	h := fuzzHandler(f)
	for _, s := range []struct {
		body, query string
	}{
		{`{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01","dc":"lga"}}`, ""},
		{`[{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01","dc":"lga"}},
		   {"metric":"sys.cpu.nice","timestamp":1346846400,"value":9,"tags":{"host":"web02","dc":"lga"}}]`, "summary"},
		{`[{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01"}},
		   {"metric":"sys.cpu.nice","timestamp":1365465600,"value":"NaN","tags":{"host":"web01"}}]`, "details"},
		{`{"metric":"a.b","timestamp":"1365465600000","value":"1e3","tags":{"ключ":"значение"}}`, "summary&details&sync"},
		{`{"metric":"bad name","timestamp":0,"value":null,"tags":{}}`, "details"},
		{`[{"metric":"m","timestamp":1,"value":1,"tags":{"a":"b"}},1,"x"]`, ""},
		{`[]`, "details"},
		{`{"metric":"m","timestamp":99999999999999,"value":1e400,"tags":{"a":"b","c":"d","e":"f","g":"h","i":"j","k":"l","m":"n","o":"p","q":"r"}}`, "details"},
		{"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", ""},
	} {
		f.Add([]byte(s.body), s.query, strings.HasPrefix(s.body, "\x1f"))
	}
	f.Fuzz(func(t *testing.T, body []byte, query string, gz bool) {
		code, answer := fuzzServe(h, http.MethodPost, "/api/put", query, body, gz)
		checkAnswer(t, "put", code, answer)
		var s struct {
			Failed  *int `json:"failed"`
			Success *int `json:"success"`
		}
		if gz || json.Unmarshal(answer, &s) != nil || s.Failed == nil || s.Success == nil {
			return
		}
		// A summary: it counts the points of the body, which is then
		// JSON, one object or an array.
		var points []json.RawMessage
		if json.Unmarshal(body, &points) != nil {
			points = []json.RawMessage{body}
		}
		if *s.Failed+*s.Success != len(points) || *s.Failed < 0 || *s.Success < 0 {
			t.Fatalf("summary %s of a body of %d points: %s", answer, len(points), body)
		}
	})
}

// FuzzQuery sends a fuzzed JSON body to POST /api/query and a fuzzed
// query string to GET /api/query, over a store holding a few series.
// Every answer is a 4xx or a success, never a 5xx; a success is a list of
// series in OpenTSDB's form; asking again answers the same; and the GET,
// its m= parameters decoded and posted as the JSON body they stand for,
// answers the same again: the two decoders agree.
func FuzzQuery(f *testing.F) {
	h := fuzzHandler(f)
	for _, s := range []struct {
		body, query string
	}{
		{`{"start":1357030000,"end":1357040000,"queries":[{"aggregator":"sum","metric":"sys.cpu.user","tags":{"host":"*"}}]}`,
			"start=1357030000&end=1357040000&m=none:sys.cpu.user"},
		{`{"start":"1h-ago","queries":[{"aggregator":"max","metric":"sys.cpu.user","filters":[{"type":"literal_or","tagk":"dc","filter":"lga|ams","groupBy":true}]}],"showTSUIDs":"true","msResolution":true}`,
			"start=12h-ago&end=11h57m-ago&m=sum:sys.cpu.user{host=web01}"},
		{`{"start":"2013/01/01-00:00:00","end":"2013/01/01 12:00","timezone":"Europe/Paris","queries":[{"aggregator":"avg","metric":"net.bytes","rate":true,"rateOptions":{"counter":true,"counterMax":1000,"resetValue":1,"dropResets":true},"downsample":"1m-avg-zero"}]}`,
			"start=2013/01/01-00:00:00&end=2013/01/01-00:01:00&tz=UTC&m=sum:sys.cpu.user{host=web01}"},
		{`{"start":1357038000000,"queries":[{"aggregator":"zimsum","metric":"sys.cpu.user","downsample":"0all-sum","explicitTags":true,"filters":[{"type":"regexp","tagk":"host","filter":"web0[12]"},{"type":"iwildcard","tagk":"dc","filter":"L*"}]}]}`,
			"start=1357038000&ms&show_tsuids&global_annotations&m=sum:rate{counter,100,0}:1m-avg-null:explicit_tags:sys.cpu.user{host=*}{dc=literal_or(lga|ams)}"},
		{`{"start":1,"queries":[{"aggregator":"sum","metric":"m","filters":[{"type":"regexp","tagk":"h","filter":"("}]}]}`,
			"start=1&m=sum:m{h=regexp(()}"},
		{`{"start":1,"queries":[{"aggregator":"dev","metric":"sys.cpu.user","downsample":"1ms-count-nan"}]}`,
			"start=1&m=dev:1ms-count-nan:sys.cpu.user"},
		{`{"start":1,"delete":true,"queries":[{"aggregator":"sum","tsuids":["000001"]}],"percentiles":[0.5]}`,
			"start=1&tsuid=sum:000001"},
		{`{"start":"now","end":"1h-ago","queries":[]}`, "start=99999999999999999999&m=sum:m"},
	} {
		f.Add([]byte(s.body), s.query)
	}
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		for _, req := range []struct {
			method, query string
			body          []byte
		}{
			{http.MethodPost, "", body},
			{http.MethodGet, query, nil},
		} {
			what := req.method + " /api/query"
			code, answer := fuzzServe(h, req.method, "/api/query", req.query, req.body, false)
			checkAnswer(t, what, code, answer)
			if code == http.StatusOK {
				var series []struct {
					Metric        *string           `json:"metric"`
					Tags          map[string]string `json:"tags"`
					AggregateTags []string          `json:"aggregateTags"`
					DPS           map[string]any    `json:"dps"`
				}
				if err := json.Unmarshal(answer, &series); err != nil {
					t.Fatalf("%s: 200 that is not a list of series: %v: %s", what, err, answer)
				}
				for _, s := range series {
					if s.Metric == nil || s.Tags == nil || s.AggregateTags == nil || s.DPS == nil {
						t.Fatalf("%s: a series without metric, tags, aggregateTags or dps: %s", what, answer)
					}
				}
			}
			code2, answer2 := fuzzServe(h, req.method, "/api/query", req.query, req.body, false)
			if code2 != code || !bytes.Equal(answer2, answer) {
				t.Fatalf("%s: asked twice, answered %d %s, then %d %s", what, code, answer, code2, answer2)
			}
			if req.method != http.MethodGet {
				continue
			}
			posted, ok := postedForm(req.query)
			if !ok {
				continue
			}
			pcode, panswer := fuzzServe(h, http.MethodPost, "/api/query", "", posted, false)
			if pcode != code || code == http.StatusOK && !bytes.Equal(panswer, answer) {
				t.Fatalf("GET ?%s answered %d %s,\nits POST %s answered %d %s", req.query, code, answer, posted, pcode, panswer)
			}
		}
	})
}

// postedForm returns the JSON body that stands for the GET query string
// query, its m= parameters decoded by parseM; false when there is none
// (an m= that does not decode, a tsuid=, text that is not UTF-8, a
// number JSON cannot hold).
func postedForm(query string) ([]byte, bool) {
	q, _ := url.ParseQuery(query) // as Request.URL.Query: what parses is kept
	if len(q["tsuid"]) > 0 || !utf8.ValidString(strings.Join(slices.Concat(slices.Collect(maps.Values(q))...), "")) {
		return nil, false
	}
	flag := func(names ...string) bool {
		for _, n := range names {
			if vs, ok := q[n]; ok && strings.ToLower(vs[0]) != "false" && vs[0] != "0" {
				return true
			}
		}
		return false
	}
	body := map[string]any{
		"start": q.Get("start"), "end": q.Get("end"), "timezone": q.Get("tz"),
		"msResolution": flag("ms", "msResolution"), "showTSUIDs": flag("show_tsuids"),
		"noAnnotations": flag("no_annotations"), "globalAnnotations": flag("global_annotations"),
	}
	subs := []subQuery{}
	for _, m := range q["m"] {
		sq, err := parseM(m)
		if err != nil {
			return nil, false
		}
		subs = append(subs, sq)
	}
	body["queries"] = subs
	b, err := json.Marshal(body)
	return b, err == nil
}
