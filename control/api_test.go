package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/silence"
)

const token = "s3cret-token"

// now is the clock of the store and the API in these tests.
var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeAcks stands for the evaluator at the Acknowledger interface: it knows
// which instances exist and which are firing, and records acks.
type fakeAcks struct {
	mu     sync.Mutex
	firing map[[3]string]bool // rule, host, check → firing
	acked  []string
	list   []Ack // what Acks returns: the acks recorded, newest first
	err    error // what Acks fails with
}

func (f *fakeAcks) Acknowledge(rule, host, check, by, comment string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	firing, ok := f.firing[[3]string{rule, host, check}]
	switch {
	case !ok:
		return fmt.Errorf("acknowledge %s on %s (%s): %w", rule, host, check, ErrUnknownInstance)
	case !firing:
		return fmt.Errorf("acknowledge %s on %s (%s): %w", rule, host, check, ErrNotFiring)
	}
	f.acked = append(f.acked, strings.Join([]string{rule, host, check, by, comment}, "/"))
	f.list = append([]Ack{{Rule: rule, Host: host, Check: check, State: "firing", By: by, Comment: comment, At: now}}, f.list...)
	return nil
}

func (f *fakeAcks) Acks(context.Context) ([]Ack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.list), f.err
}

// server serves the API, mounted as the daemon mounts it beside Handler,
// on loopback, with a real silence store in a temporary directory.
func server(t *testing.T, tok string) (*httptest.Server, *silence.Store, *fakeAcks) {
	t.Helper()
	clock := func() time.Time { return now }
	store, err := silence.Open(filepath.Join(t.TempDir(), "silences.json"), silence.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	acks := &fakeAcks{firing: map[[3]string]bool{
		{"www-http", "www1", "http"}: true,
		{"www-http", "www2", "http"}: false,
	}}
	log := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	mux.Handle("/api/", APIHandler(APIOptions{Silences: store, Acks: acks, Token: tok, Now: clock, Logger: log}))
	mux.Handle("/", Handler(Options{Gatherer: prometheus.NewRegistry(), Status: func() any { return "up" }, Token: tok, Logger: log}))
	srv := httptest.NewServer(mux) // 127.0.0.1
	t.Cleanup(srv.Close)
	return srv, store, acks
}

// call makes a request and returns the status and the decoded JSON body.
func call(t *testing.T, srv *httptest.Server, method, path, auth, body string) (int, any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, body %s", method, path, ct, b)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: %d, body not JSON: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

func errorOf(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["error"].(string)
	return s
}

const silenceBody = `{"matchers": [{"name": "host", "value": "www.*", "isRegex": true}, {"name": "check", "value": "http"}],
	"endsAt": "2030-06-01T14:00:00Z", "createdBy": "alice", "comment": "deploy"}`

func TestAuth(t *testing.T) {
	open, _, _ := server(t, "")
	locked, _, _ := server(t, token)
	tests := []struct {
		name      string
		srv       *httptest.Server
		method    string
		path      string
		auth      string
		body      string
		want      int
		wantError string
	}{
		// Without a token configured, nothing can be changed, whatever
		// the caller sends, and the answer says how to enable it.
		{"no token configured, silence", open, "POST", "/api/v1/silences", "Bearer " + token, silenceBody, 403, "set control.token_file"},
		{"no token configured, expire", open, "DELETE", "/api/v1/silence/x", "", "", 403, "set control.token_file"},
		{"no token configured, ack", open, "POST", "/api/v1/acks", "Bearer ", `{}`, 403, "set control.token_file"},
		// Reading needs no token.
		{"no token configured, list", open, "GET", "/api/v1/silences", "", "", 200, ""},
		// With a token, a call without it or with another is refused.
		{"missing token", locked, "POST", "/api/v1/silences", "", silenceBody, 401, "missing or wrong bearer token"},
		{"wrong token", locked, "POST", "/api/v1/silences", "Bearer not-it", silenceBody, 401, "missing or wrong bearer token"},
		{"token prefix", locked, "POST", "/api/v1/silences", "Bearer " + token[:5], silenceBody, 401, "missing or wrong bearer token"},
		{"wrong scheme", locked, "POST", "/api/v1/silences", "Basic " + token, silenceBody, 401, "missing or wrong bearer token"},
		{"wrong token on expire", locked, "DELETE", "/api/v1/silence/x", "Bearer nope", "", 401, "missing or wrong bearer token"},
		{"wrong token on ack", locked, "POST", "/api/v1/acks", "Bearer nope", `{}`, 401, "missing or wrong bearer token"},
		// The right token is let in.
		{"right token", locked, "POST", "/api/v1/silences", "Bearer " + token, silenceBody, 200, ""},
		{"right token, scheme in lower case", locked, "POST", "/api/v1/silences", "bearer " + token, silenceBody, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, tt.srv, tt.method, tt.path, tt.auth, tt.body)
			if code != tt.want || !strings.Contains(errorOf(body), tt.wantError) {
				t.Errorf("%s %s = %d %v, want %d with error containing %q", tt.method, tt.path, code, body, tt.want, tt.wantError)
			}
		})
	}
	// Refused calls changed nothing.
	for _, srv := range []*httptest.Server{open, locked} {
		_, list := call(t, srv, "GET", "/api/v1/silences", "", "")
		if n := len(list.([]any)); srv == open && n != 0 || srv == locked && n != 2 {
			t.Errorf("%d silences stored; want 0 on the open server, 2 (the authorised ones) on the locked one", n)
		}
	}
}

func TestSilenceRoundTrip(t *testing.T) {
	srv, store, _ := server(t, token)
	auth := "Bearer " + token

	code, body := call(t, srv, "POST", "/api/v1/silences", auth, silenceBody)
	if code != 200 {
		t.Fatalf("create = %d %v", code, body)
	}
	id, _ := body.(map[string]any)["silenceID"].(string)
	if id == "" {
		t.Fatalf("create returned no silenceID: %v", body)
	}
	// What the engine asks: the new silence mutes www7's http check and
	// nothing else.
	if got := store.MatchAlert("www-http", map[string]string{"host": "www7", "check": "http"}, now); got != id {
		t.Errorf("store.Match = %q, want %s", got, id)
	}
	if got := store.MatchAlert("www-http", map[string]string{"host": "www7", "check": "ping"}, now); got != "" {
		t.Errorf("store.Match for check=ping = %q, want none", got)
	}

	code, body = call(t, srv, "GET", "/api/v1/silences", "", "")
	list, _ := body.([]any)
	if code != 200 || len(list) != 1 {
		t.Fatalf("list = %d %v, want one silence", code, body)
	}
	got := list[0].(map[string]any)
	want := map[string]any{
		"id":        id,
		"status":    map[string]any{"state": "active"},
		"startsAt":  "2030-06-01T12:00:00Z",
		"endsAt":    "2030-06-01T14:00:00Z",
		"updatedAt": "2030-06-01T12:00:00Z",
		"createdBy": "alice",
		"comment":   "deploy",
		"matchers": []any{
			map[string]any{"name": "host", "value": "www.*", "isRegex": true, "isEqual": true},
			map[string]any{"name": "check", "value": "http", "isRegex": false, "isEqual": true},
		},
	}
	if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
		t.Errorf("listed silence\n%s\nwant\n%s", g, w)
	}

	// Updating with the id keeps it: the end moves.
	update := strings.Replace(silenceBody, "{", `{"id": "`+id+`", "startsAt": "2030-06-01T12:00:00Z", `, 1)
	update = strings.Replace(update, "14:00:00Z", "16:00:00Z", 1)
	if code, body := call(t, srv, "POST", "/api/v1/silences", auth, update); code != 200 || body.(map[string]any)["silenceID"] != id {
		t.Errorf("update = %d %v, want 200 with the same id %s", code, body, id)
	}
	if l := store.List(now); len(l) != 1 || !l[0].EndsAt.Equal(time.Date(2030, 6, 1, 16, 0, 0, 0, time.UTC)) {
		t.Errorf("after update: %+v", l)
	}

	if code, body := call(t, srv, "DELETE", "/api/v1/silence/"+id, auth, ""); code != 200 {
		t.Fatalf("expire = %d %v", code, body)
	}
	_, body = call(t, srv, "GET", "/api/v1/silences", "", "")
	if st := body.([]any)[0].(map[string]any)["status"]; fmt.Sprint(st) != "map[state:expired]" {
		t.Errorf("after expire, status = %v, want expired", st)
	}
	if got := store.MatchAlert("www-http", map[string]string{"host": "www7", "check": "http"}, now); got != "" {
		t.Errorf("expired silence still matches: %q", got)
	}

	// Unknown ids are 404, for expiring and for updating.
	if code, body := call(t, srv, "DELETE", "/api/v1/silence/no-such", auth, ""); code != 404 || !strings.Contains(errorOf(body), "no-such: silence not found") {
		t.Errorf("expire unknown = %d %v, want 404 naming it", code, body)
	}
	unknown := strings.Replace(silenceBody, "{", `{"id": "no-such", `, 1)
	if code, body := call(t, srv, "POST", "/api/v1/silences", auth, unknown); code != 404 {
		t.Errorf("update unknown = %d %v, want 404", code, body)
	}
}

func TestSilenceBadInput(t *testing.T) {
	srv, store, _ := server(t, token)
	tests := []struct {
		file string
		want string // in the error
	}{
		// Truncated JSON.
		{"not-json.bad.json", "request body: unexpected EOF"},
		// A misspelt field is refused, not ignored.
		{"misspelt-field.bad.json", `unknown field "endAt"`},
		// The store's validation comes back, naming the matcher.
		{"bad-regex.bad.json", `matcher 2 (host=~"www["): bad regular expression`},
		{"match-all.bad.json", `matchers {host=~".*"} accept an empty value`},
		{"no-matchers.bad.json", "at least one matcher is required"},
		{"ends-before-start.bad.json", "is not after startsAt"},
		// A time that is not RFC 3339.
		{"bad-time.bad.json", `parsing time "tomorrow"`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			code, body := call(t, srv, "POST", "/api/v1/silences", "Bearer "+token, string(b))
			if code != 400 || !strings.Contains(errorOf(body), tt.want) {
				t.Errorf("POST %s = %d %v, want 400 with error containing %q", tt.file, code, body, tt.want)
			}
		})
	}
	if l := store.List(now); len(l) != 0 {
		t.Errorf("bad input stored silences: %+v", l)
	}
	// Two JSON values where one is expected, and an empty body.
	for _, body := range []string{silenceBody + silenceBody, ""} {
		if code, v := call(t, srv, "POST", "/api/v1/silences", "Bearer "+token, body); code != 400 {
			t.Errorf("POST %q = %d %v, want 400", body, code, v)
		}
	}
}

func TestAck(t *testing.T) {
	srv, _, acks := server(t, token)
	auth := "Bearer " + token
	tests := []struct {
		name      string
		body      string
		want      int
		wantError string
	}{
		// A firing instance is acknowledged.
		{"firing", `{"rule": "www-http", "host": "www1", "check": "http", "by": "bob", "comment": "on it"}`, 200, ""},
		// One that is not firing has nothing to acknowledge.
		{"not firing", `{"rule": "www-http", "host": "www2", "check": "http", "by": "bob"}`, 409, "www-http on www2 (http): rule instance is not firing"},
		// One that does not exist.
		{"unknown instance", `{"rule": "www-http", "host": "www9", "check": "http", "by": "bob"}`, 404, "no such rule instance"},
		// Who and what must be said.
		{"missing fields", `{"rule": "www-http", "comment": "x"}`, 400, "acknowledgement lacks host, check, by"},
		{"bad json", `{"rule": `, 400, "request body"},
		{"unknown field", `{"rule": "www-http", "host": "www1", "check": "http", "by": "bob", "until": "tomorrow"}`, 400, `unknown field "until"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, srv, "POST", "/api/v1/acks", auth, tt.body)
			if code != tt.want || !strings.Contains(errorOf(body), tt.wantError) {
				t.Errorf("POST /api/v1/acks %s = %d %v, want %d with error containing %q", tt.body, code, body, tt.want, tt.wantError)
			}
		})
	}
	if got := strings.Join(acks.acked, ";"); got != "www-http/www1/http/bob/on it" {
		t.Errorf("acks recorded %q, want only the firing one", got)
	}
}

// TestListAcks: GET /api/v1/acks lists who is on which incident, sorted,
// to anyone (it is read-only), and says so when it cannot.
func TestListAcks(t *testing.T) {
	srv, _, acks := server(t, token)
	// None yet: an empty list, not null.
	if code, body := call(t, srv, "GET", "/api/v1/acks", "", ""); code != 200 || fmt.Sprint(body) != "[]" {
		t.Errorf("no acks: %d %v, want 200 []", code, body)
	}
	acks.firing[[3]string{"disk", "db1", "df"}] = true
	for _, b := range []string{
		`{"rule": "www-http", "host": "www1", "check": "http", "by": "bob", "comment": "on it"}`,
		`{"rule": "disk", "host": "db1", "check": "df", "by": "ann"}`,
	} {
		if code, body := call(t, srv, "POST", "/api/v1/acks", "Bearer "+token, b); code != 200 {
			t.Fatalf("ack %s: %d %v", b, code, body)
		}
	}
	code, body := call(t, srv, "GET", "/api/v1/acks", "", "")
	want := []any{
		map[string]any{"rule": "disk", "host": "db1", "check": "df", "state": "firing", "by": "ann", "comment": "", "at": "2030-06-01T12:00:00Z"},
		map[string]any{"rule": "www-http", "host": "www1", "check": "http", "state": "firing", "by": "bob", "comment": "on it", "at": "2030-06-01T12:00:00Z"},
	}
	if g, w := fmt.Sprint(body), fmt.Sprint(want); code != 200 || g != w {
		t.Errorf("acks = %d\n%s\nwant, sorted by rule\n%s", code, g, w)
	}

	// A follower that cannot read the leader's state says why.
	acks.err = errors.New("redis: connection refused")
	if code, body := call(t, srv, "GET", "/api/v1/acks", "", ""); code != 503 || !strings.Contains(errorOf(body), "list acknowledgements: redis: connection refused") {
		t.Errorf("acks unreadable = %d %v, want 503 with the cause", code, body)
	}
}

func TestAckWithoutEvaluator(t *testing.T) {
	store, err := silence.Open(filepath.Join(t.TempDir(), "silences.json"), silence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(APIHandler(APIOptions{Silences: store, Token: token}))
	t.Cleanup(srv.Close)
	code, body := call(t, srv, "POST", "/api/v1/acks", "Bearer "+token, `{"rule": "r", "host": "h", "check": "c", "by": "b"}`)
	if code != 503 || !strings.Contains(errorOf(body), "cannot acknowledge") {
		t.Errorf("ack without an Acknowledger = %d %v, want 503", code, body)
	}
	code, body = call(t, srv, "GET", "/api/v1/acks", "", "")
	if code != 503 || !strings.Contains(errorOf(body), "holds no acknowledgements") {
		t.Errorf("acks without an Acknowledger = %d %v, want 503", code, body)
	}
}

func TestMountedBesideHandler(t *testing.T) {
	srv, _, _ := server(t, token)
	// The control port's own endpoints still answer.
	resp, err := srv.Client().Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(b, []byte("ok\n")) {
		t.Errorf("/healthz = %d %q", resp.StatusCode, b)
	}
	// An unknown API path is a JSON 404.
	if code, body := call(t, srv, "GET", "/api/v1/nothing", "", ""); code != 404 || !strings.Contains(errorOf(body), "no API endpoint GET /api/v1/nothing") {
		t.Errorf("unknown path = %d %v", code, body)
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("  "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadToken(good); err != nil || got != token {
		t.Errorf("ReadToken = %q, %v; want %q", got, err, token)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadToken(empty); err == nil || !strings.Contains(err.Error(), empty+" is empty") {
		t.Errorf("ReadToken(empty) = %v, want an error naming the file", err)
	}
	if _, err := ReadToken(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("ReadToken(missing) = %v, want an error naming the file", err)
	}
}
