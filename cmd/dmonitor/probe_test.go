package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/httpserve/tlstest"
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

// TestCertificateProbeChecks runs a tls probe check and an https probe
// check that judges the certificate against one loopback HTTPS server
// whose certificate is replaced while the daemon runs, as an operator's
// renewal (or its failure) would: both are ok with 90 days left, fire when
// the server presents a certificate 3 days from expiry (crit_days 7), with
// the plugins' words in their output, and resolve once it is renewed.
func TestCertificateProbeChecks(t *testing.T) {
	ca := tlstest.NewCA(t, "dmonitor test CA")
	now := time.Now()
	renewed := ca.Server(t, "renewed", now.Add(90*24*time.Hour))
	expiring := ca.Server(t, "expiring", now.Add(3*24*time.Hour+12*time.Hour))
	var cert atomic.Pointer[tls.Certificate]
	cert.Store(&renewed)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "all good\n") }),
		TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert.Load(), nil
		}},
		// The tls probe hangs up after the handshake, which the server logs.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	port := l.Addr().(*net.TCPAddr).Port

	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: e2e
interval: 1s
timeout: 5s
control: {listen: %q}
tsdb: {listen: ""}
checks:
  cert:
    probe: {type: tls, host: "{{host}}", port: %d, warn_days: 30, crit_days: 7}
  site:
    probe: {type: http, url: "https://{{host}}:%d/", body_contains: good, cert_warn_days: 30, cert_crit_days: 7}
`, control, port, port),
		"hosts.d/127.0.0.1/cert": "",
		"hosts.d/127.0.0.1/site": "",
	})
	d := startDaemon(t, dir, control)
	for _, chk := range []string{"cert", "site"} {
		await.Until(t, chk+" seen ok", func() bool { return d.state(t, "127.0.0.1", chk) == "ok" })
	}

	cert.Store(&expiring)
	for _, chk := range []string{"cert", "site"} {
		await.Until(t, chk+" firing", func() bool { return d.state(t, "127.0.0.1", chk) == "firing" })
		if out := d.output(t, "127.0.0.1", chk); !strings.Contains(out, "CRITICAL - Certificate 'expiring' expires in 3 day(s)") {
			t.Errorf("%s firing with output %q, want the certificate's days", chk, out)
		}
	}

	cert.Store(&renewed)
	for _, chk := range []string{"cert", "site"} {
		await.Until(t, chk+" ok again", func() bool { return d.state(t, "127.0.0.1", chk) == "ok" })
	}
	d.stop(t)
}

// output returns the output of host/check's latest result from /status.
func (d *daemon) output(t testing.TB, host, check string) string {
	t.Helper()
	resp, err := d.client.Get(d.base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Instances []struct {
			Host, Check string
			Observers   []struct{ Output string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Instances {
		if in.Host == host && in.Check == check && len(in.Observers) > 0 {
			return in.Observers[0].Output
		}
	}
	return ""
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
