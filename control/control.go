// Package control serves dmonitor's control port (2929 by default): health,
// readiness, Prometheus metrics, the node's status and Go profiles
// (Handler), and the operators' API for silences and acknowledgements
// (APIHandler), whose changes need the bearer token of control.token_file.
// It listens on loopback unless configured otherwise; profiles are served
// to loopback callers and, elsewhere, to callers with the token.
package control

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StatusFunc returns the node's status as a JSON-encodable value.
type StatusFunc func() any

// Options configure Handler. Gatherer and Status are required.
type Options struct {
	// Gatherer is served at /metrics.
	Gatherer prometheus.Gatherer
	// Status is served at /status.
	Status StatusFunc
	// Ready says whether the node is ready to serve, for /readyz: nil when
	// it is, else why not. Nil Ready means always ready.
	Ready func() error
	// Token is the bearer token (see ReadToken) that lets a caller that
	// is not on this host read /debug/pprof/. Empty serves profiles to
	// loopback callers only.
	Token string
	// Pages, when set, is the operator's status page (package statuspage),
	// served at / and its other pages (pageRoutes). Its forms carry the
	// token in a password field, and it checks them itself.
	Pages  http.Handler
	Logger *slog.Logger
}

// pageRoutes are the status page's routes, with their access: the pages
// are read-only like /status; the forms change silences and
// acknowledgements, so they need the token.
var pageRoutes = []struct {
	pattern string
	access  access
}{
	{"GET /{$}", public},
	{"GET /check/{host}/{check}", public},
	{"GET /silences", public},
	{"GET /ack", public},
	{"POST /silences", formToken},
	{"POST /silences/expire", formToken},
	{"POST /ack", formToken},
}

// Handler returns the control port's own endpoints:
//
//	GET /healthz        200 "ok" while the process serves (liveness)
//	GET /readyz         200 "ok", or 503 with Options.Ready's error
//	GET /metrics        the metrics of Options.Gatherer
//	GET /status         Options.Status, in JSON
//	GET /debug/pprof/   Go's profiles, to callers from 127.0.0.0/8 or ::1,
//	                    or with "Authorization: Bearer <Token>"; others get
//	                    401 (403 when no token is configured)
//	GET /, /check/...   Options.Pages, the status page, when set; its forms
//	POST /silences, …   (POST) check the token posted with them
//
// The first four are read-only and open to whoever reaches the port.
// Mount it beside APIHandler: mux.Handle("/", Handler(o)).
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger
	g := newGuard(o.Token, log, func(w http.ResponseWriter, _ *http.Request, code int, err error) {
		http.Error(w, err.Error(), code)
	})
	routes := []route{
		{"GET /healthz", public, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "ok")
		})},
		{"GET /readyz", public, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if o.Ready != nil {
				if err := o.Ready(); err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "ok")
		})},
		{"GET /metrics", public, promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})},
		{"GET /status", public, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(o.Status()); err != nil {
				log.Warn("control: write status", "err", err)
			}
		})},
		// Profiles, as Prometheus and Alertmanager serve them, but not to
		// anyone who reaches an opened port: cmdline shows how the process
		// was started, and profile and trace keep a core busy.
		{"GET /debug/pprof/", loopbackOrToken, http.HandlerFunc(pprof.Index)},
		{"GET /debug/pprof/cmdline", loopbackOrToken, http.HandlerFunc(pprof.Cmdline)},
		{"GET /debug/pprof/profile", loopbackOrToken, http.HandlerFunc(pprof.Profile)},
		{"GET /debug/pprof/symbol", loopbackOrToken, http.HandlerFunc(pprof.Symbol)},
		{"GET /debug/pprof/trace", loopbackOrToken, http.HandlerFunc(pprof.Trace)},
	}
	if o.Pages != nil {
		for _, p := range pageRoutes {
			routes = append(routes, route{p.pattern, p.access, o.Pages})
		}
	}
	return g.router(routes, nil)
}
