package plugin

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/internal/loopback"
)

// pluginDir is where Debian's monitoring-plugins package installs.
const pluginDir = "/usr/lib/nagios/plugins/"

// listen serves TCP on a loopback port, closing every connection at once,
// and returns the port.
func listen(t *testing.T) string {
	t.Helper()
	return strconv.Itoa(loopback.Serve(t, func(c net.Conn) { c.Close() }).Port)
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(t, ln.Addr().String())
	ln.Close()
	return p
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func httpServer(t *testing.T, code int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return port(t, strings.TrimPrefix(srv.URL, "http://"))
}

// perfByLabel finds the item labelled label, failing the test without it.
func perfByLabel(t *testing.T, perf []check.Perf, label string) check.Perf {
	t.Helper()
	for _, p := range perf {
		if p.Label == label {
			return p
		}
	}
	t.Fatalf("no perfdata %q in %+v", label, perf)
	return check.Perf{}
}

// TestDebianPlugins runs the real monitoring-plugins against services on
// loopback and checks what dmonitor makes of their output.
func TestDebianPlugins(t *testing.T) {
	if _, err := os.Stat(pluginDir + "check_dummy"); err != nil {
		t.Skipf("monitoring-plugins not installed: %v", err)
	}
	const body = "hello from the test server"
	tests := []struct {
		name    string
		argv    func(t *testing.T) []string
		status  check.Status
		message string // a substring of Output
		perf    func(t *testing.T, perf []check.Perf)
	}{
		{
			// A listening port: OK, with the connect time in seconds.
			name:    "check_tcp open",
			argv:    func(t *testing.T) []string { return []string{"check_tcp", "-H", "127.0.0.1", "-p", listen(t)} },
			status:  check.OK,
			message: "TCP OK",
			perf: func(t *testing.T, perf []check.Perf) {
				p := perfByLabel(t, perf, "time")
				if p.UOM != "s" || p.Value < 0 || p.Value > 10 || p.Max == nil || *p.Max != 10 {
					t.Errorf("time perfdata %+v: want seconds in [0,10], max 10", p)
				}
			},
		},
		{
			// Nothing listens: CRITICAL with the OS's reason.
			name:    "check_tcp closed",
			argv:    func(t *testing.T) []string { return []string{"check_tcp", "-H", "127.0.0.1", "-p", closedPort(t)} },
			status:  check.Critical,
			message: "Connection refused",
		},
		{
			// 200: OK, with response time and body size.
			name: "check_http 200",
			argv: func(t *testing.T) []string {
				return []string{"check_http", "-H", "127.0.0.1", "-p", httpServer(t, 200, body), "-u", "/"}
			},
			status:  check.OK,
			message: "HTTP OK",
			perf: func(t *testing.T, perf []check.Perf) {
				if p := perfByLabel(t, perf, "time"); p.UOM != "s" || p.Value < 0 {
					t.Errorf("time perfdata %+v", p)
				}
				// check_http counts the headers too, so the size exceeds the body.
				if p := perfByLabel(t, perf, "size"); p.UOM != "B" || p.Value <= float64(len(body)) || p.Min == nil || *p.Min != 0 {
					t.Errorf("size perfdata %+v: want bytes > %d, min 0", p, len(body))
				}
			},
		},
		{
			// A server error is CRITICAL.
			name: "check_http 500",
			argv: func(t *testing.T) []string {
				return []string{"check_http", "-H", "127.0.0.1", "-p", httpServer(t, 500, "broken"), "-u", "/"}
			},
			status:  check.Critical,
			message: "500",
		},
		{
			// check_dummy returns the status it is told, with the text.
			name:    "check_dummy 0",
			argv:    func(*testing.T) []string { return []string{"check_dummy", "0", "all good"} },
			status:  check.OK,
			message: "OK: all good",
		},
		{
			name:    "check_dummy 1",
			argv:    func(*testing.T) []string { return []string{"check_dummy", "1", "getting full"} },
			status:  check.Warning,
			message: "WARNING: getting full",
		},
		{
			name:    "check_dummy 2",
			argv:    func(*testing.T) []string { return []string{"check_dummy", "2", "down"} },
			status:  check.Critical,
			message: "CRITICAL: down",
		},
		{
			name:    "check_dummy 3",
			argv:    func(*testing.T) []string { return []string{"check_dummy", "3", "no idea"} },
			status:  check.Unknown,
			message: "UNKNOWN: no idea",
		},
		{
			// A status outside the API: the plugin itself says UNKNOWN.
			name:    "check_dummy 4",
			argv:    func(*testing.T) []string { return []string{"check_dummy", "4", "odd"} },
			status:  check.Unknown,
			message: "not a supported",
		},
		{
			// The root file system, with thresholds and bounds. The unit
			// depends on the monitoring-plugins version (MB before 2.4, B
			// since); in base units the maximum is the file system's size.
			name:    "check_disk /",
			argv:    func(*testing.T) []string { return []string{"check_disk", "-w", "10%", "-c", "5%", "-p", "/"} },
			status:  check.OK,
			message: "DISK OK",
			perf: func(t *testing.T, perf []check.Perf) {
				p := perfByLabel(t, perf, "/")
				if p.UOM != "B" && p.UOM != "MB" {
					t.Errorf("unit %q, want B or MB", p.UOM)
				}
				warn, err1 := strconv.ParseFloat(p.Warn, 64)
				crit, err2 := strconv.ParseFloat(p.Crit, 64)
				if err1 != nil || err2 != nil || p.Min == nil || p.Max == nil {
					t.Fatalf("perfdata %+v: want numeric warn, crit, min and max", p)
				}
				// Used space: warn at 90% of the size, crit at 95%.
				if !(0 < warn && warn < crit && crit < *p.Max && p.Value <= *p.Max) {
					t.Errorf("perfdata %+v: want 0 < warn < crit < max and value <= max", p)
				}
				var fs syscall.Statfs_t
				if err := syscall.Statfs("/", &fs); err != nil {
					t.Fatal(err)
				}
				size := float64(fs.Blocks) * float64(fs.Frsize)
				maxBytes := check.Perf{Value: *p.Max, UOM: p.UOM}.BaseValue()
				if maxBytes < 0.9*size || maxBytes > 1.01*size {
					t.Errorf("max %v%s = %.0f bytes; statfs says %.0f", *p.Max, p.UOM, maxBytes, size)
				}
			},
		},
	}
	r := NewRunner(4, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := tt.argv(t)
			argv[0] = pluginDir + argv[0]
			res := r.Run(testCtx(t, 30*time.Second), Command{Argv: argv})
			t.Logf("%v exit %d: %q %+v", res.Status, res.ExitCode, res.Output, res.Perf)
			if res.Status != tt.status || res.Raw != tt.status.String() || res.ExitCode != int(tt.status) {
				t.Errorf("got %v raw %q exit %d, want %v", res.Status, res.Raw, res.ExitCode, tt.status)
			}
			if !strings.Contains(res.Output, tt.message) || strings.Contains(res.Output, "|") {
				t.Errorf("output %q: want %q in it and no perfdata", res.Output, tt.message)
			}
			if tt.perf != nil {
				tt.perf(t, res.Perf)
			}
		})
	}
}

// TestCheckPing pings loopback, if this host lets check_ping do so.
func TestCheckPing(t *testing.T) {
	r := NewRunner(1, Options{})
	res := r.Run(testCtx(t, 30*time.Second), Command{
		Argv: []string{pluginDir + "check_ping", "-H", "127.0.0.1", "-w", "100,20%", "-c", "200,40%", "-p", "1"},
	})
	if res.Status == check.Unknown {
		t.Skipf("check_ping cannot run here: %s", res.Output)
	}
	if res.Status != check.OK || !strings.Contains(res.Output, "PING OK") {
		t.Fatalf("got %v %q, want OK", res.Status, res.Output)
	}
	rta := perfByLabel(t, res.Perf, "rta")
	if rta.UOM != "ms" || rta.Warn != "100.000000" || rta.Crit != "200.000000" || rta.Value < 0 {
		t.Errorf("rta perfdata %+v: want ms, warn 100, crit 200", rta)
	}
	pl := perfByLabel(t, res.Perf, "pl")
	if pl.UOM != "%" || pl.Value != 0 || pl.Warn != "20" || pl.Crit != "40" {
		t.Errorf("pl perfdata %+v: want 0%%, warn 20, crit 40", pl)
	}
}
