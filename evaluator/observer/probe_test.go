package observer

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/probe"
)

// probeObserver builds (not starts) the schedule of an observer with
// workers for plugins, as many for probes, and the checks given, each on
// host x.
func probeObserver(t *testing.T, workers int, checks ...*config.Check) *Observer {
	t.Helper()
	cfg := &config.Config{Observer: "eu-1", Interval: time.Hour, Workers: workers, ProbeWorkers: workers, Checks: map[string]*config.Check{}}
	for _, c := range checks {
		cfg.Checks[c.Name] = c
		cfg.Targets = append(cfg.Targets, config.Target{Host: "x", Check: c})
	}
	ob := New(Options{
		Config: cfg, Runner: plugin.NewRunner(workers, plugin.Options{}),
		Writer: NewWriter(nil, nil, WriterOptions{}), // never run: Write only queues
	})
	if err := ob.Schedule(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ob.scheduler.Shutdown()
		ob.killChecks()
	})
	return ob
}

// listen serves TCP on a loopback port, serve running on every
// connection, and returns the port.
func listen(t *testing.T, serve func(net.Conn)) int { return loopback.Serve(t, serve).Port }

func tcpCheck(name string, port int, timeout time.Duration) *config.Check {
	return &config.Check{Name: name, Interval: time.Hour, Timeout: timeout, Probe: &config.ProbeSpec{
		Type: config.ProbeTCP, TCP: probe.TCP{Host: "127.0.0.1", Port: port, Expect: "ok"}}}
}

// TestProbeCheckRecorded runs a probe check as the schedule would and
// finds its result recorded as a plugin's: status, output and perfdata of
// check_tcp, host, check and observer filled in.
func TestProbeCheckRecorded(t *testing.T) {
	port := listen(t, func(c net.Conn) { _, _ = io.WriteString(c, "ok\r\n"); c.Close() })
	ob := probeObserver(t, 1, tcpCheck("port", port, 10*time.Second))
	if !ob.Recheck("x", "port") {
		t.Fatal("no check port on x")
	}
	ob.rechecks.Wait()
	rs, _ := ob.AppendLatest(nil, nil, "x", "port")
	if len(rs) != 1 {
		t.Fatalf("results: %+v", rs)
	}
	r := rs[0]
	want := "TCP OK - "
	if r.Status != check.OK || !strings.HasPrefix(r.Output, want) || !strings.Contains(r.Output, "port "+strconv.Itoa(port)) {
		t.Errorf("result %s %q, want OK %q... on port %d", r.Status, r.Output, want, port)
	}
	if r.Host != "x" || r.Check != "port" || r.Observer != "eu-1" || len(r.Perf) != 1 || r.Perf[0].Label != "time" {
		t.Errorf("result host %q check %q observer %q perf %+v", r.Host, r.Check, r.Observer, r.Perf)
	}
}

// TestProbesNotHeldByPlugins: probes and plugins have bounds of their
// own. With one worker for each, a plugin that hangs (until released,
// standing for a plugin waiting on its timeout) holds no probe back: the
// probe check runs and records OK meanwhile.
func TestProbesNotHeldByPlugins(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	if err := syscall.Mkfifo(release, 0o600); err != nil {
		t.Fatal(err)
	}
	hung := &config.Check{Name: "hung", Interval: time.Hour, Timeout: time.Minute,
		Command: []string{"/bin/sh", "-c", "read x < " + release + "; echo OK"}}
	port := listen(t, func(c net.Conn) { _, _ = io.WriteString(c, "ok\r\n"); c.Close() })
	ob := probeObserver(t, 1, hung, tcpCheck("port", port, 10*time.Second))
	ob.Recheck("x", "hung")
	ob.Recheck("x", "port")
	await.Until(t, "the probe's result", func() bool {
		rs, _ := ob.AppendLatest(nil, nil, "x", "port")
		return len(rs) == 1 && rs[0].Status == check.OK
	})
	if rs, _ := ob.AppendLatest(nil, nil, "x", "hung"); len(rs) != 0 {
		t.Errorf("the hung plugin has a result before its release: %+v", rs)
	}
	// Opening the fifo for writing, and closing it, ends the plugin's read.
	f, err := os.OpenFile(release, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	ob.rechecks.Wait()
	if rs, _ := ob.AppendLatest(nil, nil, "x", "hung"); len(rs) != 1 || rs[0].Status != check.OK {
		t.Errorf("the plugin released: results %+v, want one OK", rs)
	}
}

// TestProbesShareTheWorkerBound runs two probe checks at once with one
// worker against a server that answers only once it holds two connections.
// Bounded, the probe that runs first holds the only slot until its timeout
// (CRITICAL, socket timeout), and only then does the other connect and get
// its answer (OK); unbounded, both would connect and both be OK.
func TestProbesShareTheWorkerBound(t *testing.T) {
	var (
		mu   sync.Mutex
		held []net.Conn
	)
	port := listen(t, func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, c)
		if len(held) < 2 {
			return
		}
		for _, h := range held {
			_, _ = io.WriteString(h, "ok\r\n")
			h.Close()
		}
		held = nil
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, h := range held {
			h.Close()
		}
	})
	ob := probeObserver(t, 1, tcpCheck("a", port, time.Second), tcpCheck("b", port, time.Second))
	ob.Recheck("x", "a")
	ob.Recheck("x", "b")
	ob.rechecks.Wait()

	var timedOut, ok int
	for _, chk := range []string{"a", "b"} {
		rs, _ := ob.AppendLatest(nil, nil, "x", chk)
		if len(rs) != 1 {
			t.Fatalf("check %s: results %+v", chk, rs)
		}
		switch r := rs[0]; {
		case r.Status == check.Critical && strings.Contains(r.Output, "Socket timeout"):
			timedOut++
		case r.Status == check.OK:
			ok++
		default:
			t.Errorf("check %s: %s %q", chk, r.Status, r.Output)
		}
	}
	if timedOut != 1 || ok != 1 {
		t.Errorf("%d timed out and %d ok, want one of each: the probes ran side by side past the bound of one", timedOut, ok)
	}
}
