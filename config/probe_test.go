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
  resolve:
    probe: {type: dns, name: "www.{{host}}", record_type: mx, server: "127.0.0.1:5353", expect: ["10 mx.example.org.", 127.0.0.0/8], warn: 1s, crit: 2s}
  ping:
    probe: {type: icmp}
  ping2:
    probe: {type: icmp, host: "gw.{{host}}", packets: 3, interval: 500ms, warn: "100,20%", crit: "1.5s,60%"}
`,
		"hosts.d/example.org/resolve": "",
		"hosts.d/example.org/ping":    "",
		"hosts.d/example.org/ping2":   "",
		"hosts.d/example.org/port":    "",
		"hosts.d/example.org/cert":    "",
		"hosts.d/example.org/web":     "",
		"hosts.d/example.org/dummy":   "",
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
	equal(t, "resolve.Probe", *cfg.Checks["resolve"].Probe, ProbeSpec{Type: ProbeDNS, DNS: probe.DNS{
		Name: "www.{{host}}", RecordType: "MX", Server: "127.0.0.1:5353", Expect: []string{"10 mx.example.org.", "127.0.0.0/8"},
		Warn: time.Second, Crit: 2 * time.Second}})
	// An icmp probe without a host pings the target's.
	equal(t, "ping.Probe", *cfg.Checks["ping"].Probe, ProbeSpec{Type: ProbeICMP, ICMP: probe.ICMP{Host: "{{host}}"}})
	equal(t, "ping2.Probe", *cfg.Checks["ping2"].Probe, ProbeSpec{Type: ProbeICMP, ICMP: probe.ICMP{
		Host: "gw.{{host}}", Packets: 3, Interval: 500 * time.Millisecond,
		Warn: probe.PingThreshold{RTA: 100 * time.Millisecond, Loss: 20}, Crit: probe.PingThreshold{RTA: 1500 * time.Millisecond, Loss: 60}}})
	if dummy.Probe != nil || len(dummy.Command) != 2 {
		t.Errorf("plugin check: Probe %v, Command %q", dummy.Probe, dummy.Command)
	}
	for _, c := range []*Check{port, cert, web, cfg.Checks["resolve"], cfg.Checks["ping"], cfg.Checks["ping2"]} {
		if _, err := c.NewProbe("example.org"); err != nil {
			t.Errorf("NewProbe of %s: %v", c.Name, err)
		}
	}
	if _, err := dummy.NewProbe("example.org"); err == nil {
		t.Error("NewProbe of a plugin check: no error")
	}
}

// TestNewProbeExpandsHost runs a tcp and a dns probe built for a host
// against a closed loopback port: the message names the expanded host,
// and the check's timeout is the probe's (its perfdata maximum).
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

	// A dns probe's server too: nothing answers on port 1 of the host.
	c = &Check{Name: "ns", Timeout: 3 * time.Second, Probe: &ProbeSpec{Type: ProbeDNS, DNS: probe.DNS{Name: "www.{{host}}", Server: "{{host}}:1"}}}
	if p, err = c.NewProbe("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if r := p.Run(t.Context()); !strings.Contains(r.Output, "No response from DNS 127.0.0.1:1") {
		t.Errorf("output %q does not name the expanded server", r.Output)
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
		want:  "dmonitor.yaml:3:12: checks.web.probe: type is required (want tcp, tls, http, dns or icmp)",
	},
	{
		// A type not built.
		name:  "unknown probe type",
		files: map[string]string{FileName: "checks:\n  web:\n    probe: {type: udp, host: h}\n"},
		want:  `dmonitor.yaml:3:19: checks.web.probe.type: unknown probe type "udp" (want tcp, tls, http, dns or icmp)`,
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
		want:  "dmonitor.yaml:3:48: checks.web.probe.url: not an option of tcp probes (they take host, port, send, expect, max_bytes, warn, crit)",
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
	}, {
		// A dns probe needs a name.
		name:  "dns probe without name",
		files: map[string]string{FileName: "checks:\n  ns:\n    probe: {type: dns, server: 127.0.0.1}\n"},
		want:  "dmonitor.yaml:3:12: checks.ns.probe: name is required",
	},
	{
		// A record type the probe does not ask for.
		name:  "unknown record type",
		files: map[string]string{FileName: "checks:\n  ns:\n    probe: {type: dns, name: example.org, record_type: ANY}\n"},
		want:  `dmonitor.yaml:3:56: checks.ns.probe.record_type: unknown record type "ANY" (want A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT)`,
	},
	{
		// Expected answers as one string, and then a range that is none.
		name:  "dns expect not a list",
		files: map[string]string{FileName: "checks:\n  ns:\n    probe: {type: dns, name: example.org, expect: 127.0.0.1}\n"},
		want:  "dmonitor.yaml:3:51: checks.ns.probe.expect: want a list of strings, got a string",
	},
	{
		name:  "dns expect bad range",
		files: map[string]string{FileName: "checks:\n  ns:\n    probe:\n      type: dns\n      name: example.org\n      expect: [127.0.0.1, 10.0.0.0/33, '']\n"},
		want: `dmonitor.yaml:6:27: checks.ns.probe.expect[1]: "10.0.0.0/33" is not an address range: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range` + "\n" +
			"dmonitor.yaml:6:40: checks.ns.probe.expect[2]: an expected answer is empty",
	},
	{
		// A name DNS cannot carry, refused by the probe itself.
		name:  "dns name with an empty label",
		files: map[string]string{FileName: "checks:\n  ns:\n    probe: {type: dns, name: 'www..{{host}}'}\n"},
		want:  `dmonitor.yaml:3:12: checks.ns.probe: dns probe: name "www..localhost": Name: zero length segment`,
	},
	{
		// A port on a dns probe: the server takes one.
		name:  "port on a dns probe",
		files: map[string]string{FileName: "checks:\n  ns:\n    probe: {type: dns, name: example.org, port: 53}\n"},
		want:  "dmonitor.yaml:3:49: checks.ns.probe.port: not an option of dns probes (they take name, record_type, server, expect, warn, crit)",
	},
	{
		// A threshold that is not check_ping's, and a duration.
		name:  "icmp thresholds",
		files: map[string]string{FileName: "checks:\n  ping:\n    probe: {type: icmp, warn: '100,20', crit: 2s, packets: 0}\n"},
		want: `dmonitor.yaml:3:31: checks.ping.probe.warn: threshold "100,20": packet loss "20" lacks its % (want rta,pl% as check_ping's, e.g. 100,20%)` + "\n" +
			"dmonitor.yaml:3:60: checks.ping.probe.packets: must be positive, got 0",
	},
	{
		// A warning above the critical threshold, refused by the probe.
		name:  "icmp warn above crit",
		files: map[string]string{FileName: "checks:\n  ping:\n    probe: {type: icmp, warn: '500,20%', crit: '100,60%'}\n"},
		want:  "dmonitor.yaml:3:12: checks.ping.probe: icmp probe: warn round trip 500ms above crit 100ms",
	},
	{
		// More packets than the check's timeout lets the probe send.
		name:  "icmp packets beyond the timeout",
		files: map[string]string{FileName: "checks:\n  ping:\n    probe: {type: icmp, packets: 20, interval: 200ms}\n    timeout: 2s\n"},
		want:  "dmonitor.yaml:3:12: checks.ping.probe: icmp probe: 20 packets 200ms apart take 3.8s, not less than the timeout 2s",
	},
}
