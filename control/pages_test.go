package control

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPagesRouted: with Options.Pages set, every route of the status page
// reaches it, from anywhere and without a bearer header (its pages are
// read-only and its forms carry the token in a field it checks itself),
// while the control port's own routes stay their own and paths outside
// both are 404.
func TestPagesRouted(t *testing.T) {
	var reached []string
	pages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = append(reached, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusTeapot)
	})
	h := Handler(Options{Gatherer: prometheus.NewRegistry(), Status: func() any { return "up" }, Token: token, Pages: pages})
	for _, p := range []probe{
		{"GET", "/", ""},
		{"GET", "/check/www1/http", ""},
		{"GET", "/check/a%2Fb/http", ""},
		{"GET", "/silences?host=www1", ""},
		{"GET", "/ack?rule=r", ""},
		{"POST", "/silences", "token=x"},
		{"POST", "/silences/expire", "token=x"},
		{"POST", "/ack", "token=x"},
	} {
		reached = nil
		if resp := p.do(h, remote, ""); resp.StatusCode != http.StatusTeapot || len(reached) != 1 {
			t.Errorf("%s %s = %s, reached %v; want the status page", p.method, p.target, resp.Status, reached)
		}
	}
	for _, p := range []probe{{"GET", "/healthz", ""}, {"GET", "/status", ""}, {"GET", "/nope", ""}, {"DELETE", "/silences", ""}, {"GET", "/check/www1", ""}} {
		reached = nil
		resp := p.do(h, remote, "")
		if len(reached) != 0 {
			t.Errorf("%s %s reached the status page", p.method, p.target)
		}
		if p.target == "/nope" && resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /nope = %s, want 404", resp.Status)
		}
	}
	// Without Pages, / is not served at all.
	bare := Handler(Options{Gatherer: prometheus.NewRegistry(), Status: func() any { return "up" }})
	if resp := (probe{"GET", "/", ""}).do(bare, remote, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / without Pages = %s, want 404", resp.Status)
	}
}
