package evaluator

import (
	"github.com/dmonitor/dmonitor/check"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the evaluator's own Prometheus metrics. Per-status counters are
// resolved once, so counting a check costs no label lookup on the hot path.
type metrics struct {
	checks        [4]prometheus.Counter
	skipped       prometheus.Counter
	pointsWritten prometheus.Counter
	appendErrors  prometheus.Counter
	transitions   prometheus.Counter
	confirmations prometheus.Counter
	leader        prometheus.Gauge
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
		pointsWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_tsdb_points_written_total", Help: "Datapoints appended to the TSDB.",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_tsdb_append_errors_total", Help: "Batches the TSDB refused or failed to take.",
		}),
		transitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_alert_transitions_total", Help: "Alert state transitions decided by this node as leader.",
		}),
		confirmations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_confirmations_requested_total",
			Help: "Checks this observer saw go from passing to failing and asked the other observers to confirm.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dmonitor_leader", Help: "1 while this node holds the leader lease.",
		}),
	}
	for s := check.OK; s <= check.Unknown; s++ {
		m.checks[s] = checks.WithLabelValues(s.String())
	}
	if reg != nil {
		reg.MustRegister(checks, m.skipped, m.pointsWritten, m.appendErrors, m.transitions, m.confirmations, m.leader)
	}
	return m
}

func (m *metrics) checkDone(s check.Status) {
	if s < check.OK || s > check.Unknown {
		s = check.Unknown
	}
	m.checks[s].Inc()
}
