package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
)

// httpService is an HTTP server on loopback that can be stopped and
// started again on the same port.
type httpService struct {
	addr string
	srv  *http.Server
}

func startHTTPService(t *testing.T, addr string) *httpService {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "all good\n")
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	s := &httpService{addr: l.Addr().String(), srv: srv}
	t.Cleanup(func() { s.stop(); <-done })
	return s
}

func (s *httpService) stop() { _ = s.srv.Close() }

func (s *httpService) port() string {
	_, p, _ := net.SplitHostPort(s.addr)
	return p
}

// TestProbeChecks runs a tcp and an http probe check from dmonitor.yaml
// against loopback services, with no plugin at all: each is seen ok,
// fires by the default rule when its service stops, and resolves when it
// comes back.
func TestProbeChecks(t *testing.T) {
	tcpSvc := startService(t, "127.0.0.1:0")
	web := startHTTPService(t, "127.0.0.1:0")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
timeout: 5s
control: {listen: %q}
tsdb: {listen: ""}
checks:
  port:
    probe: {type: tcp, host: "{{host}}", port: %s, expect: hello}
  web:
    probe: {type: http, url: "http://{{host}}:%s/", expect_status: [200], body_contains: good}
`, control, tcpSvc.port(), web.port()),
		"hosts.d/127.0.0.1/port": "",
		"hosts.d/127.0.0.1/web":  "",
	})
	d := startDaemon(t, dir, control)
	for _, chk := range []string{"port", "web"} {
		await.Until(t, chk+" seen ok", func() bool { return d.state(t, "127.0.0.1", chk) == "ok" })
	}

	tcpSvc.l.Close()
	web.stop()
	for _, chk := range []string{"port", "web"} {
		await.Until(t, chk+" firing", func() bool { return d.state(t, "127.0.0.1", chk) == "firing" })
	}

	startService(t, tcpSvc.addr)
	startHTTPService(t, web.addr)
	for _, chk := range []string{"port", "web"} {
		await.Until(t, chk+" ok again", func() bool { return d.state(t, "127.0.0.1", chk) == "ok" })
	}
	d.stop(t)
}

// `dmonitor check` runs a probe check by hand, as the daemon would.
func TestCheckCommandRunsProbe(t *testing.T) {
	svc := startService(t, "127.0.0.1:0")
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf("checks:\n  port:\n    probe: {type: tcp, host: \"{{host}}\", port: %s}\n", svc.port()),
	})
	code, out, stderr := runMain(t, "check", "--config", dir, "127.0.0.1", "port")
	if code != 0 || !strings.Contains(out, "TCP OK") || !strings.Contains(out, "time = ") {
		t.Errorf("dmonitor check on a tcp probe: exit %d\n%s%s", code, out, stderr)
	}
}
