// Package control serves dmonitor's control port (2929 by default): health,
// Prometheus metrics, the node's status and Go profiles (Handler), and the
// operators' API for silences and acknowledgements (APIHandler), whose
// changes need the bearer token of control.token_file. It listens on
// loopback unless configured otherwise.
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

// Handler returns the control API: /healthz, /metrics from gatherer,
// /status from status, and /debug/pprof/.
func Handler(gatherer prometheus.Gatherer, status StatusFunc, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	// Profiles, as Prometheus and Alertmanager serve them: the port is
	// loopback unless the operator opens it.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(status()); err != nil {
			log.Warn("control: write status", "err", err)
		}
	})
	return mux
}
