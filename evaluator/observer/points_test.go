package observer

import (
	"math"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// TestResultPointsRunTime: the run time is written in seconds to 2⁻²⁰ s
// (check.Seconds), which the store compresses; a probe's time perfdata
// is its own measurement to the same step, and a plugin's perfdata is
// written as the plugin printed it.
func TestResultPointsRunTime(t *testing.T) {
	const step = 1.0 / (1 << 20)
	r := check.Result{Host: "h", Check: "c", Observer: "o", Start: time.Unix(1e9, 0),
		Duration: 123456789 * time.Nanosecond,
		Perf:     []check.Perf{{Label: "time", Value: 0.000123, Text: "0.000123", UOM: "s"}}}
	pts := ResultPoints(nil, &r)
	if len(pts) != 3 {
		t.Fatalf("points: %+v", pts)
	}
	d := pts[1]
	if d.Metric != MetricCheckDuration || math.Mod(d.Value, step) != 0 || math.Abs(d.Value-0.123456789) > step/2 {
		t.Errorf("duration point %s = %v, want 0.123456789 s to 2⁻²⁰ s", d.Metric, d.Value)
	}
	if p := pts[2]; p.Value != 0.000123 {
		t.Errorf("perfdata point %s = %v, want 0.000123 as the plugin printed it", p.Metric, p.Value)
	}
}
