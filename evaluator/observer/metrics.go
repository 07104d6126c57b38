package observer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/check"
)

// metrics are the observer's own Prometheus metrics. Per-status counters
// are resolved once, so counting a check costs no label lookup on the hot
// path.
type metrics struct {
	checks        [4]prometheus.Counter
	skipped       prometheus.Counter
	confirmations prometheus.Counter
	limitHits     prometheus.Counter // perfdata points not stored past the series limit of their check
}

func newMetrics(reg prometheus.Registerer) *metrics {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dmonitor_checks_total", Help: "Check runs completed, by status.",
	}, []string{"status"})
	m := &metrics{
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_checks_skipped_total",
			Help: "Scheduled check runs skipped because the previous run of the same check was still going.",
		}),
		confirmations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_confirmations_requested_total",
			Help: "Checks this observer saw go from passing to failing and asked the other observers to confirm.",
		}),
	}
	for s := check.OK; s <= check.Unknown; s++ {
		m.checks[s] = checks.WithLabelValues(s.String())
	}
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: LimitHitsName, Help: LimitHitsHelp}, []string{"limit"})
	if reg != nil {
		reg.MustRegister(checks, m.skipped, m.confirmations)
		// The TSDB API counts its own limits in the same family.
		if err := reg.Register(hits); err != nil {
			are, ok := err.(prometheus.AlreadyRegisteredError)
			if !ok {
				panic(err)
			}
			hits = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	m.limitHits = hits.WithLabelValues("series_per_check")
	return m
}

// The family counting refusals by a limit, shared by every part that
// enforces one.
const (
	LimitHitsName = "dmonitor_limit_hits_total"
	LimitHitsHelp = "Writes refused or cut short by a limit, by limit."
)

func (m *metrics) checkDone(s check.Status) {
	if s < check.OK || s > check.Unknown {
		s = check.Unknown
	}
	m.checks[s].Inc()
}
