package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/share/peershare"
	"github.com/dmonitor/dmonitor/silence"
)

// handlers returns the control port's two handlers as the daemon builds
// them, with tok as the token and the real peer API under /api/v1/peer/.
func handlers(t *testing.T, tok string) (ctl, api http.Handler) {
	t.Helper()
	store, err := silence.Open(filepath.Join(t.TempDir(), "silences.json"), silence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	acks := &fakeAcks{firing: map[[3]string]bool{{"www-http", "www1", "http"}: true}}
	log := slog.New(slog.DiscardHandler)
	peers := peershare.New(peershare.Options{Self: "a", Peers: []peershare.Peer{{Name: "b", URL: "http://127.0.0.1:1"}}, Token: tok})
	ctl = Handler(Options{Gatherer: prometheus.NewRegistry(), Status: func() any { return "up" }, Token: tok, Logger: log})
	api = APIHandler(APIOptions{Silences: store, Acks: acks, Token: tok, Peers: peers.Handler(), Logger: log})
	return ctl, api
}

// probe is a request that reaches a route's handler.
type probe struct{ method, target, body string }

// do serves p on h as a request from addr (host:port) with the given
// Authorization header. Its context is done already, so that the profile
// and the trace end at once instead of after their seconds; no other
// handler here waits on it.
func (p probe) do(h http.Handler, addr, auth string) *http.Response {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, p.method, p.target, strings.NewReader(p.body))
	req.RemoteAddr = addr
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// remote is a caller that is not on this host (TEST-NET-1).
const remote = "192.0.2.1:40000"

// TestEveryRouteGuarded walks every route the control port serves, as the
// handlers themselves list them, and calls each from another host: without
// the token only the read-only routes answer; with it, every route does. A
// route added without a probe here, or open when it should not be, fails.
func TestEveryRouteGuarded(t *testing.T) {
	// Every route, with requests that reach it.
	probes := map[string][]probe{
		"GET /healthz":                {{"GET", "/healthz", ""}},
		"GET /readyz":                 {{"GET", "/readyz", ""}},
		"GET /metrics":                {{"GET", "/metrics", ""}},
		"GET /status":                 {{"GET", "/status", ""}},
		"GET /debug/pprof/":           {{"GET", "/debug/pprof/", ""}, {"GET", "/debug/pprof/goroutine?debug=1", ""}, {"GET", "/debug/pprof/heap", ""}},
		"GET /debug/pprof/cmdline":    {{"GET", "/debug/pprof/cmdline", ""}},
		"GET /debug/pprof/profile":    {{"GET", "/debug/pprof/profile?seconds=1", ""}},
		"GET /debug/pprof/symbol":     {{"GET", "/debug/pprof/symbol", ""}},
		"GET /debug/pprof/trace":      {{"GET", "/debug/pprof/trace?seconds=1", ""}},
		"GET /api/v1/silences":        {{"GET", "/api/v1/silences", ""}},
		"POST /api/v1/silences":       {{"POST", "/api/v1/silences", silenceBody}},
		"DELETE /api/v1/silence/{id}": {{"DELETE", "/api/v1/silence/x", ""}},
		"POST /api/v1/acks":           {{"POST", "/api/v1/acks", `{"rule": "www-http", "host": "www1", "check": "http", "by": "bob"}`}},
		"GET /api/v1/acks":            {{"GET", "/api/v1/acks", ""}},
		"/api/v1/peer/":               {{"POST", peershare.PushPath, `{"from": "b"}`}, {"GET", peershare.StatePath, ""}},
	}
	// The routes anyone who reaches the port may call: read-only, and
	// nothing in them an attacker could use. Think twice before adding one.
	public := map[string]bool{
		"GET /healthz": true, "GET /readyz": true, "GET /metrics": true, "GET /status": true,
		"GET /api/v1/silences": true, "GET /api/v1/acks": true,
	}

	ctl, api := handlers(t, token)
	walked := make(map[string]bool)
	for _, h := range []http.Handler{ctl, api} {
		for _, rt := range h.(*router).routes {
			walked[rt.pattern] = true
			ps, ok := probes[rt.pattern]
			if !ok {
				t.Errorf("route %q has no probe in this test: add one, and decide whether it is public", rt.pattern)
				continue
			}
			for _, p := range ps {
				name := p.method + " " + p.target
				if _, got := h.(*router).mux.Handler(httptest.NewRequest(p.method, p.target, nil)); got != rt.pattern {
					t.Errorf("probe %s reaches route %q, not %q", name, got, rt.pattern)
				}
				for _, auth := range []string{"", "Bearer wrong", "Basic " + token} {
					resp := p.do(h, remote, auth)
					switch {
					case public[rt.pattern] && (resp.StatusCode == 401 || resp.StatusCode == 403):
						t.Errorf("%s (public) with %q = %s, want it served", name, auth, resp.Status)
					case !public[rt.pattern] && resp.StatusCode != 401:
						t.Errorf("%s from another host with %q = %s, want 401", name, auth, resp.Status)
					case !public[rt.pattern] && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer"):
						t.Errorf("%s = 401 with WWW-Authenticate %q, want Bearer", name, resp.Header.Get("WWW-Authenticate"))
					}
				}
				// With the token every route is served (what it then says
				// of the request is its own business).
				if resp := p.do(h, remote, "Bearer "+token); resp.StatusCode == 401 || resp.StatusCode == 403 {
					b, _ := io.ReadAll(resp.Body)
					t.Errorf("%s with the token = %s %s, want it served", name, resp.Status, b)
				}
			}
		}
	}
	for pattern := range probes {
		if !walked[pattern] {
			t.Errorf("route %q is probed but no handler lists it", pattern)
		}
	}
}

// TestProfilesFromLoopback: a caller on this host reads the profiles
// without a token, over a real loopback connection and from every
// loopback form of address.
func TestProfilesFromLoopback(t *testing.T) {
	for _, tok := range []string{token, ""} {
		ctl, _ := handlers(t, tok)
		srv := httptest.NewServer(ctl) // 127.0.0.1
		resp, err := srv.Client().Get(srv.URL + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "control.test") {
			t.Errorf("token %q: cmdline from %s = %s %q, want the test binary's command line", tok, srv.URL, resp.Status, b)
		}
		for _, addr := range []string{"127.0.0.1:5000", "127.8.9.10:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"} {
			if resp := (probe{"GET", "/debug/pprof/cmdline", ""}).do(ctl, addr, ""); resp.StatusCode != 200 {
				t.Errorf("token %q: cmdline from %s = %s, want 200", tok, addr, resp.Status)
			}
		}
	}
}

// TestProfilesWithoutToken: with no token configured, profiles are served
// to loopback callers only, and another host is told why.
func TestProfilesWithoutToken(t *testing.T) {
	ctl, _ := handlers(t, "")
	for _, addr := range []string{remote, "[2001:db8::1]:5000", "10.0.0.1:5000", "not-an-address"} {
		resp := (probe{"GET", "/debug/pprof/cmdline", ""}).do(ctl, addr, "Bearer "+token)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 403 || !strings.Contains(string(b), "control.token_file") {
			t.Errorf("cmdline from %s = %s %q, want 403 saying how to allow it", addr, resp.Status, b)
		}
	}
}

func TestReadyz(t *testing.T) {
	var notReady error
	ready := func() error { return notReady }
	for _, tt := range []struct {
		name     string
		ready    func() error
		err      error
		wantCode int
		wantBody string
	}{
		// No Ready: always ready.
		{"nil Ready", nil, nil, 200, "ok\n"},
		{"ready", ready, nil, 200, "ok\n"},
		// Not ready: 503 and why.
		{"not ready", ready, errors.New("alert state not loaded yet"), 503, "alert state not loaded yet\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			notReady = tt.err
			h := Handler(Options{Gatherer: prometheus.NewRegistry(), Status: func() any { return nil }, Ready: tt.ready})
			resp := (probe{"GET", "/readyz", ""}).do(h, remote, "")
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode || string(b) != tt.wantBody {
				t.Errorf("/readyz = %s %q, want %d %q", resp.Status, b, tt.wantCode, tt.wantBody)
			}
			// Liveness does not depend on readiness.
			if resp := (probe{"GET", "/healthz", ""}).do(h, remote, ""); resp.StatusCode != 200 {
				t.Errorf("/healthz = %s, want 200 whether ready or not", resp.Status)
			}
		})
	}
}
