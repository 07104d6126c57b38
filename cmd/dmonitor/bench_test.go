package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/syncbuf"
)

// The daemon benchmarks run the real binary, built with `go build` like a
// user's, as a child process against a config tree of thousands of targets,
// and measure it from outside: /metrics for what it did, /proc for what it
// cost. They are system benchmarks, so each b.Loop iteration is one whole
// measurement (start, ramp, window, stop) taking tens of seconds: the
// default -benchtime of 1s runs it exactly once, and a -benchtime of Nx
// runs N measurements whose totals are reported together.

// benchWindow is how long throughput and CPU are measured, for the daemon
// and for the floor alike.
const benchWindow = 10 * time.Second

// userHZ is the unit of the times in /proc/<pid>/stat: USER_HZ, which Linux
// fixes at 100 for user space on every architecture Go supports.
const userHZ = 100

// benchPlugin returns the path of Debian's check_dummy, or skips.
func benchPlugin(b *testing.B) string {
	b.Helper()
	p := filepath.Join(pluginDir, "check_dummy")
	if _, err := os.Stat(p); err != nil {
		b.Skipf("Debian monitoring-plugins missing (%v): install monitoring-plugins-basic to run the daemon benchmarks", err)
	}
	return p
}

// buildDaemon builds the dmonitor binary of this directory into a
// temporary directory and returns its path. The benchmark measures the
// binary a user runs, not this test binary re-executed (which may carry
// -race or coverage).
func buildDaemon(b testing.TB) string {
	b.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		b.Fatalf("building the daemon needs the go tool: %v", err)
	}
	bin := filepath.Join(b.TempDir(), "dmonitor")
	cmd := exec.Command(gotool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build -o %s .: %v\n%s", bin, err, out)
	}
	return bin
}

// benchControl returns a loopback address that was free a moment ago.
func benchControl(b testing.TB) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeBenchTree writes a config tree with yaml as dmonitor.yaml and an
// empty hosts.d/<host>/<check> for every host and check, and returns its
// directory.
func writeBenchTree(b *testing.B, yaml string, hosts, checks []string) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dmonitor.yaml"), []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, h := range hosts {
		hd := filepath.Join(dir, "hosts.d", h)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			b.Fatal(err)
		}
		for _, c := range checks {
			if err := os.WriteFile(filepath.Join(hd, c), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return dir
}

// benchHosts returns n host names, h0000 and on.
func benchHosts(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%04d", i)
	}
	return hosts
}

// benchDaemon is a `dmonitor run` child process of the built binary.
type benchDaemon struct {
	cmd     *exec.Cmd
	control string
	log     syncbuf.Buffer
}

// startBenchDaemon starts bin on the config tree dir and returns once its
// control API answers. It is killed at cleanup if it is still running, and
// its log is shown if the benchmark failed.
func startBenchDaemon(b testing.TB, bin, dir, control string) *benchDaemon {
	b.Helper()
	d := &benchDaemon{control: control}
	d.cmd = exec.Command(bin, "run", "--config", dir, "--log-level", "warn", "--user", "root")
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			_ = d.cmd.Wait()
		}
		if b.Failed() {
			b.Logf("daemon log:\n%s", d.log.String())
		}
	})
	awaitBench(b, "the control API", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + control + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return d
}

// stop sends SIGTERM and waits for a clean exit, which writes every result.
func (d *benchDaemon) stop(b testing.TB) {
	b.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		b.Fatalf("dmonitor run after SIGTERM: %v\n%s", err, d.log.String())
	}
}

// daemonSample is the daemon's counters and its own CPU time at one moment.
type daemonSample struct {
	at           time.Time
	cpu          time.Duration // user+sys of the daemon, its plugins excluded
	checks       float64       // check runs completed, every status
	notOK        float64       // of which not OK
	skipped      float64       // runs skipped because the previous one was still going
	points       float64       // datapoints appended to the store
	appendErrors float64
	heapInuse    float64 // bytes of the Go heap in use, garbage included
}

// sample reads the daemon's CPU time and then its /metrics.
func (d *benchDaemon) sample(b *testing.B) daemonSample {
	b.Helper()
	s := daemonSample{at: time.Now(), cpu: procCPU(b, d.cmd.Process.Pid)}
	resp, err := http.Get("http://" + d.control + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			b.Fatalf("/metrics: %q: %v", line, err)
		}
		switch {
		case name == `dmonitor_checks_total{status="OK"}`:
			s.checks += v
		case strings.HasPrefix(name, "dmonitor_checks_total{"):
			s.checks += v
			s.notOK += v
		case name == "dmonitor_checks_skipped_total":
			s.skipped = v
		case name == "dmonitor_tsdb_points_written_total":
			s.points = v
		case name == "dmonitor_tsdb_append_errors_total":
			s.appendErrors = v
		case name == "go_memstats_heap_inuse_bytes":
			s.heapInuse = v
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("/metrics: %v", err)
	}
	return s
}

// procCPU returns the user+sys time of process pid from /proc/<pid>/stat:
// every thread of it, none of its children.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	name := fmt.Sprintf("/proc/%d/stat", pid)
	data, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	// The command name in field 2 may hold spaces and parentheses, so the
	// fields are counted from the last ')'. f[0] is field 3, so utime and
	// stime, fields 14 and 15, are f[11] and f[12].
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		b.Fatalf("%s: unexpected format %q", name, data)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		b.Fatalf("%s: unexpected format %q", name, data)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("%s: utime %q, stime %q", name, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / userHZ
}

// procMemKiB returns VmRSS and VmHWM of process pid, in KiB.
func procMemKiB(b testing.TB, pid int) (rss, hwm float64) {
	b.Helper()
	name := fmt.Sprintf("/proc/%d/status", pid)
	data, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		key, val, _ := strings.Cut(line, ":")
		var dst *float64
		switch key {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		default:
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			b.Fatalf("%s: %q: %v", name, line, err)
		}
		*dst = kb
	}
	if rss == 0 || hwm == 0 {
		b.Fatalf("%s: no VmRSS or VmHWM", name)
	}
	return rss, hwm
}

// awaitBench polls cond until it holds, or fails the benchmark after
// timeout. The pause between polls is long, because each poll of /metrics
// is work the daemon does that the benchmark would otherwise count.
func awaitBench(b testing.TB, what string, timeout time.Duration, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchSelfCPU is the user+sys time of this process, its children
// excluded.
func benchSelfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// execFloor runs path with args on workers goroutines, back to back, for
// window, through a bare exec.Command(...).Output(): the cheapest use of
// os/exec that, like the daemon, captures what the plugin prints (Output
// keeps stdout, and stderr for the error). It returns the runs completed,
// the time they took and this process's CPU time meanwhile.
func execFloor(b *testing.B, workers int, window time.Duration, path string, args ...string) (runs int64, wall, cpu time.Duration) {
	b.Helper()
	var n, failed atomic.Int64
	var firstErr atomic.Value
	cpu0, start := benchSelfCPU(), time.Now()
	deadline := start.Add(window)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := exec.Command(path, args...).Output(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	wall, cpu = time.Since(start), benchSelfCPU()-cpu0
	if failed.Load() > 0 {
		b.Fatalf("floor: %d of %d runs of %s failed, first: %v", failed.Load(), failed.Load()+n.Load(), path, firstErr.Load())
	}
	return n.Load(), wall, cpu
}

// BenchmarkDaemonVsFloor runs 2,000 check_dummy checks at a 1s interval in
// the real daemon, every result written to its embedded store, and then the
// same plugin in a bare os/exec loop with as many workers, each for
// benchWindow. It reports the daemon's checks per second (capped at 2,000/s
// by its schedule) beside the floor's runs per second (unthrottled), and
// each one's own CPU time per run, plugins excluded: cpu_ratio is what the
// daemon's scheduling, bookkeeping and store cost on top of a bare exec.
func BenchmarkDaemonVsFloor(b *testing.B) {
	plugin := benchPlugin(b)
	const targets, workers = 2000, 64
	bin := buildDaemon(b)
	control := benchControl(b)
	dir := writeBenchTree(b, fmt.Sprintf(`observer: bench
interval: 1s
workers: %d
tsdb: {listen: ""}
control: {listen: %q}
checks:
  dummy:
    command: [check_dummy, "0", "ok"]
`, workers, control), benchHosts(targets), []string{"dummy"})

	var dChecks, dSkipped float64
	var dWall, dCPU time.Duration
	var fRuns int64
	var fWall, fCPU time.Duration
	var pointsPerCheck float64
	for b.Loop() {
		d := startBenchDaemon(b, bin, dir, control)
		// Checks are splayed over the first interval, and the first results
		// create the store's series: measure from the third interval on.
		awaitBench(b, "two intervals of checks", 30*time.Second, func() bool { return d.sample(b).checks >= 2*targets })
		s0 := d.sample(b)
		time.Sleep(benchWindow) // the measuring window itself, not a wait for an event
		s1 := d.sample(b)
		d.stop(b)

		checks, points := s1.checks-s0.checks, s1.points-s0.points
		switch {
		case checks <= 0:
			b.Fatalf("no checks completed in %v", s1.at.Sub(s0.at))
		case s1.notOK > 0:
			b.Fatalf("%v of %v check_dummy runs were not OK: the daemon did not run the plugin as configured", s1.notOK, s1.checks)
		case s1.appendErrors > 0:
			b.Fatalf("%v appends to the store failed: results were not written", s1.appendErrors)
		// Each check_dummy result is two points (status and duration; no
		// perfdata) and the heartbeat adds one a second. Points are counted
		// once appended, checks once queued, so the writer's queue lets
		// them part a little at the edges of the window.
		case points < 0.95*2*checks:
			b.Fatalf("%v points written for %v checks, want 2 per check: results are not reaching the store", points, checks)
		}
		dChecks += checks
		dSkipped += s1.skipped - s0.skipped
		dWall += s1.at.Sub(s0.at)
		dCPU += s1.cpu - s0.cpu
		pointsPerCheck = points / checks

		runs, wall, cpu := execFloor(b, workers, benchWindow, plugin, "0", "ok")
		fRuns += runs
		fWall += wall
		fCPU += cpu
	}
	reportVsFloor(b, dChecks, dSkipped, dWall, dCPU, fRuns, fWall, fCPU)
	b.ReportMetric(pointsPerCheck, "points/check")
}

// reportVsFloor reports the daemon's checks (and the runs it skipped) in
// wall and with CPU against the fork floor's runs in fWall with fCPU: the
// rates, the CPU a check, and their ratios, the figures the issue's
// targets are set in.
func reportVsFloor(b *testing.B, checks, skipped float64, wall, cpu time.Duration, fRuns int64, fWall, fCPU time.Duration) {
	dRate, fRate := checks/wall.Seconds(), float64(fRuns)/fWall.Seconds()
	dCPUPer := cpu.Seconds() * 1e3 / checks
	fCPUPer := fCPU.Seconds() * 1e3 / float64(fRuns)
	b.ReportMetric(dRate, "daemon_checks/s")
	b.ReportMetric(fRate, "floor_runs/s")
	b.ReportMetric(dRate/fRate, "daemon/floor")
	b.ReportMetric(dCPUPer, "daemon_cpu_ms/check")
	b.ReportMetric(fCPUPer, "floor_cpu_ms/check")
	b.ReportMetric(dCPUPer/fCPUPer, "cpu_ratio")
	b.ReportMetric(skipped/wall.Seconds(), "daemon_skipped/s")
}

// BenchmarkRSS10kChecks runs the daemon with 10,000 checks scheduled (1,000
// hosts with 10 checks each, every check its own check_dummy command line)
// at a 30s interval, about 333 runs a second, until a little more than one
// interval has passed, so that every check has run and its series exist in
// the store; then it reports the daemon's resident memory and its peak.
func BenchmarkRSS10kChecks(b *testing.B) {
	benchPlugin(b)
	const hosts, perHost = 1000, 10
	const targets = hosts * perHost
	bin := buildDaemon(b)
	control := benchControl(b)
	var yaml strings.Builder
	fmt.Fprintf(&yaml, "observer: bench\ninterval: 30s\ntsdb: {listen: \"\"}\ncontrol: {listen: %q}\nchecks:\n", control)
	checks := make([]string, perHost)
	for i := range checks {
		checks[i] = fmt.Sprintf("svc%d", i)
		fmt.Fprintf(&yaml, "  %s:\n    command: [check_dummy, \"0\", \"%s ok on {{host}}\"]\n", checks[i], checks[i])
	}
	dir := writeBenchTree(b, yaml.String(), benchHosts(hosts), checks)

	var rss, hwm, heap, ran, rate float64
	for b.Loop() {
		d := startBenchDaemon(b, bin, dir, control)
		s0 := d.sample(b)
		// No check runs twice within its first interval, so 10% more runs
		// than targets means every check has run at least once.
		var s1 daemonSample
		awaitBench(b, "every check to have run", 75*time.Second, func() bool {
			s1 = d.sample(b)
			return s1.checks >= targets*11/10
		})
		rss, hwm = procMemKiB(b, d.cmd.Process.Pid)
		d.stop(b)
		switch {
		case s1.notOK > 0:
			b.Fatalf("%v of %v check_dummy runs were not OK", s1.notOK, s1.checks)
		case s1.appendErrors > 0 || s1.points < 2*targets:
			b.Fatalf("%v points written with %v append errors after %v checks, want at least %d", s1.points, s1.appendErrors, s1.checks, 2*targets)
		}
		ran, heap = s1.checks, s1.heapInuse
		rate = (s1.checks - s0.checks) / s1.at.Sub(s0.at).Seconds()
	}
	b.ReportMetric(rss/1024, "rss_MiB")
	b.ReportMetric(hwm/1024, "hwm_MiB")
	b.ReportMetric(heap/(1<<20), "heap_inuse_MiB")
	b.ReportMetric(ran, "checks_run")
	b.ReportMetric(rate, "checks/s")
}
