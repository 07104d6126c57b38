package config

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/dmonitor/dmonitor/internal/yamlnode"
	"github.com/dmonitor/dmonitor/probe"
)

// probeKeys are the keys of checks.<name>.probe each probe type takes,
// besides type; the order is the one error messages list them in.
var probeKeys = map[string][]string{
	ProbeTCP: {"host", "port", "send", "expect", "max_bytes", "warn", "crit"},
	ProbeTLS: {"host", "port", "server_name", "warn_days", "crit_days", "verify", "warn", "crit"},
	ProbeHTTP: {"url", "method", "headers", "body", "expect_status", "body_contains", "body_regexp",
		"follow_redirects", "max_redirects", "tls_verify", "cert_warn_days", "cert_crit_days",
		"max_body", "warn", "crit"},
	ProbeDNS:  {"name", "record_type", "server", "expect", "warn", "crit"},
	ProbeICMP: {"host", "packets", "interval", "warn", "crit"},
}

// probeTypes lists the probe types for error messages.
const probeTypes = ProbeTCP + ", " + ProbeTLS + ", " + ProbeHTTP + ", " + ProbeDNS + " or " + ProbeICMP

// decodeProbe decodes checks.<name>.probe. It reports whether the spec
// decoded without error; what the probe's constructor judges (a URL's
// scheme, a regexp) is left to resolveCheck.
func decodeProbe(d *decoder, path string, n *yaml.Node) (*ProbeSpec, bool) {
	before := len(*d.errs)
	s := &ProbeSpec{}
	typ := keyNode(n, "type")
	if typ == nil {
		if deref(n).Kind == yaml.MappingNode {
			d.errorf(n, path, "type is required (want %s)", probeTypes)
		} else {
			d.errorf(n, path, "want a mapping, got %s", yamlnode.Describe(n))
		}
		return nil, false
	}
	// The type's value: the key node's successor in the mapping.
	tv := deref(n)
	for i := 0; i+1 < len(tv.Content); i += 2 {
		if deref(tv.Content[i]) == typ {
			tv = deref(tv.Content[i+1])
			break
		}
	}
	if !d.str(join(path, "type"), tv, &s.Type) {
		return nil, false
	}
	keys, known := probeKeys[s.Type]
	if !known {
		d.errorf(tv, join(path, "type"), "unknown probe type %q (want %s)", s.Type, probeTypes)
		return nil, false
	}

	tcp, tls, web, dns, ping := &s.TCP, &s.TLS, &s.HTTP, &s.DNS, &s.ICMP
	f := fields{"type": func(string, *yaml.Node) {}}
	// set registers key's decoder for the types that take it.
	set := func(key string, fn func(p string, n *yaml.Node)) {
		if slices.Contains(keys, key) {
			f[key] = fn
			return
		}
		f[key] = func(p string, n *yaml.Node) {
			d.errorf(n, p, "not an option of %s probes (they take %s)", s.Type, strings.Join(keys, ", "))
		}
	}
	host := func(dst *string) func(string, *yaml.Node) {
		return func(p string, n *yaml.Node) {
			if d.str(p, n, dst) {
				placeholders(d, p, n, *dst)
			}
		}
	}
	port := func(dst *int) func(string, *yaml.Node) {
		return func(p string, n *yaml.Node) {
			if d.integer(p, n, dst) && (*dst < 1 || *dst > 65535) {
				d.errorf(n, p, "port %d out of range 1..65535", *dst)
			}
		}
	}
	switch s.Type {
	case ProbeTCP:
		set("host", host(&tcp.Host))
		set("port", port(&tcp.Port))
		set("warn", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &tcp.Warn) })
		set("crit", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &tcp.Crit) })
	case ProbeTLS:
		set("host", host(&tls.Host))
		set("port", port(&tls.Port))
		set("warn", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &tls.Warn) })
		set("crit", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &tls.Crit) })
	case ProbeHTTP:
		set("host", nil)
		set("port", nil)
		set("warn", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &web.Warn) })
		set("crit", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &web.Crit) })
	case ProbeDNS:
		set("host", nil)
		set("port", nil)
		set("warn", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &dns.Warn) })
		set("crit", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &dns.Crit) })
	case ProbeICMP:
		set("host", host(&ping.Host))
		set("port", nil)
		// check_ping's -w and -c: "rta,pl%".
		set("warn", func(p string, n *yaml.Node) { pingThreshold(d, p, n, &ping.Warn) })
		set("crit", func(p string, n *yaml.Node) { pingThreshold(d, p, n, &ping.Crit) })
	}
	set("send", func(p string, n *yaml.Node) { d.str(p, n, &tcp.Send) })
	set("expect", func(p string, n *yaml.Node) {
		if s.Type == ProbeDNS {
			dnsExpect(d, p, n, &dns.Expect)
			return
		}
		d.str(p, n, &tcp.Expect)
	})
	set("max_bytes", func(p string, n *yaml.Node) { d.positive(p, n, &tcp.MaxBytes) })
	set("server_name", host(&tls.ServerName))
	set("warn_days", func(p string, n *yaml.Node) { nonNegative(d, p, n, &tls.WarnDays) })
	set("crit_days", func(p string, n *yaml.Node) { nonNegative(d, p, n, &tls.CritDays) })
	set("verify", func(p string, n *yaml.Node) { d.boolean(p, n, &tls.Verify) })
	set("url", host(&web.URL))
	set("method", func(p string, n *yaml.Node) {
		if d.str(p, n, &web.Method) && (web.Method == "" || strings.ContainsAny(web.Method, " \t\r\n")) {
			d.errorf(n, p, "invalid method %q", web.Method)
		}
	})
	set("headers", func(p string, n *yaml.Node) {
		web.Headers = make(http.Header)
		d.pairs(p, n, func(k, v *yaml.Node) {
			var val string
			if d.str(join(p, k.Value), v, &val) {
				web.Headers.Add(k.Value, val)
			}
		})
	})
	set("body", func(p string, n *yaml.Node) { d.str(p, n, &web.Body) })
	set("expect_status", func(p string, n *yaml.Node) {
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, p, "want a list of status codes, got %s", yamlnode.Describe(n))
			return
		}
		for i, e := range n.Content {
			var c int
			ep := fmt.Sprintf("%s[%d]", p, i)
			if d.integer(ep, deref(e), &c) {
				if c < 100 || c > 999 {
					d.errorf(e, ep, "%d is not a status code", c)
				}
				web.ExpectStatus = append(web.ExpectStatus, c)
			}
		}
	})
	set("body_contains", func(p string, n *yaml.Node) { d.str(p, n, &web.BodyContains) })
	set("body_regexp", func(p string, n *yaml.Node) { d.str(p, n, &web.BodyRegexp) })
	set("follow_redirects", func(p string, n *yaml.Node) { d.boolean(p, n, &web.FollowRedirects) })
	set("max_redirects", func(p string, n *yaml.Node) { d.positive(p, n, &web.MaxRedirects) })
	set("tls_verify", func(p string, n *yaml.Node) { d.boolean(p, n, &web.TLSVerify) })
	// Either of the days turns the certificate's judgement on, as -C does.
	set("cert_warn_days", func(p string, n *yaml.Node) {
		web.CheckCert = nonNegative(d, p, n, &web.CertWarnDays) || web.CheckCert
	})
	set("cert_crit_days", func(p string, n *yaml.Node) {
		web.CheckCert = nonNegative(d, p, n, &web.CertCritDays) || web.CheckCert
	})
	set("max_body", func(p string, n *yaml.Node) {
		if d.size(p, n, &web.MaxBody) && web.MaxBody <= 0 {
			d.errorf(n, p, "must be positive, got %s", n.Value)
		}
	})
	set("name", host(&dns.Name))
	set("record_type", func(p string, n *yaml.Node) {
		if d.str(p, n, &dns.RecordType) {
			dns.RecordType = strings.ToUpper(dns.RecordType)
			if types := probe.DNSRecordTypes(); !slices.Contains(types, dns.RecordType) {
				d.errorf(n, p, "unknown record type %q (want %s)", n.Value, strings.Join(types, ", "))
			}
		}
	})
	set("server", host(&dns.Server))
	set("packets", func(p string, n *yaml.Node) {
		if d.positive(p, n, &ping.Packets) && ping.Packets > 65535 {
			d.errorf(n, p, "%d packets: at most 65535", ping.Packets)
		}
	})
	set("interval", func(p string, n *yaml.Node) { d.positiveDuration(p, n, &ping.Interval) })
	d.mapping(path, n, f)

	// The target is required; the constructors would say so too, but
	// without a line.
	switch s.Type {
	case ProbeTCP:
		requireKeys(d, path, n, "host", "port")
	case ProbeTLS:
		requireKeys(d, path, n, "host", "port")
	case ProbeHTTP:
		requireKeys(d, path, n, "url")
	case ProbeDNS:
		requireKeys(d, path, n, "name")
	case ProbeICMP:
		// An echo has no target but a host: the check's own by default.
		if ping.Host == "" {
			ping.Host = hostPlaceholder
		}
	}
	return s, len(*d.errs) == before
}

// requireKeys reports each of keys that the mapping n lacks.
func requireKeys(d *decoder, path string, n *yaml.Node, keys ...string) {
	for _, k := range keys {
		if !hasKey(n, k) {
			d.errorf(n, path, "%s is required", k)
		}
	}
}

// placeholders refuses a {{...}} other than {{host}} in v.
func placeholders(d *decoder, path string, n *yaml.Node, v string) {
	if strings.Contains(strings.ReplaceAll(v, hostPlaceholder, ""), "{{") {
		d.errorf(n, path, "unknown placeholder in %q (only %s is replaced)", v, hostPlaceholder)
	}
}

// dnsExpect decodes a dns probe's expected answers: a list of strings,
// none empty, and those with a / address ranges.
func dnsExpect(d *decoder, path string, n *yaml.Node, dst *[]string) {
	nodes, ok := d.strings(path, n, dst)
	if !ok {
		return
	}
	for i, e := range *dst {
		ep := fmt.Sprintf("%s[%d]", path, i)
		switch _, err := netip.ParsePrefix(e); {
		case e == "":
			d.errorf(nodes[i], ep, "an expected answer is empty")
		case strings.Contains(e, "/") && err != nil:
			d.errorf(nodes[i], ep, "%q is not an address range: %v", e, err)
		}
	}
}

// pingThreshold decodes a threshold written as check_ping's -w and -c,
// "rta,pl%".
func pingThreshold(d *decoder, path string, n *yaml.Node, dst *probe.PingThreshold) {
	var v string
	if !d.str(path, n, &v) {
		return
	}
	t, err := probe.ParsePingThreshold(v)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	*dst = t
}

// nonNegative decodes an integer that must not be below zero.
func nonNegative(d *decoder, path string, n *yaml.Node, dst *int) bool {
	var v int
	if !d.integer(path, n, &v) {
		return false
	}
	if v < 0 {
		d.errorf(n, path, "must not be negative, got %d", v)
		return false
	}
	*dst = v
	return true
}
