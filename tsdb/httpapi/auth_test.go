package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// fromAddr makes every request seem to come from addr: the address is
// set in the request object only, so nothing but loopback is ever dialed.
func fromAddr(addr string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.RemoteAddr = addr
			h.ServeHTTP(w, r)
		})
	}
}

// remote is an address beyond loopback (TEST-NET-1, RFC 5737).
const remote = "192.0.2.10:40000"

// noToken is the refusal of a write from beyond loopback when no token is
// configured.
const noToken = "No token configured: writes are accepted from loopback only"

// Writes from beyond loopback need the bearer token, or are refused with
// 401, OpenTSDB's error object and WWW-Authenticate; loopback writes and
// every read need none.
func TestWriteAuthorization(t *testing.T) {
	point := fmt.Sprintf(`{"metric":"m","timestamp":%d,"value":1,"tags":{"host":"a"}}`, t0)
	tests := []struct {
		name  string
		addr  string // "" for the real one, 127.0.0.1
		opts  Options
		auth  string // the Authorization header
		code  int
		error string // the error message of a refusal
	}{
		// No token needed from loopback, whatever is configured.
		{name: "loopback", code: 204},
		{name: "loopback with a token configured", opts: Options{Token: "s3cret"}, code: 204},
		{name: "other loopback address", addr: "127.0.0.2:1234", code: 204},
		{name: "IPv6 loopback", addr: "[::1]:1234", code: 204},
		{name: "IPv4-mapped loopback", addr: "[::ffff:127.0.0.1]:1234", code: 204},
		// Beyond loopback.
		{name: "remote, right token", addr: remote, opts: Options{Token: "s3cret"}, auth: "Bearer s3cret", code: 204},
		{name: "remote, scheme in lower case", addr: remote, opts: Options{Token: "s3cret"}, auth: "bearer s3cret", code: 204},
		{name: "remote, no header", addr: remote, opts: Options{Token: "s3cret"}, code: 401, error: "Missing or wrong bearer token"},
		{name: "remote, wrong token", addr: remote, opts: Options{Token: "s3cret"}, auth: "Bearer s3cre", code: 401, error: "Missing or wrong bearer token"},
		{name: "remote, token as Basic", addr: remote, opts: Options{Token: "s3cret"}, auth: "Basic s3cret", code: 401, error: "Missing or wrong bearer token"},
		{name: "remote, no token configured", addr: remote, auth: "Bearer ", code: 401, error: noToken},
		{name: "IPv4-mapped remote", addr: "[::ffff:192.0.2.10]:1234", code: 401, error: noToken},
		{name: "IPv6 remote", addr: "[2001:db8::1]:1234", code: 401, error: noToken},
		// A peer that is no IP address (a Unix socket) is not trusted.
		{name: "not an IP address", addr: "@", code: 401, error: noToken},
		{name: "remote, writes open", addr: remote, opts: Options{AllowUnauthenticatedWrites: true}, code: 204},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var wrap func(http.Handler) http.Handler
			if tc.addr != "" {
				wrap = fromAddr(tc.addr)
			}
			st := openStore(t)
			s := serve(t, st, st, tc.opts, wrap)
			var hdr []string
			if tc.auth != "" {
				hdr = []string{"Authorization", tc.auth}
			}
			r := s.do(t, http.MethodPost, "/api/put", []byte(point), hdr...)
			if tc.code != 401 {
				if r.code != tc.code {
					t.Fatalf("put: %d %s, want %d", r.code, r.body, tc.code)
				}
				if n := seriesOf(t, st, "m"); n != 1 {
					t.Errorf("%d series stored, want 1", n)
				}
				return
			}
			checkError(t, "put", r, 401, tc.error)
			if got := r.hdr.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate %q, want Bearer", got)
			}
			if n := seriesOf(t, st, "m"); n != 0 {
				t.Errorf("%d series stored by a refused write", n)
			}
		})
	}
}

// Every method of every endpoint that writes needs the token from beyond
// loopback; the others, POST included where it carries a query, do not.
func TestWriteAuthorizationEndpoints(t *testing.T) {
	st := openStore(t)
	s := serve(t, st, st, Options{Token: "s3cret"}, fromAddr(remote))
	annotation := fmt.Sprintf(`{"startTime":%d,"description":"d"}`, t0)
	for _, tc := range []struct {
		method, path, body string
		write              bool
	}{
		{"POST", "/api/put", "[]", true},
		{"POST", "/api/annotation", annotation, true},
		{"PUT", "/api/annotation", annotation, true},
		{"DELETE", "/api/annotation", annotation, true},
		{"POST", "/api/annotation/bulk", "[" + annotation + "]", true},
		{"PUT", "/api/annotation/bulk", "[" + annotation + "]", true},
		{"DELETE", "/api/annotation/bulk", `{"startTime":0,"global":true}`, true},
		{"DELETE", "/api/query", "", true},
		{"GET", fmt.Sprintf("/api/query?start=%d&m=sum:m", t0), "", false},
		{"POST", "/api/query", fmt.Sprintf(`{"start":%d,"queries":[{"metric":"m","aggregator":"sum"}]}`, t0), false},
		{"GET", "/api/query/last?timeseries=m", "", false},
		{"POST", "/api/query/last", `{"queries":[{"metric":"m"}]}`, false},
		{"GET", "/api/suggest?type=metrics", "", false},
		{"POST", "/api/suggest", `{"type":"metrics"}`, false},
		{"GET", "/api/aggregators", "", false},
		{"POST", "/api/version", "", false},
		{"GET", fmt.Sprintf("/api/annotation?start_time=%d", t0), "", false},
	} {
		r := s.do(t, tc.method, tc.path, []byte(tc.body))
		if tc.write && r.code != 401 {
			t.Errorf("%s %s without the token: %d %s, want 401", tc.method, tc.path, r.code, r.body)
		}
		if !tc.write && r.code == 401 {
			t.Errorf("%s %s is a read, refused with 401: %s", tc.method, tc.path, r.body)
		}
		if tc.write {
			// With the token the write gets past the check: whatever
			// it answers then, it is not 401.
			if r := s.do(t, tc.method, tc.path, []byte(tc.body), "Authorization", "Bearer s3cret"); r.code == 401 {
				t.Errorf("%s %s with the token: 401 %s", tc.method, tc.path, r.body)
			}
		}
	}
}
