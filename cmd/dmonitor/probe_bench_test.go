package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/share/redisshare"
)

// The probe benchmarks are the daemon benchmarks of bench_test.go for
// in-process probes (issue 12): the real binary probing loopback targets
// that this process serves, measured from outside as the plugin checks are.
//
// Set DMONITOR_BENCH_PROFILES to a directory to have them save the
// daemon's profiles there (a heap profile once every check has run, a 10 s
// CPU profile after the measuring window, so that profiling does not
// perturb what is measured); read them with `go tool pprof -top FILE`.

// probeListeners is how many loopback ports the probes are spread over, so
// that no single port's accept queue or four-tuples limit the rate.
const probeListeners = 8

// tcpTargets starts n loopback TCP listeners that accept each connection
// and close it, as a port a tcp probe without send or expect checks, and
// returns their ports. They are closed at cleanup.
func tcpTargets(b testing.TB, n int) []int {
	b.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = loopback.Serve(b, func(c net.Conn) { c.Close() }).Port
	}
	return ports
}

// httpTargets starts n loopback HTTP/1.1 responders and returns their
// ports. Each answers every connection's request with 200 and a short body
// and closes it (probes open a connection a run, as check_http). They are
// not net/http servers on purpose: the targets share the machine's two
// cores with the daemon, and a net/http server's goroutine, buffers and
// parsing for each connection took a third of the machine, which a real
// deployment's targets, on other hosts, do not take from the daemon.
func httpTargets(b testing.TB, n int) []int {
	b.Helper()
	const reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nall good\n"
	ports := make([]int, n)
	var wg sync.WaitGroup
	// Cleanups run last registered first: this one after every listener
	// is closed.
	b.Cleanup(wg.Wait)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		b.Cleanup(func() { l.Close() })
		wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Go(func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					// The request, to the blank line that ends its headers.
					var req []byte
					buf := make([]byte, 1024)
					for !bytes.Contains(req, []byte("\r\n\r\n")) {
						k, err := c.Read(buf)
						if err != nil {
							return
						}
						req = append(req, buf[:k]...)
					}
					_, _ = io.WriteString(c, reply)
				})
			}
		})
	}
	return ports
}

// metricSum returns the sum of every series of the daemon's /metrics
// whose name is name, whatever its labels.
func (d *benchDaemon) metricSum(b testing.TB, name string) float64 {
	b.Helper()
	return scrapeMetric(b, http.DefaultClient, "http://"+d.control+"/metrics", name)
}

// saveProfile saves the daemon's /debug/pprof/<path> as <name>.pb.gz in
// $DMONITOR_BENCH_PROFILES, when it is set.
func (d *benchDaemon) saveProfile(b testing.TB, name, path string) {
	b.Helper()
	dir := os.Getenv("DMONITOR_BENCH_PROFILES")
	if dir == "" {
		return
	}
	resp, err := http.Get("http://" + d.control + "/debug/pprof/" + path)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("/debug/pprof/%s: %s", path, resp.Status)
	}
	file := filepath.Join(dir, name+".pb.gz")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		b.Fatalf("/debug/pprof/%s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("profile saved: %s", file)
}

// machineIdle returns the idle and the total CPU time of the machine, in
// clock ticks, from the first line of /proc/stat. The share of idle time
// over a window shows whether the daemon and its targets had the machine's
// cores to themselves or shared them with other work.
func machineIdle(b testing.TB) (idle, total float64) {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	// user nice system idle iowait irq softirq steal (guest is in user).
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q: %v", line, err)
		}
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return idle, total
}

// daemonWindow is what one measuring window of a running daemon saw.
type daemonWindow struct {
	checks, skipped, points float64
	wall, cpu               time.Duration
	// selfCPU is this process's CPU time meanwhile: the loopback targets
	// it serves, and the benchmark's own polling.
	selfCPU time.Duration
	idle    float64 // the machine's idle share of the window, 0 to 1
	// transitions of alert instances: none while every check is OK and
	// runs often enough for its results to stay fresh (2× the interval).
	transitions float64
}

// measureDaemon waits until the daemon has completed ramp checks, then
// measures it for benchWindow, and fails unless every check was OK, every
// point reached the store and each check wrote perCheck points. prof names
// the CPU profile saved after the window, if profiles are asked for.
func measureDaemon(b *testing.B, d *benchDaemon, ramp int, perCheck float64, prof string) daemonWindow {
	b.Helper()
	awaitBench(b, "the ramp's checks", 2*time.Minute, func() bool { return d.sample(b).checks >= float64(ramp) })
	tr0 := d.metricSum(b, "dmonitor_alert_transitions_total")
	i0, t0 := machineIdle(b)
	self0 := benchSelfCPU()
	s0 := d.sample(b)
	time.Sleep(benchWindow) // the measuring window itself, not a wait for an event
	s1 := d.sample(b)
	self1 := benchSelfCPU()
	i1, t1 := machineIdle(b)
	tr1 := d.metricSum(b, "dmonitor_alert_transitions_total")
	if prof != "" {
		d.saveProfile(b, prof, "profile?seconds=10")
	}
	dropped := d.metricSum(b, "dmonitor_writer_dropped_points_total")

	w := daemonWindow{
		checks: s1.checks - s0.checks, skipped: s1.skipped - s0.skipped, points: s1.points - s0.points,
		wall: s1.at.Sub(s0.at), cpu: s1.cpu - s0.cpu, selfCPU: self1 - self0,
		idle: (i1 - i0) / (t1 - t0), transitions: tr1 - tr0,
	}
	switch {
	case w.checks <= 0:
		b.Fatalf("no checks completed in %v", w.wall)
	case s1.notOK > 0:
		b.Fatalf("%v of %v checks were not OK: the daemon did not run them as configured, or a target failed", s1.notOK, s1.checks)
	case s1.appendErrors > 0 || dropped > 0:
		b.Fatalf("%v appends to the store failed and %v points were dropped: results were not written", s1.appendErrors, dropped)
	// Points are counted once appended, checks once queued, so the
	// writer's queue lets them part a little at the edges of the window;
	// the heartbeat adds a point a second.
	case w.points < 0.95*perCheck*w.checks:
		b.Fatalf("%v points written for %v checks, want %v per check: results are not reaching the store", w.points, w.checks, perCheck)
	}
	return w
}

// BenchmarkProbesVsFloor runs, in the real daemon, tcp probes (and http
// probes in the second sub-benchmark) against loopback listeners of this
// process, somewhat more checks at a 1 s interval than a 2-core machine can
// run, so that the daemon is CPU-bound and skips the runs that come due
// while the previous run of the same check is still waiting for a probe
// slot. Every result is written to the embedded store. In the same run it
// measures the fork floor of BenchmarkDaemonVsFloor (a bare os/exec loop
// of check_dummy with as many workers): probes/floor is how many probe
// checks the daemon completes for each plugin run the machine could fork,
// the target being 10.
//
// The load is not raised further on purpose: past about twice what the
// machine runs, each check runs less often than every 2 s, its results go
// stale, every instance goes to Unknown and back, and the writer spends
// itself on the annotations of those transitions (docs/BENCHMARKS.md,
// "Probes"); what would be measured is that collapse, not the probes.
func BenchmarkProbesVsFloor(b *testing.B) {
	plugin := benchPlugin(b)
	const workers = 64
	bin := buildDaemon(b)
	kinds := []struct {
		name     string
		targets  int
		perCheck float64 // points per check: status, duration, perfdata
		ports    func(testing.TB, int) []int
		probe    func(port int) string
	}{
		{"tcp", 20000, 3, tcpTargets, func(port int) string {
			return fmt.Sprintf("{type: tcp, host: 127.0.0.1, port: %d}", port)
		}},
		{"http", 12000, 4, httpTargets, func(port int) string {
			return fmt.Sprintf("{type: http, url: \"http://127.0.0.1:%d/\", expect_status: [200], body_contains: good}", port)
		}},
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			control := benchControl(b)
			var yaml strings.Builder
			fmt.Fprintf(&yaml, "observer: bench\ninterval: 1s\ntimeout: 5s\nworkers: %d\nprobe_workers: %d\ntsdb: {listen: \"\"}\ncontrol: {listen: %q}\nchecks:\n", workers, workers, control)
			ports := k.ports(b, probeListeners)
			checks := make([]string, len(ports))
			for i, p := range ports {
				checks[i] = fmt.Sprintf("%s%d", k.name, i)
				fmt.Fprintf(&yaml, "  %s:\n    probe: %s\n", checks[i], k.probe(p))
			}
			dir := writeBenchTree(b, yaml.String(), benchHosts(k.targets/len(checks)), checks)

			var dw daemonWindow
			var fRuns int64
			var fWall, fCPU time.Duration
			for b.Loop() {
				d := startBenchDaemon(b, bin, dir, control)
				// Two intervals' worth of checks: the splay's ramp has
				// passed and the store's series exist.
				w := measureDaemon(b, d, 2*k.targets, k.perCheck, "probes-"+k.name+"-cpu")
				d.stop(b)
				dw.checks += w.checks
				dw.skipped += w.skipped
				dw.points += w.points
				dw.wall += w.wall
				dw.cpu += w.cpu
				dw.selfCPU += w.selfCPU
				dw.idle = w.idle
				dw.transitions += w.transitions

				runs, wall, cpu := execFloor(b, workers, benchWindow, plugin, "0", "ok")
				fRuns += runs
				fWall += wall
				fCPU += cpu
			}
			dRate, fRate := dw.checks/dw.wall.Seconds(), float64(fRuns)/fWall.Seconds()
			b.ReportMetric(dRate, "probe_checks/s")
			b.ReportMetric(fRate, "floor_runs/s")
			b.ReportMetric(dRate/fRate, "probes/floor")
			// The loopback targets are not part of a monitor; on a
			// saturated machine, the rate with them on other hosts is
			// about this one scaled by the CPU they took. An estimate:
			// their share of the loopback's kernel work is a guess.
			if busy := float64(runtime.NumCPU()) * (1 - dw.idle); busy > 0 {
				targets := dw.selfCPU.Seconds() / dw.wall.Seconds()
				b.ReportMetric(dRate*busy/(busy-targets)/fRate, "probes/floor_targets_apart")
			}
			b.ReportMetric(dw.cpu.Seconds()*1e6/dw.checks, "daemon_cpu_us/probe")
			b.ReportMetric(fCPU.Seconds()*1e6/float64(fRuns), "floor_cpu_us/run")
			b.ReportMetric(dw.cpu.Seconds()/dw.wall.Seconds(), "daemon_cores")
			b.ReportMetric(dw.selfCPU.Seconds()/dw.wall.Seconds(), "targets_cores")
			b.ReportMetric(100*dw.idle, "machine_idle_%")
			b.ReportMetric(dw.skipped/dw.wall.Seconds(), "skipped/s")
			b.ReportMetric(dw.points/dw.checks, "points/check")
			b.ReportMetric(dw.transitions, "transitions")
		})
	}
}

// BenchmarkRSS100kProbes runs the daemon with 100,000 tcp probe checks
// (10,000 hosts with 10 checks each, every check probing one of ten
// loopback listeners) at a 60 s interval, about 1,700 probes a second,
// until every check has run and its series exist in the store; then it
// reports the daemon's resident memory, its peak, the Go heap in use and
// the live heap (after a forced collection), and the memory per check
// above an idle daemon measured in the same run. It does so three times:
// with the default configuration (no memory limit without a cgroup limit,
// so the collector lets the heap grow to twice the live data); with
// limits.memory set to rssLimit, the CPU per check of each showing what the
// limit costs; and with the TSDB on another node (backend: opentsdb, the
// OpenTSDB API of a second dmonitor's embedded store), as a deployment
// with OpenTSDB runs it, which measures the checking apart from the
// storage. The target is an RSS under 400 MiB.
func BenchmarkRSS100kProbes(b *testing.B) {
	bin := buildDaemon(b)
	control := benchControl(b)
	idleDir := writeBenchTree(b, rss100kHead(control, noTSDB), nil, nil)
	ports := tcpTargets(b, rss100kPerHost)
	dir := rss100kTree(b, control, noTSDB, ports, "")
	limitedDir := rss100kTree(b, control, noTSDB, ports, rssLimit)
	storeControl, storeListen := benchControl(b), benchControl(b)
	// The store node takes the checking node's 300,000 new series in its
	// first minute: past the API's default bound for new series.
	storeDir := writeBenchTree(b, rss100kHead(storeControl, fmt.Sprintf("{listen: %q}", storeListen))+
		"limits: {new_series_per_minute: 1000000}\n", nil, nil)
	remoteDir := rss100kTree(b, control, fmt.Sprintf("{backend: opentsdb, url: \"http://%s\"}", storeListen), ports, "")
	const targets = rss100kHosts * rss100kPerHost

	var idleRSS float64
	var def, lim, remote rssSample
	for b.Loop() {
		d := startBenchDaemon(b, bin, idleDir, control)
		idleRSS, _ = procMemKiB(b, d.cmd.Process.Pid)
		d.stop(b)
		def = rssRun(b, bin, dir, control, targets, "rss100k-heap")
		lim = rssRun(b, bin, limitedDir, control, targets, "rss100k-limited-heap")
		store := startBenchDaemon(b, bin, storeDir, storeControl)
		remote = rssRun(b, bin, remoteDir, control, targets, "rss100k-opentsdb-heap")
		awaitBench(b, "the checking node's series in the store node", time.Minute, func() bool {
			return store.metricSum(b, "dmonitor_tsdb_series") >= 3*targets
		})
		store.stop(b)
	}
	for _, r := range []struct {
		prefix string
		s      rssSample
	}{{"", def}, {"limited_", lim}, {"tsdb_apart_", remote}} {
		b.ReportMetric(r.s.rss/1024, r.prefix+"rss_MiB")
		b.ReportMetric(r.s.hwm/1024, r.prefix+"hwm_MiB")
		b.ReportMetric(r.s.heapInuse/(1<<20), r.prefix+"heap_inuse_MiB")
		b.ReportMetric(r.s.live/(1<<20), r.prefix+"live_heap_MiB")
		b.ReportMetric((r.s.rss-idleRSS)/targets, r.prefix+"KiB/check")
		b.ReportMetric(r.s.cpu.Seconds()*1e6/r.s.ran, r.prefix+"daemon_cpu_us/check")
		b.ReportMetric(r.s.took.Seconds(), r.prefix+"s_to_all_run")
	}
	b.ReportMetric(idleRSS/1024, "idle_rss_MiB")
	b.ReportMetric(def.ran, "checks_run")
}

// The node of BenchmarkRSS100kProbes: 10,000 hosts with 10 tcp probe
// checks each at 60 s. rssLimit leaves the 400 MiB target room for what
// the runtime does not count (the executable's pages, C memory): about
// 15 MiB.
const (
	rss100kHosts, rss100kPerHost = 10000, 10
	rssLimit                     = "350MiB"
)

// noTSDB is the tsdb: of a node whose embedded store serves no API.
const noTSDB = `{listen: ""}`

func rss100kHead(control, tsdb string) string {
	return fmt.Sprintf("observer: bench\ninterval: 60s\ntimeout: 5s\ntsdb: %s\ncontrol: {listen: %q}\n", tsdb, control)
}

// rss100kTree writes the configuration of BenchmarkRSS100kProbes, each
// host's checks probing ports, its tsdb: as given, with limits.memory:
// limit unless "".
func rss100kTree(b *testing.B, control, tsdb string, ports []int, limit string) string {
	b.Helper()
	var yaml strings.Builder
	yaml.WriteString(rss100kHead(control, tsdb))
	if limit != "" {
		yaml.WriteString("limits: {memory: " + limit + "}\n")
	}
	yaml.WriteString("checks:\n")
	checks := make([]string, len(ports))
	for i, p := range ports {
		checks[i] = fmt.Sprintf("port%d", i)
		fmt.Fprintf(&yaml, "  %s:\n    probe: {type: tcp, host: 127.0.0.1, port: %d}\n", checks[i], p)
	}
	return writeBenchTree(b, yaml.String(), benchHosts(rss100kHosts), checks)
}

// BenchmarkRSS100kProbesLong runs the node of BenchmarkRSS100kProbes with
// and without limits.memory side by side for DMONITOR_BENCH_LONG (a
// duration; skipped without it), logging each one's resident memory, heap
// in use, live heap at the last collection and CPU a check every minute:
// the steady state, with the engine's head chunks filling over their two
// hours and cut, which the 68-second benchmark only estimates. It reports
// the peaks and the last minute's figures.
func BenchmarkRSS100kProbesLong(b *testing.B) {
	long, err := time.ParseDuration(os.Getenv("DMONITOR_BENCH_LONG"))
	if err != nil {
		b.Skip("set DMONITOR_BENCH_LONG to a duration (2h reaches the engine's first chunk cut whatever the start)")
	}
	bin := buildDaemon(b)
	ports := tcpTargets(b, rss100kPerHost)
	type node struct {
		prefix, dir, control string
		d                    *benchDaemon
		first, last          daemonSample
		peakRSS, peakLive    float64
	}
	nodes := []*node{{prefix: ""}, {prefix: "limited_"}}
	for _, n := range nodes {
		n.control = benchControl(b)
		limit := ""
		if n.prefix != "" {
			limit = rssLimit
		}
		n.dir = rss100kTree(b, n.control, noTSDB, ports, limit)
	}
	for b.Loop() {
		start := time.Now()
		for _, n := range nodes {
			n.d = startBenchDaemon(b, bin, n.dir, n.control)
			n.first = n.d.sample(b)
			n.last = n.first
		}
		tick := time.NewTicker(time.Minute)
		for time.Since(start) < long {
			<-tick.C
			for _, n := range nodes {
				s := n.d.sample(b)
				rss, hwm := procMemKiB(b, n.d.cmd.Process.Pid)
				live := n.d.metricSum(b, "go_gc_heap_live_bytes")
				cpu := (s.cpu - n.last.cpu).Seconds() * 1e6 / (s.checks - n.last.checks)
				n.last = s
				n.peakRSS, n.peakLive = max(n.peakRSS, rss), max(n.peakLive, live)
				b.Logf("%s %v: RSS %.0f MiB (peak %.0f), heap in use %.0f MiB, live %.0f MiB, %.0f µs a check",
					cmp.Or(n.prefix, "default_"), time.Since(start).Round(time.Minute), rss/1024, hwm/1024, s.heapInuse/(1<<20), live/(1<<20), cpu)
				if s.notOK > 0 || s.appendErrors > 0 {
					b.Fatalf("%s: %v checks not OK, %v append errors", n.dir, s.notOK, s.appendErrors)
				}
			}
		}
		tick.Stop()
		for _, n := range nodes {
			rss, hwm := procMemKiB(b, n.d.cmd.Process.Pid)
			// go test keeps only the first lines a benchmark logs: the
			// end of the run is reported here too.
			b.ReportMetric(rss/1024, n.prefix+"rss_MiB")
			b.ReportMetric(n.d.metricSum(b, "go_gc_heap_live_bytes")/(1<<20), n.prefix+"live_heap_MiB")
			b.ReportMetric((n.last.cpu-n.first.cpu).Seconds()*1e6/(n.last.checks-n.first.checks), n.prefix+"daemon_cpu_us/check")
			b.ReportMetric(hwm/1024, n.prefix+"hwm_MiB")
			b.ReportMetric(n.peakRSS/1024, n.prefix+"peak_sampled_rss_MiB")
			b.ReportMetric(n.peakLive/(1<<20), n.prefix+"peak_live_heap_MiB")
			n.d.stop(b)
		}
	}
}

// rssSample is what rssRun measured of one daemon.
type rssSample struct {
	rss, hwm  float64 // KiB
	heapInuse float64 // bytes, garbage included
	live      float64 // bytes of heap a forced collection found live
	ran       float64 // checks run
	cpu       time.Duration
	took      time.Duration // from start until every check had run
}

// rssRun starts the daemon on dir, waits until each of its targets checks
// has run, measures its memory, then the live heap after a forced
// collection (saving that heap profile as prof when profiles are asked
// for), and stops it. It fails unless every check was OK and wrote its
// three points (status, duration, the time perfdata).
func rssRun(b *testing.B, bin, dir, control string, targets int, prof string) rssSample {
	b.Helper()
	start := time.Now()
	d := startBenchDaemon(b, bin, dir, control)
	// Each check runs once in its first interval, splayed over it: 10%
	// more runs than checks is past the first interval's last one.
	var s daemonSample
	var peak float64
	var peakAt time.Duration
	awaitBench(b, "every check to have run", 3*time.Minute, func() bool {
		s = d.sample(b)
		if rss, _ := procMemKiB(b, d.cmd.Process.Pid); rss > peak {
			peak, peakAt = rss, time.Since(start)
		}
		return s.checks >= float64(targets)*11/10
	})
	r := rssSample{took: time.Since(start), ran: s.checks, cpu: s.cpu, heapInuse: s.heapInuse}
	r.rss, r.hwm = procMemKiB(b, d.cmd.Process.Pid)
	b.Logf("%s: RSS %.1f MiB at the end, at most %.1f MiB (%v after the start) as sampled, peak %.1f MiB", dir, r.rss/1024, peak/1024, peakAt.Round(time.Second), r.hwm/1024)
	// After the resident memory: the forced collection changes it.
	forceGC(b, d)
	d.saveProfile(b, prof, "heap")
	r.live = d.metricSum(b, "go_gc_heap_live_bytes")
	dropped := d.metricSum(b, "dmonitor_writer_dropped_points_total")
	d.stop(b)
	switch {
	case s.notOK > 0:
		b.Fatalf("%v of %v probe checks were not OK", s.notOK, s.checks)
	case s.appendErrors > 0 || dropped > 0 || s.points < float64(3*targets):
		b.Fatalf("%v points written, %v append errors, %v dropped after %v checks: want at least %d points", s.points, s.appendErrors, dropped, s.checks, 3*targets)
	}
	return r
}

// forceGC makes the daemon collect its garbage (net/http/pprof's heap
// profile does with gc=1), so that the live heap it reports
// (go_gc_heap_live_bytes, what the last collection marked) is that of
// now.
func forceGC(b testing.TB, d *benchDaemon) {
	b.Helper()
	resp, err := http.Get("http://" + d.control + "/debug/pprof/heap?gc=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("/debug/pprof/heap?gc=1: %s", resp.Status)
	}
}

// BenchmarkDaemonVsFloorRedis is BenchmarkDaemonVsFloor on a node in redis
// mode (redis.url set, a real redis-server), where results are also
// published to Redis: 2,000 check_dummy checks at 1 s against the bare
// os/exec floor in the same run, and each one's own CPU per run. The
// issue's target is a cpu_ratio of at most 1.3. published/check is the
// share of results that reached Redis (counted by a subscriber of the
// results channel over the daemon's whole run): below 1, the publisher
// fell behind and sent only each check's newest result.
func BenchmarkDaemonVsFloorRedis(b *testing.B) {
	plugin := benchPlugin(b)
	const targets, workers = 2000, 64
	bin := buildDaemon(b)
	rd := redistest.Start(b)
	control := benchControl(b)
	dir := writeBenchTree(b, fmt.Sprintf(`observer: bench
interval: 1s
workers: %d
tsdb: {listen: ""}
control: {listen: %q}
redis: {url: %q}
checks:
  dummy:
    command: [check_dummy, "0", "ok"]
`, workers, control, rd.URL()), benchHosts(targets), []string{"dummy"})

	// Every result published reaches the subscribers of the results
	// channel: counting them shows the results do go to Redis.
	ps := rd.Client(b).Subscribe(b.Context(), redisshare.DefaultPrefix+"results")
	if _, err := ps.Receive(b.Context()); err != nil {
		b.Fatal(err)
	}
	var published atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for range ps.Channel() {
			published.Add(1)
		}
	})
	b.Cleanup(func() { _ = ps.Close(); wg.Wait() })

	var dw daemonWindow
	var fRuns int64
	var fWall, fCPU time.Duration
	var perCheck float64
	for b.Loop() {
		p0 := published.Load()
		d := startBenchDaemon(b, bin, dir, control)
		w := measureDaemon(b, d, 2*targets, 2, "redis-cpu")
		ran := d.sample(b).checks
		d.stop(b)
		// The publisher keeps only the newest result of a check while
		// Redis lags, so fewer may go out than ran: published/check says
		// how many did, and the CPU figures are for that share.
		n := published.Load() - p0
		if n == 0 {
			b.Fatalf("no result published to Redis for %v checks: the node is not in redis mode", ran)
		}
		perCheck = float64(n) / ran
		dw.checks += w.checks
		dw.skipped += w.skipped
		dw.wall += w.wall
		dw.cpu += w.cpu
		dw.idle = w.idle

		runs, wall, cpu := execFloor(b, workers, benchWindow, plugin, "0", "ok")
		fRuns += runs
		fWall += wall
		fCPU += cpu
	}
	reportVsFloor(b, dw.checks, dw.skipped, dw.wall, dw.cpu, fRuns, fWall, fCPU)
	b.ReportMetric(100*dw.idle, "machine_idle_%")
	b.ReportMetric(perCheck, "published/check")
}
