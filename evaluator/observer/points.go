package observer

import (
	"math"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/tsdb"
)

// The metric names of the TSDB contract (docs/ARCHITECTURE.md, README "What is written to the store").
const (
	MetricCheckStatus   = "dmonitor.check.status"
	MetricCheckDuration = "dmonitor.check.duration"
	MetricCheckPerf     = "dmonitor.check.perf"
	MetricAlertState    = "dmonitor.alert.state"
	MetricObserverUp    = "dmonitor.observer.up"
)

// ResultPoints appends to dst the datapoints that record r: its status, its
// run time and every perfdata value in its base unit. The point's time is
// when the plugin started.
func ResultPoints(dst []tsdb.Point, r *check.Result) []tsdb.Point {
	host, chk, obs := tsdb.SanitizeTag(r.Host), tsdb.SanitizeTag(r.Check), tsdb.SanitizeTag(r.Observer)
	tags := map[string]string{"host": host, "check": chk, "observer": obs}
	dst = append(dst,
		tsdb.Point{Metric: MetricCheckStatus, Tags: tags, Time: r.Start, Value: float64(r.Status)},
		tsdb.Point{Metric: MetricCheckDuration, Tags: tags, Time: r.Start, Value: check.Seconds(r.Duration)},
	)
	for _, p := range r.Perf {
		v := p.BaseValue()
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue // no store accepts them; the raw text stays in the live result
		}
		dst = append(dst, tsdb.Point{
			Metric: MetricCheckPerf,
			Tags:   map[string]string{"host": host, "check": chk, "observer": obs, "label": tsdb.SanitizeTag(p.Label)},
			Time:   r.Start,
			Value:  v,
		})
	}
	return dst
}

func heartbeatPoint(observer string, t time.Time) tsdb.Point {
	return tsdb.Point{Metric: MetricObserverUp, Tags: map[string]string{"observer": tsdb.SanitizeTag(observer)}, Time: t, Value: 1}
}
