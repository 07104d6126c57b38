package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/miekg/dns"

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

// `dmonitor check` runs a dns probe check against a DNS server on
// loopback: the expected answer found is OK, another is CRITICAL naming
// both, as check_dns says.
func TestCheckCommandRunsDNSProbe(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Name == "www.test." && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(127, 0, 0, 7)})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })

	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`checks:
  www:
    probe: {type: dns, name: www.test, record_type: A, server: %q, expect: [127.0.0.7]}
  moved:
    probe: {type: dns, name: www.test, record_type: A, server: %q, expect: [127.0.0.8]}
`, pc.LocalAddr().String(), pc.LocalAddr().String()),
	})
	code, out, stderr := runMain(t, "check", "--config", dir, "127.0.0.1", "www")
	if code != 0 || !strings.Contains(out, "DNS OK") || !strings.Contains(out, "127.0.0.7") {
		t.Errorf("dmonitor check on a dns probe: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runMain(t, "check", "--config", dir, "127.0.0.1", "moved")
	if code != 2 || !strings.Contains(out, "DNS CRITICAL - expected '127.0.0.8' but got '127.0.0.7'") {
		t.Errorf("dmonitor check on a dns probe expecting another answer: exit %d\n%s%s", code, out, stderr)
	}
}
