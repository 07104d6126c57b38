package probe

import (
	"context"
	"errors"
	"math"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/plugin"
)

// pluginDir is where Debian's monitoring-plugins are installed; make test
// installs them (scripts/test-deps).
const pluginDir = "/usr/lib/nagios/plugins/"

// runPlugin runs one of Debian's plugins and parses its output as the
// daemon does.
func runPlugin(t *testing.T, name string, args ...string) plugin.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pluginDir+name, args...)
	cmd.Env = []string{"LC_ALL=C"} // and the zone of the test, as the probe
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v (install monitoring-plugins-basic)", name, strings.Join(args, " "), err)
	}
	return plugin.Parse(out, code)
}

// comparison is one row of a probe-against-plugin table: what both must
// say. Status is asserted on both, so a probe that stops judging a case
// fails even if the plugin changed too.
type comparison struct {
	status check.Status
	// phrases must occur in both outputs: the meaning, not the wording.
	phrases []string
	// probeOnly and pluginOnly are phrases each words its own way, e.g.
	// the response time the probe measured.
	probeOnly, pluginOnly []string
}

// compare checks a probe's result against the plugin's output for the same
// target, field by field: status, raw word and exit code, the key phrases
// of the message, and perfdata label by label (unit, thresholds, min and
// max equal; the values are timings and sizes, so only their sign).
func compare(t *testing.T, got check.Result, plug plugin.Output, want comparison) {
	t.Helper()
	if plug.Status != want.status {
		t.Errorf("plugin status %v, want %v (output %q)", plug.Status, want.status, plug.Output)
	}
	if got.Status != want.status {
		t.Errorf("probe status %v, want %v (output %q)", got.Status, want.status, got.Output)
	}
	if got.Raw != plug.Raw || got.ExitCode != int(got.Status) {
		t.Errorf("probe raw %q exit %d, plugin raw %q", got.Raw, got.ExitCode, plug.Raw)
	}
	for _, ph := range want.phrases {
		if !strings.Contains(plug.Output, ph) {
			t.Errorf("plugin output %q lacks %q", plug.Output, ph)
		}
		if !strings.Contains(got.Output, ph) {
			t.Errorf("probe output %q lacks %q", got.Output, ph)
		}
	}
	for _, ph := range want.probeOnly {
		if !strings.Contains(got.Output, ph) {
			t.Errorf("probe output %q lacks %q", got.Output, ph)
		}
	}
	for _, ph := range want.pluginOnly {
		if !strings.Contains(plug.Output, ph) {
			t.Errorf("plugin output %q lacks %q", plug.Output, ph)
		}
	}
	if len(got.Perf) != len(plug.Perf) {
		t.Fatalf("probe perfdata %+v, plugin %+v: different items", got.Perf, plug.Perf)
	}
	for i, g := range got.Perf {
		p := plug.Perf[i]
		if g.Label != p.Label || g.UOM != p.UOM {
			t.Errorf("perf %d: probe %s[%s], plugin %s[%s]", i, g.Label, g.UOM, p.Label, p.UOM)
		}
		if g.Warn != p.Warn || g.Crit != p.Crit {
			t.Errorf("perf %s: probe warn/crit %q/%q, plugin %q/%q", g.Label, g.Warn, g.Crit, p.Warn, p.Crit)
		}
		if !sameOpt(g.Min, p.Min) || !sameOpt(g.Max, p.Max) {
			t.Errorf("perf %s: probe min/max %v/%v, plugin %v/%v", g.Label, fmtOpt(g.Min), fmtOpt(g.Max), fmtOpt(p.Min), fmtOpt(p.Max))
		}
		if (g.Value > 0) != (p.Value > 0) || g.Value < 0 || p.Value < 0 {
			t.Errorf("perf %s: probe value %v, plugin %v: not both positive", g.Label, g.Value, p.Value)
		}
		if g.Text == "" {
			t.Errorf("perf %s: probe gives no Text", g.Label)
		}
		// A probe's time is measured to 2⁻²⁰ s (check.Seconds), which
		// the store compresses.
		if g.Label == "time" && math.Mod(g.Value, 1.0/(1<<20)) != 0 {
			t.Errorf("perf time: probe value %v is not to 2⁻²⁰ s", g.Value)
		}
	}
}

func sameOpt(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func fmtOpt(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', -1, 64)
}

// tcpServer is a loopback TCP target: after delay it writes banner (if
// any), shuts its side down, and waits for the client to close. Its
// goroutines end when the test's cleanup closes the listener.
type tcpServer struct {
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup
}

func startTCP(t testing.TB, delay time.Duration, banner string) (port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, delay, banner)
}

// serveOn serves ln as startTCP does (ln may be a TLS listener).
func serveOn(t testing.TB, ln net.Listener, delay time.Duration, banner string) (port int) {
	t.Helper()
	s := &tcpServer{ln: ln, done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve(delay, banner)
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
		s.wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *tcpServer) serve(delay time.Duration, banner string) {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			// Closing the connection unblocks the drain below when the
			// test ends first.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				select {
				case <-s.done:
					c.Close()
				case <-stop:
				}
			}()
			if delay > 0 {
				tm := time.NewTimer(delay)
				select {
				case <-tm.C:
				case <-s.done:
					tm.Stop()
					return
				}
			}
			if banner != "" {
				if _, err := c.Write([]byte(banner)); err != nil {
					return
				}
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			}
			// Drain until the client closes, so that what it sent never
			// turns our close into a reset.
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
}

// closedPort returns a loopback port that nothing listens on.
func closedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// secs writes d as a plugin's -w/-c/-t argument.
func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
