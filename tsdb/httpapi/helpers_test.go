package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// now is the tests' clock: relative times and a missing end are taken
// from it, so nothing depends on the real time.
var now = time.Date(2013, 1, 1, 12, 0, 0, 0, time.UTC)

// server is the API served over real HTTP on loopback, over a real
// embedded store in a temporary directory.
type server struct {
	url   string
	store *embedded.Store
}

// startServer opens a store in dir ("" for a new temporary one) and
// serves the API over it on 127.0.0.1 until the test ends.
func startServer(t testing.TB, dir string, opts Options) *server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := embedded.Open(dir, embedded.Options{OutOfOrderWindow: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return now }
	}
	ts := httptest.NewServer(NewHandler(st, opts)) // listens on 127.0.0.1
	t.Cleanup(func() {
		ts.Close()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &server{url: ts.URL, store: st}
}

// response is an answer: its status and body.
type response struct {
	code int
	body []byte
	hdr  http.Header
}

// do sends a request and reads the whole answer.
func (s *server) do(t testing.TB, method, path string, body []byte, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{code: resp.StatusCode, body: b, hdr: resp.Header}
}

func (s *server) post(t testing.TB, path, body string) response {
	t.Helper()
	return s.do(t, http.MethodPost, path, []byte(body))
}

func (s *server) get(t testing.TB, path string) response {
	t.Helper()
	return s.do(t, http.MethodGet, path, nil)
}

// put stores points through /api/put, failing the test unless all are
// stored.
func (s *server) put(t testing.TB, body string) {
	t.Helper()
	if r := s.post(t, "/api/put", body); r.code != http.StatusNoContent {
		t.Fatalf("put: %d %s", r.code, r.body)
	}
}

// checkJSON fails unless r has status code and a body equal, as JSON, to
// want.
func checkJSON(t testing.TB, what string, r response, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: status %d, want %d; body %s", what, r.code, code, r.body)
		return
	}
	var got, exp any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Errorf("%s: body is not JSON: %v: %s", what, err, r.body)
		return
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("%s: bad expectation %s: %v", what, want, err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("%s:\n got %s\nwant %s", what, r.body, want)
	}
}

// checkError fails unless r is OpenTSDB's error object with code and
// message (details are free text and only checked to be present).
func checkError(t testing.TB, what string, r response, code int, message string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: status %d, want %d; body %s", what, r.code, code, r.body)
		return
	}
	var e struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Errorf("%s: body is not JSON: %v: %s", what, err, r.body)
		return
	}
	if len(e.Error) != 4 || e.Error["code"] != float64(code) || e.Error["message"] != message ||
		e.Error["trace"] != "" || e.Error["details"] == nil {
		t.Errorf("%s: error body %s, want code %d, message %q, details and an empty trace", what, r.body, code, message)
	}
	if ct := r.hdr.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
}
