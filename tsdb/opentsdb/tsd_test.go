package opentsdb

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// annotationJSON is the fake's own copy of OpenTSDB's annotation object,
// written from the documentation, so the client's encoding is checked
// against it rather than against itself.
type annotationJSON struct {
	TSUID       string            `json:"tsuid,omitempty"`
	Description string            `json:"description"`
	Notes       string            `json:"notes"`
	Custom      map[string]string `json:"custom"`
	StartTime   int64             `json:"startTime"`
	EndTime     int64             `json:"endTime"`
}

// fakeTSD is a conformance server for the OpenTSDB 2.4 HTTP API endpoints
// the client calls, behaving as opentsdb.net/docs/build/html/api_http
// documents them: /api/put stores the good points of a request, answers 204
// without summary or details, 200 with them when all passed, and 400 (with
// the details or summary, else the generic error) when some failed;
// errors use the {"error":{...}} body. Query answers are canned (set with
// queryAnswer) except the annotation queries, which read the stored notes.
type fakeTSD struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	stored      []putDP                      // accepted points, in arrival order
	puts        []recordedPut                // every /api/put request
	bodies      map[string][]json.RawMessage // JSON bodies by path
	requests    []string                     // every request: "METHOD /path?query"
	notes       map[noteKey]annotationJSON
	failPuts    int  // answer this many puts with 500 before behaving
	failStatus  int  // answer every put with this status (0: behave)
	failAfter   int  // with failStatus: behave for this many puts first
	ignoreFlags bool // answer a successful put 204 even when asked for details
	hold        chan struct{}
	putStatus   int // with putBody: answer every put with this, after reading it
	putBody     []byte
	override    http.HandlerFunc // when set, answers every request instead
	queryAnswer string           // body of /api/query and /api/query/last answers
}

type recordedPut struct {
	query    string
	encoding string
	points   int
}

type putDP struct {
	Metric    string            `json:"metric"`
	Timestamp json.Number       `json:"timestamp"`
	Value     any               `json:"value"`
	Tags      map[string]string `json:"tags"`
}

type noteKey struct {
	tsuid string
	start int64
}

// newFakeTSD starts a fake TSD on 127.0.0.1, stopped at the test's end.
func newFakeTSD(t *testing.T) *fakeTSD {
	t.Helper()
	f := &fakeTSD{t: t, bodies: map[string][]json.RawMessage{}, notes: map[noteKey]annotationJSON{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Listener = l
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

// client returns a Client of f with fast retries, logging to the test.
func (f *fakeTSD) client(t *testing.T, mod func(*Options)) *Client {
	t.Helper()
	opts := Options{URL: f.srv.URL, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *fakeTSD) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	hold, override := f.hold, f.override
	f.mu.Unlock()
	if override != nil {
		override(w, r)
		return
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	switch r.URL.Path {
	case "/api/put":
		f.put(w, r)
	case "/api/query", "/api/query/last":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "Method not allowed", "")
			return
		}
		body := f.readJSON(w, r)
		if body == nil {
			return
		}
		var q queryRequest
		if r.URL.Path == "/api/query" && json.Unmarshal(body, &q) == nil && q.Queries != nil &&
			(q.GlobalAnnotations || len(q.Queries[0].TSUIDs) > 0) {
			f.annotationQuery(w, q)
			return
		}
		f.mu.Lock()
		answer := f.queryAnswer
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	case "/api/annotation":
		f.annotation(w, r)
	case "/api/suggest":
		f.suggest(w, r)
	case "/api/version":
		w.Header().Set("Content-Type", "application/json")
		w.Write(readTestdata(f.t, "version.json"))
	default:
		writeError(w, http.StatusNotFound, "Endpoint not found", r.URL.Path)
	}
}

// readJSON reads a request body, gunzipping it as Content-Encoding says,
// and records it by path; nil (with an error answered) when unreadable.
func (f *fakeTSD) readJSON(w http.ResponseWriter, r *http.Request) []byte {
	var rd io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Unable to decompress the request", err.Error())
			return nil
		}
		rd = zr
	}
	body, err := io.ReadAll(rd)
	if err != nil || !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "Unable to parse the given JSON", fmt.Sprint(err))
		return nil
	}
	f.mu.Lock()
	f.bodies[r.URL.Path] = append(f.bodies[r.URL.Path], body)
	f.mu.Unlock()
	return body
}

func writeError(w http.ResponseWriter, code int, msg, details string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	e := map[string]any{"code": code, "message": msg}
	if details != "" {
		e["details"] = details
	}
	json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func (f *fakeTSD) put(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", "The HTTP method ["+r.Method+"] is not permitted for this endpoint")
		return
	}
	f.mu.Lock()
	n := len(f.puts)
	f.puts = append(f.puts, recordedPut{query: r.URL.RawQuery, encoding: r.Header.Get("Content-Encoding")})
	fail := 0
	switch {
	case f.failPuts > 0:
		f.failPuts--
		fail = http.StatusInternalServerError
	case f.failStatus != 0 && n >= f.failAfter:
		fail = f.failStatus
	}
	f.mu.Unlock()
	if fail != 0 {
		writeError(w, fail, "Storage failure", "HBase region server unreachable")
		return
	}
	body := f.readJSON(w, r)
	if body == nil {
		return
	}
	f.mu.Lock()
	status, canned := f.putStatus, f.putBody
	f.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(canned)
		return
	}
	var dps []putDP
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		var one putDP
		if err := json.Unmarshal(body, &one); err != nil {
			writeError(w, http.StatusBadRequest, "Unable to parse the given JSON", err.Error())
			return
		}
		dps = []putDP{one}
	} else if err := json.Unmarshal(body, &dps); err != nil {
		writeError(w, http.StatusBadRequest, "Unable to parse the given JSON", err.Error())
		return
	}
	type failure struct {
		Datapoint putDP  `json:"datapoint"`
		Error     string `json:"error"`
	}
	failures := []failure{}
	var good []putDP
	for _, dp := range dps {
		if reason := validateDP(dp); reason != "" {
			failures = append(failures, failure{dp, reason})
			continue
		}
		good = append(good, dp)
	}
	q := r.URL.Query()
	_, details := q["details"]
	_, summary := q["summary"]
	f.mu.Lock()
	f.stored = append(f.stored, good...)
	f.puts[n].points = len(dps)
	ignore := f.ignoreFlags
	f.mu.Unlock()
	code := http.StatusOK
	if len(failures) > 0 {
		code = http.StatusBadRequest
	}
	switch {
	case len(failures) == 0 && (ignore || !details && !summary):
		w.WriteHeader(http.StatusNoContent)
	case details:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"success": len(good), "failed": len(failures), "errors": failures})
	case summary:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"success": len(good), "failed": len(failures)})
	default:
		writeError(w, http.StatusBadRequest, "One or more data points had errors",
			`Please see the TSD logs or append "details" to the put request`)
	}
}

// validateDP applies OpenTSDB's checks of an incoming point; the reason
// it is refused, or "".
func validateDP(dp putDP) string {
	if dp.Metric == "" {
		return "Metric name was empty"
	}
	ts, err := strconv.ParseInt(dp.Timestamp.String(), 10, 64)
	if err != nil || ts <= 0 {
		return "Invalid timestamp"
	}
	switch v := dp.Value.(type) {
	case float64:
	case string:
		if _, err := strconv.ParseFloat(v, 64); err != nil || v == "NaN" {
			return "Unable to parse value to a number"
		}
	default:
		return "Unable to parse value to a number"
	}
	if len(dp.Tags) == 0 {
		return "Missing tags"
	}
	for k, v := range dp.Tags {
		for _, s := range []string{k, v} {
			for _, c := range s {
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./", c)) {
					return fmt.Sprintf("Invalid tag value (%q): illegal character: %q", s, c)
				}
			}
		}
	}
	return ""
}

func (f *fakeTSD) annotation(w http.ResponseWriter, r *http.Request) {
	var note annotationJSON
	if r.ContentLength != 0 && r.Method != http.MethodGet {
		body := f.readJSON(w, r)
		if body == nil {
			return
		}
		if err := json.Unmarshal(body, &note); err != nil {
			writeError(w, http.StatusBadRequest, "Unable to parse the given JSON", err.Error())
			return
		}
	} else {
		q := r.URL.Query()
		note.TSUID = q.Get("tsuid")
		note.StartTime, _ = strconv.ParseInt(q.Get("start_time"), 10, 64)
	}
	if note.StartTime < 1 {
		writeError(w, http.StatusBadRequest, "Missing start time", "")
		return
	}
	key := noteKey{note.TSUID, note.StartTime}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		stored, ok := f.notes[key]
		if !ok {
			writeError(w, http.StatusNotFound, "Unable to locate annotation in storage", "")
			return
		}
		json.NewEncoder(w).Encode(stored)
	case http.MethodPost, http.MethodPut:
		f.notes[key] = note
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(note)
	case http.MethodDelete:
		// OpenTSDB 2.4 answers 204 whether or not the note existed.
		delete(f.notes, key)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", "")
	}
}

// annotationQuery answers a TSUID or globalAnnotations query with one
// series carrying the stored notes that start within the range.
func (f *fakeTSD) annotationQuery(w http.ResponseWriter, q queryRequest) {
	f.mu.Lock()
	var local, global []annotationJSON
	for k, n := range f.notes {
		if k.start*1000 < q.Start || k.start*1000 > q.End {
			continue
		}
		if k.tsuid == "" {
			global = append(global, n)
		} else if len(q.Queries[0].TSUIDs) > 0 && q.Queries[0].TSUIDs[0] == k.tsuid {
			local = append(local, n)
		}
	}
	f.mu.Unlock()
	sort.Slice(local, func(i, j int) bool { return local[i].StartTime < local[j].StartTime })
	res := map[string]any{"metric": "sys.cpu.nice", "tags": map[string]string{"host": "web01"}, "aggregateTags": []string{},
		"dps": map[string]int{strconv.FormatInt(q.Start, 10): 1}, "annotations": local}
	if q.GlobalAnnotations {
		res["globalAnnotations"] = global
	}
	json.NewEncoder(w).Encode([]any{res})
}

func (f *fakeTSD) suggest(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	typ := q.Get("type")
	if typ == "" {
		w.WriteHeader(http.StatusBadRequest)
		w.Write(readTestdata(f.t, "error_missing_type.json"))
		return
	}
	if typ != "metrics" && typ != "tagk" && typ != "tagv" {
		writeError(w, http.StatusBadRequest, "Invalid 'type' parameter:"+typ, "")
		return
	}
	max := 25
	if s := q.Get("max"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "Invalid 'max' parameter", s)
			return
		}
		max = n
	}
	var all []string
	json.Unmarshal(readTestdata(f.t, "suggest_metrics.json"), &all)
	out := []string{}
	for _, n := range all {
		if strings.HasPrefix(n, q.Get("q")) && len(out) < max {
			out = append(out, n)
		}
	}
	json.NewEncoder(w).Encode(out)
}

// body returns the i-th JSON body posted to path.
func (f *fakeTSD) body(t *testing.T, path string, i int) json.RawMessage {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.bodies[path]) {
		t.Fatalf("%d bodies posted to %s; want at least %d", len(f.bodies[path]), path, i+1)
	}
	return f.bodies[path][i]
}

func (f *fakeTSD) storedPoints() []putDP {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]putDP(nil), f.stored...)
}

func (f *fakeTSD) putRequests() []recordedPut {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedPut(nil), f.puts...)
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertJSON fails unless got and want are the same JSON value.
func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("sent body %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("sent\n%s\nwant\n%s", gb, wb)
	}
}

// logBuffer is a slog destination safe for the test and the client.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(l *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (f *fakeTSD) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}
