package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkProbesOverload offers the daemon twice the tcp probes the
// machine runs (40,000 checks at a 1 s interval against loopback
// listeners) for overloadWindow and reports how it bears it: the checks it
// runs and skips a second, the alert transitions that stale results cause
// (a check run less often than every 2 s has no fresh result), the points
// it drops, and its memory at the end. An overloaded node must stay
// bounded and keep writing what it runs; before the writer merged each
// second's annotations once a flush, the same load made every transition
// rewrite its second's annotation (O(n²) JSON on the goroutine that writes
// the points), which dropped millions of points and grew the daemon to
// 2 GB (docs/BENCHMARKS.md, "Probes").
func BenchmarkProbesOverload(b *testing.B) {
	const targets, overloadWindow = 40000, 3 * time.Minute
	bin := buildDaemon(b)
	control := benchControl(b)
	var yaml strings.Builder
	fmt.Fprintf(&yaml, "observer: bench\ninterval: 1s\ntimeout: 5s\ntsdb: {listen: \"\"}\ncontrol: {listen: %q}\nchecks:\n", control)
	ports := tcpTargets(b, probeListeners)
	checks := make([]string, len(ports))
	for i, p := range ports {
		checks[i] = fmt.Sprintf("tcp%d", i)
		fmt.Fprintf(&yaml, "  %s:\n    probe: {type: tcp, host: 127.0.0.1, port: %d}\n", checks[i], p)
	}
	dir := writeBenchTree(b, yaml.String(), benchHosts(targets/len(checks)), checks)

	for b.Loop() {
		d := startBenchDaemon(b, bin, dir, control)
		awaitBench(b, "the first interval's checks", 2*time.Minute, func() bool { return d.sample(b).checks >= targets })
		tr0 := d.metricSum(b, "dmonitor_alert_transitions_total")
		dr0 := d.metricSum(b, "dmonitor_writer_dropped_points_total")
		s0 := d.sample(b)
		time.Sleep(overloadWindow) // the measuring window itself, not a wait for an event
		s1 := d.sample(b)
		tr1 := d.metricSum(b, "dmonitor_alert_transitions_total")
		dr1 := d.metricSum(b, "dmonitor_writer_dropped_points_total")
		rss, hwm := procMemKiB(b, d.cmd.Process.Pid)
		d.stop(b)

		secs := s1.at.Sub(s0.at).Seconds()
		b.ReportMetric((s1.checks-s0.checks)/secs, "checks/s")
		b.ReportMetric((s1.skipped-s0.skipped)/secs, "skipped/s")
		b.ReportMetric((s1.points-s0.points)/(s1.checks-s0.checks), "points/check")
		b.ReportMetric((tr1-tr0)/secs, "transitions/s")
		b.ReportMetric(dr1-dr0, "dropped_points")
		b.ReportMetric((s1.cpu-s0.cpu).Seconds()/secs, "daemon_cores")
		b.ReportMetric(s1.heapInuse/(1<<20), "heap_inuse_MiB")
		b.ReportMetric(rss/1024, "rss_MiB")
		b.ReportMetric(hwm/1024, "peak_rss_MiB")
	}
}
