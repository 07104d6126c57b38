package httpapi_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/httpapi"
)

// The observer counts its limits in the same family on the daemon's
// registry: declared alike, the second registration shares the first's
// counter instead of panicking.
func TestLimitHitsFamilySharedWithObserver(t *testing.T) {
	if httpapi.LimitHitsName != observer.LimitHitsName || httpapi.LimitHitsHelp != observer.LimitHitsHelp {
		t.Fatalf("httpapi declares %s %q, observer %s %q", httpapi.LimitHitsName, httpapi.LimitHitsHelp, observer.LimitHitsName, observer.LimitHitsHelp)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: observer.LimitHitsName, Help: observer.LimitHitsHelp}, []string{"limit"}))
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	httpapi.NewHandler(st, httpapi.Options{Registerer: reg}) // panics if the families differ
}
