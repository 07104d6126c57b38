package config

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/probe"
)

// TestLoadProbes loads a probe check of each type, beside a plugin check,
// and builds each target's probe with {{host}} expanded.
func TestLoadProbes(t *testing.T) {
	dir := tree(t, map[string]string{
		FileName: `timeout: 7s
checks:
  port:
    probe: {type: tcp, host: "{{host}}", port: 25, send: "QUIT\r\n", expect: "220", max_bytes: 100, warn: 1s, crit: 2s}
  cert:
    probe: {type: tls, host: "{{host}}", port: 443, server_name: "www.{{host}}", warn_days: 30, crit_days: 7, verify: true}
    timeout: 3s
  web:
    probe:
      type: http
      url: "https://{{host}}:8443/health"
      method: HEAD
      headers: {X-Probe: dmonitor}
      expect_status: [200, 204]
      body_contains: ok
      body_regexp: "^o"
      follow_redirects: true
      max_redirects: 3
      tls_verify: true
      cert_warn_days: 20
      max_body: 64KiB
  dummy:
    command: [check_dummy, "0"]
`,
		"hosts.d/example.org/port":  "",
		"hosts.d/example.org/cert":  "",
		"hosts.d/example.org/web":   "",
		"hosts.d/example.org/dummy": "",
	})
	cfg := load(t, dir)
	port, cert, web, dummy := cfg.Checks["port"], cfg.Checks["cert"], cfg.Checks["web"], cfg.Checks["dummy"]
	equal(t, "port.Probe", *port.Probe, ProbeSpec{Type: ProbeTCP, TCP: probe.TCP{
		Host: "{{host}}", Port: 25, Send: "QUIT\r\n", Expect: "220", MaxBytes: 100, Warn: time.Second, Crit: 2 * time.Second}})
	equal(t, "port.Command", port.Command, []string(nil))
	equal(t, "port.Timeout", port.Timeout, 7*time.Second)
	equal(t, "cert.Probe", *cert.Probe, ProbeSpec{Type: ProbeTLS, TLS: probe.TLS{
		Host: "{{host}}", Port: 443, ServerName: "www.{{host}}", WarnDays: 30, CritDays: 7, Verify: true}})
	equal(t, "web.Probe", *web.Probe, ProbeSpec{Type: ProbeHTTP, HTTP: probe.HTTP{
		URL: "https://{{host}}:8443/health", Method: "HEAD", Headers: http.Header{"X-Probe": {"dmonitor"}},
		ExpectStatus: []int{200, 204}, BodyContains: "ok", BodyRegexp: "^o", FollowRedirects: true, MaxRedirects: 3,
		TLSVerify: true, CheckCert: true, CertWarnDays: 20, MaxBody: 64 << 10}})
	if dummy.Probe != nil || len(dummy.Command) != 2 {
		t.Errorf("plugin check: Probe %v, Command %q", dummy.Probe, dummy.Command)
	}
	for _, c := range []*Check{port, cert, web} {
		if _, err := c.NewProbe("example.org"); err != nil {
			t.Errorf("NewProbe of %s: %v", c.Name, err)
		}
	}
	if _, err := dummy.NewProbe("example.org"); err == nil {
		t.Error("NewProbe of a plugin check: no error")
	}
}

// TestNewProbeExpandsHost runs a tcp probe built for a host against a
// closed loopback port: the message names the expanded host, and the
// check's timeout is the probe's (its perfdata maximum).
func TestNewProbeExpandsHost(t *testing.T) {
	c := &Check{Name: "port", Timeout: 3 * time.Second, Probe: &ProbeSpec{Type: ProbeTCP, TCP: probe.TCP{Host: "{{host}}", Port: 1}}}
	p, err := c.NewProbe("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r := p.Run(t.Context())
	if !strings.Contains(r.Output, "127.0.0.1") || strings.Contains(r.Output, "{{host}}") {
		t.Errorf("output %q does not name the expanded host", r.Output)
	}
	c.Probe.TCP.Expect, c.Probe.TCP.Port = "", 0
	if _, err := c.NewProbe("127.0.0.1"); err == nil || !strings.Contains(err.Error(), "check port on 127.0.0.1") {
		t.Errorf("bad options: error %v, want one naming check and host", err)
	}
}

// probeBadCases are trees whose probe checks Load refuses, each with its
// whole error.
var probeBadCases = []struct {
	name  string
	files map[string]string
	want  string
}{
	{
		// Both a plugin and a probe: which would run is not the reader's to guess.
		name:  "command and probe",
		files: map[string]string{FileName: "checks:\n  web:\n    command: [check_dummy, '0']\n    probe: {type: tcp, host: h, port: 80}\n"},
		want:  "dmonitor.yaml:4:12: checks.web: command and probe both given: a check runs a plugin or a probe, not both",
	},
	{
		// No type.
		name:  "probe without type",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {host: h, port: 80}\n"},
		want:  "dmonitor.yaml:3:12: checks.web.probe: type is required (want tcp, tls or http)",
	},
	{
		// A type not built.
		name:  "unknown probe type",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: icmp, host: h}\n"},
		want:  `dmonitor.yaml:3:19: checks.web.probe.type: unknown probe type "icmp" (want tcp, tls or http)`,
	},
	{
		// A probe as a string.
		name:  "probe is a string",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: tcp\n"},
		want:  "dmonitor.yaml:3:12: checks.web.probe: want a mapping, got a string",
	},
	{
		// An option of another type.
		name:  "url on a tcp probe",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: tcp, host: h, port: 80, url: 'http://h/'}\n"},
		want:  "dmonitor.yaml:3:48: checks.web.probe.url: not an option of a tcp probe (it takes host, port, send, expect, max_bytes, warn, crit)",
	},
	{
		// No port, and a key that is no option at all.
		name:  "tcp probe without port",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: tcp, host: h, prot: 80}\n"},
		want: "dmonitor.yaml:3:12: checks.web.probe: port is required\n" +
			"dmonitor.yaml:3:33: checks.web.probe: unknown field \"prot\"",
	},
	{
		// A port out of range.
		name:  "port out of range",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: tls, host: h, port: 70000}\n"},
		want:  "dmonitor.yaml:3:39: checks.web.probe.port: port 70000 out of range 1..65535",
	},
	{
		// A placeholder that is never replaced.
		name:  "unknown placeholder in url",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: http, url: 'http://{{ host }}/'}\n"},
		want:  `dmonitor.yaml:3:30: checks.web.probe.url: unknown placeholder in "http://{{ host }}/" (only {{host}} is replaced)`,
	},
	{
		// A URL the probe cannot request, refused by the probe itself.
		name:  "url without scheme",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: http, url: '{{host}}/health'}\n"},
		want:  `dmonitor.yaml:3:12: checks.web.probe: http probe: url "localhost/health": want http:// or https:// and a host`,
	},
	{
		// A regexp RE2 refuses.
		name:  "bad body regexp",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: http, url: 'http://{{host}}/', body_regexp: '(?<'}\n"},
		want:  "dmonitor.yaml:3:12: checks.web.probe: http probe: url \"http://localhost/\": body regexp: error parsing regexp: invalid or unsupported Perl syntax: `(?<`",
	},
	{
		// Status codes that are none, and negative days.
		name:  "bad status and days",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: http, url: 'http://h/', expect_status: [200, 42], cert_warn_days: -1}\n"},
		want: "dmonitor.yaml:3:64: checks.web.probe.expect_status[1]: 42 is not a status code\n" +
			"dmonitor.yaml:3:85: checks.web.probe.cert_warn_days: must not be negative, got -1",
	},
}
