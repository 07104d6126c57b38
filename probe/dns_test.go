package probe

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/internal/await"
)

// slowDNS is how long the test server takes to answer for
// slow.example.test: long enough above the warn threshold of the tests
// that timing noise cannot make it fast.
const slowDNS = 1500 * time.Millisecond

// dnsZone is the test server's fixed data: every query gets the records
// of its name and type, and a name it does not list NXDOMAIN.
var dnsZone = map[string][]string{
	"www.example.test.":       {"A 127.0.0.2", "A 127.0.0.10", "AAAA ::1"}, // served unsorted
	"v4.example.test.":        {"A 127.0.0.3"},
	"lossy.example.test.":     {"A 127.0.0.5"},
	"alias.example.test.":     {"CNAME v4.example.test."},
	"empty.example.test.":     {},
	"slow.example.test.":      {"A 127.0.0.4"},
	"example.test.":           {"MX 10 mx1.example.test.", "MX 20 mx2.example.test.", "NS ns1.example.test.", "NS ns2.example.test.", `TXT "v=spf1 -all"`, `TXT "two" "strings"`, "SOA ns1.example.test. hostmaster.example.test. 2024010101 7200 3600 1209600 300"},
	"_sip._tcp.example.test.": {"SRV 10 60 5060 sip.example.test."},
	"3.0.0.127.in-addr.arpa.": {"PTR v4.example.test."},
	"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.": {"PTR six.example.test."},
	"big.example.test.": bigTXT(),
}

// bigTXT is more TXT data than 512 bytes: the server answers it over UDP
// truncated, so that it is fetched again over TCP.
func bigTXT() []string {
	var rrs []string
	for i := range 12 {
		rrs = append(rrs, `TXT "`+strconv.Itoa(i)+strings.Repeat("x", 60)+`"`)
	}
	return rrs
}

// dnsServer is a loopback DNS server on one address, UDP and TCP, serving
// dnsZone. fail.example.test gets SERVFAIL, refused.example.test REFUSED,
// hang.example.test no answer at all, lossy.example.test no answer to its
// first query, and slow.example.test its answer after slowDNS.
type dnsServer struct {
	done  chan struct{}
	wg    sync.WaitGroup
	lossy atomic.Int32 // queries for lossy.example.test so far
}

// serveDNS serves dnsZone on pc and ln until the test ends.
func serveDNS(t testing.TB, pc net.PacketConn, ln net.Listener) {
	t.Helper()
	s := &dnsServer{done: make(chan struct{})}
	var servers []*dns.Server
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: ln, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() { _ = srv.ActivateAndServe() })
		<-started
		servers = append(servers, srv)
	}
	t.Cleanup(func() {
		close(s.done)
		for _, srv := range servers {
			_ = srv.Shutdown()
		}
		s.wg.Wait()
	})
}

// startDNS serves dnsZone on a loopback port of host ("127.0.0.1" or
// "::1"), the same for UDP and TCP, and returns its host:port.
func startDNS(t testing.TB, host string) string {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		// The UDP port's number may be a TCP client's: try another.
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue
		}
		serveDNS(t, pc, ln)
		return pc.LocalAddr().String()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return ""
}

// startDNS53 serves dnsZone on port 53 of a loopback address of its own
// and returns the address. check_dns runs nslookup, which takes no port,
// so the comparisons need 53, and so root; a random 127.53.x.y keeps two
// test processes from meeting.
func startDNS53(t testing.TB) string {
	t.Helper()
	for range 50 {
		host := randomLoopback()
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "53"))
		if errors.Is(err, syscall.EACCES) {
			t.Skipf("check_dns asks port 53 only, which needs root here: %v", err)
		}
		if err != nil {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "53"))
		if err != nil {
			pc.Close()
			continue
		}
		serveDNS(t, pc, ln)
		return host
	}
	t.Fatal("no free port 53 on 127.53.0.0/16")
	return ""
}

// silentDNS53 returns a loopback address on whose port 53 nothing listens.
func silentDNS53(t testing.TB) string {
	t.Helper()
	for range 50 {
		host := randomLoopback()
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "53"))
		if err == nil {
			pc.Close()
			return host
		}
	}
	t.Fatal("no free port 53 on 127.53.0.0/16")
	return ""
}

func randomLoopback() string {
	return "127.53." + strconv.Itoa(1+rand.IntN(254)) + "." + strconv.Itoa(1+rand.IntN(254))
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		return
	}
	q := r.Question[0]
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	switch q.Name {
	case "fail.example.test.":
		m.Rcode = dns.RcodeServerFailure
	case "refused.example.test.":
		m.Rcode = dns.RcodeRefused
	case "hang.example.test.":
		return // the target's behaviour: never answer
	case "lossy.example.test.":
		if s.lossy.Add(1) == 1 {
			return // as if the first query or its answer were lost
		}
	case "slow.example.test.":
		// The target's behaviour, not a synchronisation.
		tm := time.NewTimer(slowDNS)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-s.done:
			return
		}
	}
	rrs, known := dnsZone[q.Name]
	if !known && m.Rcode == dns.RcodeSuccess {
		m.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		typ, _, _ := strings.Cut(rr, " ")
		if dns.StringToType[typ] == q.Qtype {
			m.Answer = append(m.Answer, mustRR(q.Name+" 60 IN "+rr))
		} else if typ == "CNAME" && q.Qtype != dns.TypeCNAME {
			// Follow the alias within the zone, as a resolver would.
			m.Answer = append(m.Answer, mustRR(q.Name+" 60 IN "+rr))
			target := strings.Fields(rr)[1]
			for _, trr := range dnsZone[target] {
				if ttyp, _, _ := strings.Cut(trr, " "); dns.StringToType[ttyp] == q.Qtype {
					m.Answer = append(m.Answer, mustRR(target+" 60 IN "+trr))
				}
			}
		}
	}
	if q.Name == "big.example.test." && w.LocalAddr().Network() == "udp" {
		m.Answer, m.Truncated = nil, true
	}
	_ = w.WriteMsg(m)
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

// dnsArgs is the check_dns command line equivalent to o. With several
// expected answers it adds -L, under which check_dns too wants every one
// (and no other: the cases that use it expect all or miss one).
func dnsArgs(o DNS) []string {
	host, _, err := net.SplitHostPort(o.Server)
	if err != nil {
		host = o.Server
	}
	args := []string{"-H", o.Name, "-s", host}
	for _, e := range o.Expect {
		args = append(args, "-a", e)
	}
	if len(o.Expect) > 1 {
		args = append(args, "-L")
	}
	if o.Warn > 0 {
		args = append(args, "-w", secs(o.Warn))
	}
	if o.Crit > 0 {
		args = append(args, "-c", secs(o.Crit))
	}
	return append(args, "-t", secs(o.Timeout))
}

// TestDNSAgainstCheckDNS runs the DNS probe and check_dns against the same
// loopback server and compares their results field by field. check_dns
// asks what nslookup asks by default, the A and AAAA records of a name and
// the PTR record of an address, which is what a probe without a record
// type asks too.
//
// The margins keep timing noise from flipping a status: answers take
// milliseconds against a warn of 1 s; slow.example.test is answered after
// 1.5 s (check_dns asks A and AAAA one after the other, 3 s) against a
// crit of 5 s, or of 1.2 s for "slow crit".
func TestDNSAgainstCheckDNS(t *testing.T) {
	t.Parallel()
	const warn, crit, timeout = time.Second, 5 * time.Second, 8 * time.Second
	server := startDNS53(t)
	down := silentDNS53(t)
	all := []string{"127.0.0.10", "127.0.0.2", "::1"}

	for _, tc := range []struct {
		name string
		o    DNS
		want comparison
	}{
		// A name's addresses, sorted as strcmp sorts them, the time with
		// its thresholds in perfdata.
		{"found", DNS{Name: "www.example.test", Warn: warn, Crit: crit},
			comparison{status: check.OK, phrases: []string{"DNS OK: ", "seconds response time. www.example.test returns 127.0.0.10,127.0.0.2,::1"}}},
		// Without thresholds: empty warn and crit, min 0, no max.
		{"found no thresholds", DNS{Name: "v4.example.test"},
			comparison{status: check.OK, phrases: []string{"DNS OK: ", "v4.example.test returns 127.0.0.3"}}},
		// An alias: the addresses of its target.
		{"cname", DNS{Name: "alias.example.test"},
			comparison{status: check.OK, phrases: []string{"alias.example.test returns 127.0.0.3"}}},
		// An address: its PTR record, the name with its final dot.
		{"reverse", DNS{Name: "127.0.0.3"},
			comparison{status: check.OK, phrases: []string{"127.0.0.3 returns v4.example.test."}}},
		// An expected address among those returned.
		{"expected", DNS{Name: "www.example.test", Expect: []string{"127.0.0.2"}},
			comparison{status: check.OK, phrases: []string{"DNS OK: ", "www.example.test returns"}}},
		// Every address expected (-L).
		{"expected all", DNS{Name: "www.example.test", Expect: all},
			comparison{status: check.OK, phrases: []string{"DNS OK: "}}},
		// An expected host name, with its final dot, for an address.
		{"expected name", DNS{Name: "127.0.0.3", Expect: []string{"v4.example.test."}},
			comparison{status: check.OK, phrases: []string{"127.0.0.3 returns v4.example.test."}}},
		// A wrong answer.
		{"wrong answer", DNS{Name: "www.example.test", Expect: []string{"127.0.0.99"}},
			comparison{status: check.Critical, phrases: []string{"expected '127.0.0.99' but got '127.0.0.10,127.0.0.2,::1'"}}},
		// One of two expected answers missing (-L).
		{"one missing", DNS{Name: "www.example.test", Expect: []string{"127.0.0.2", "127.0.0.99"}},
			comparison{status: check.Critical, phrases: []string{"expected '127.0.0.2; 127.0.0.99' but got '127.0.0.10,127.0.0.2,::1'"}}},
		// NXDOMAIN.
		{"not found", DNS{Name: "nope.example.test"},
			comparison{status: check.Critical, phrases: []string{"Domain 'nope.example.test' was not found by the server"}}},
		// The name exists without an address.
		{"no records", DNS{Name: "empty.example.test"},
			comparison{status: check.Critical, phrases: []string{"Domain 'empty.example.test' was not found by the server"}}},
		// SERVFAIL: check_dns takes nslookup's "server can't find" for a
		// missing domain; the probe names the failure.
		{"servfail", DNS{Name: "fail.example.test"},
			comparison{status: check.Critical, probeOnly: []string{"DNS failure for " + server, "SERVFAIL"}, pluginOnly: []string{"was not found"}}},
		// REFUSED.
		{"refused", DNS{Name: "refused.example.test"},
			comparison{status: check.Critical, phrases: []string{"Connection to DNS " + server + " was refused"}}},
		// Nothing listens on the server's port.
		{"server down", DNS{Name: "www.example.test", Server: down},
			comparison{status: check.Critical, phrases: []string{"No response from DNS " + down}}},
		// 1.5 s to answer, warn at 1 s.
		{"slow", DNS{Name: "slow.example.test", Warn: warn, Crit: crit},
			comparison{status: check.Warning, phrases: []string{"DNS WARNING: ", "response time. slow.example.test returns 127.0.0.4"}}},
		// 1.5 s to answer, crit at 1.2 s.
		{"slow crit", DNS{Name: "slow.example.test", Warn: warn, Crit: 1200 * time.Millisecond},
			comparison{status: check.Critical, phrases: []string{"DNS CRITICAL: ", "slow.example.test returns 127.0.0.4"}}},
		// No answer within the timeout: the plugin's alarm, the probe's
		// words for a server that does not answer.
		{"timeout", DNS{Name: "hang.example.test", Timeout: 2 * time.Second},
			comparison{status: check.Critical, probeOnly: []string{"DNS CRITICAL - No response from DNS " + server + " within 2 seconds"}, pluginOnly: []string{"timed out"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.o.Server == "" {
				tc.o.Server = server
			}
			if tc.o.Timeout == 0 {
				tc.o.Timeout = timeout
			}
			p, err := NewDNS(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			plug := runPlugin(t, "check_dns", dnsArgs(tc.o)...)
			t.Logf("probe:  %s %v\ncheck_dns: %s %v", got.Output, got.Perf, plug.Output, plug.Perf)
			compare(t, got, plug, tc.want)
		})
	}

	// Without a server: the nameservers of resolv.conf, in turn. The first
	// here does not answer; the second does, and is named.
	t.Run("system resolver", func(t *testing.T) {
		t.Parallel()
		conf := filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(conf, []byte("search example.test\nnameserver "+down+"\nnameserver "+server+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := NewDNS(DNS{Name: "v4.example.test", Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		p.(*dnsProbe).resolvConf = conf
		got := p.Run(t.Context())
		if got.Status != check.OK || !strings.Contains(got.Output, "v4.example.test returns 127.0.0.3") {
			t.Errorf("got %v %q, want OK ... returns 127.0.0.3", got.Status, got.Output)
		}
		p, err = NewDNS(DNS{Name: "nope.example.test", Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		p.(*dnsProbe).resolvConf = conf
		if got := p.Run(t.Context()); got.Status != check.Critical || !strings.Contains(got.Output, "was not found by the server") {
			t.Errorf("got %v %q, want CRITICAL ... not found", got.Status, got.Output)
		}
	})
}

// TestDNSRecordTypesAgainstDig asks the test server for each record type
// and compares the answers with dig +short's for the same question: the
// same records, written the same way. check_dns cannot ask for a type.
func TestDNSRecordTypesAgainstDig(t *testing.T) {
	t.Parallel()
	server := startDNS(t, "127.0.0.1")
	host, port, _ := net.SplitHostPort(server)
	for _, tc := range []struct{ name, typ string }{
		{"www.example.test", "A"},
		{"www.example.test", "AAAA"},
		{"alias.example.test", "CNAME"},
		{"example.test", "MX"},
		{"example.test", "NS"},
		{"example.test", "TXT"},
		{"example.test", "SOA"},
		{"_sip._tcp.example.test", "SRV"},
		{"3.0.0.127.in-addr.arpa", "PTR"},
		// The address itself asks its PTR record.
		{"::1", "PTR"},
		// Truncated over UDP: asked again over TCP, by both.
		{"big.example.test", "TXT"},
	} {
		t.Run(tc.typ+" "+tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewDNS(DNS{Name: tc.name, RecordType: strings.ToLower(tc.typ), Server: server, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			if got.Status != check.OK {
				t.Fatalf("probe: %v %q", got.Status, got.Output)
			}
			digName := tc.name
			if tc.name == "::1" {
				digName = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"
			}
			out, err := exec.CommandContext(t.Context(), "dig", "+short", "+tries=1", "-p", port, "@"+host, "-t", tc.typ, digName).Output()
			if err != nil {
				t.Fatalf("dig: %v (install bind9-dnsutils)", err)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			slices.Sort(lines)
			want := tc.name + " returns " + strings.Join(lines, ",")
			if !strings.Contains(got.Output, want) {
				t.Errorf("probe %q\nwant ...%s (dig +short)", got.Output, want)
			}
		})
	}
}

// TestDNSExpect: the forms an expected answer may take, each required.
func TestDNSExpect(t *testing.T) {
	t.Parallel()
	server := startDNS(t, "127.0.0.1")
	for _, tc := range []struct {
		name, typ string
		expect    []string
		status    check.Status
	}{
		// An address in a CIDR, or written another way.
		{"www.example.test", "", []string{"127.0.0.0/24", "0:0::0001"}, check.OK},
		{"www.example.test", "", []string{"10.0.0.0/8"}, check.Critical},
		// An MX record whole, or its host with or without the dot, in any case.
		{"example.test", "MX", []string{"10 mx1.example.test.", "MX2.Example.Test"}, check.OK},
		{"example.test", "MX", []string{"mx3.example.test"}, check.Critical},
		// A TXT record quoted as dig writes it, or one string unquoted.
		{"example.test", "TXT", []string{`"two" "strings"`, "v=spf1 -all"}, check.OK},
		{"example.test", "TXT", []string{"two strings"}, check.Critical},
		// A CNAME's target without its dot; every one expected must appear.
		{"alias.example.test", "CNAME", []string{"v4.example.test"}, check.OK},
		{"example.test", "NS", []string{"ns1.example.test", "ns3.example.test"}, check.Critical},
		// An SRV record's target.
		{"_sip._tcp.example.test", "SRV", []string{"sip.example.test"}, check.OK},
	} {
		t.Run(tc.name+" "+tc.typ+" "+strings.Join(tc.expect, ","), func(t *testing.T) {
			t.Parallel()
			p, err := NewDNS(DNS{Name: tc.name, RecordType: tc.typ, Server: server, Expect: tc.expect, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			if got.Status != tc.status {
				t.Errorf("got %v %q, want %v", got.Status, got.Output, tc.status)
			}
			if tc.status == check.Critical && !strings.Contains(got.Output, "expected '"+strings.Join(tc.expect, "; ")+"' but got '") {
				t.Errorf("output %q does not say what was expected and got", got.Output)
			}
		})
	}
}

// TestDNSResendsLostQuery: a query or its answer lost on the way is sent
// again (after a second), not taken for a server that does not answer.
func TestDNSResendsLostQuery(t *testing.T) {
	t.Parallel()
	server := startDNS(t, "127.0.0.1")
	p, err := NewDNS(DNS{Name: "lossy.example.test", RecordType: "A", Server: server, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Run(t.Context()); got.Status != check.OK || !strings.Contains(got.Output, "lossy.example.test returns 127.0.0.5") {
		t.Errorf("got %v %q, want OK ... returns 127.0.0.5", got.Status, got.Output)
	}
}

// TestDNSIPv6Server asks a server on ::1 at a port of its own.
func TestDNSIPv6Server(t *testing.T) {
	t.Parallel()
	server := startDNS(t, "::1")
	p, err := NewDNS(DNS{Name: "v4.example.test", RecordType: "A", Server: server})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Run(t.Context()); got.Status != check.OK || !strings.Contains(got.Output, "v4.example.test returns 127.0.0.3") {
		t.Errorf("got %v %q, want OK ... returns 127.0.0.3", got.Status, got.Output)
	}
}

// TestDNSCanceled: a caller that gives up gets UNKNOWN at once, not a
// verdict on the server.
func TestDNSCanceled(t *testing.T) {
	t.Parallel()
	server := startDNS(t, "127.0.0.1")
	p, err := NewDNS(DNS{Name: "hang.example.test", Server: server, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	got := p.Run(ctx)
	if got.Status != check.Unknown || !strings.Contains(got.Output, "canceled") {
		t.Errorf("canceled run: %v %q, want UNKNOWN ... canceled", got.Status, got.Output)
	}
}

// TestNewDNSRefuses: options a probe cannot run with are refused, naming
// the offender.
func TestNewDNSRefuses(t *testing.T) {
	for _, tc := range []struct {
		o    DNS
		want string
	}{
		{DNS{}, "no name"},
		{DNS{Name: "a..b"}, `name "a..b"`},
		{DNS{Name: strings.Repeat("a", 64) + ".example"}, "name"},
		{DNS{Name: "h", RecordType: "ANY"}, `record type "ANY": want one of A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT`},
		{DNS{Name: "h", Server: "127.0.0.1:0"}, `server "127.0.0.1:0": port "0" out of range`},
		{DNS{Name: "h", Server: "[::1"}, `server "[::1"`},
		{DNS{Name: "h", Expect: []string{"10.0.0.0/33"}}, `expected answer "10.0.0.0/33"`},
		{DNS{Name: "h", Expect: []string{""}}, "an expected answer is empty"},
		{DNS{Name: "h", Warn: -time.Second}, "warn -1s is negative"},
	} {
		_, err := NewDNS(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewDNS(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

// TestDNSNoGoroutineLeft: runs that succeed, fall back to TCP, time out or
// find the server down leave no goroutine of theirs behind. Not parallel,
// so that the count is the probes' alone.
func TestDNSNoGoroutineLeft(t *testing.T) {
	server := startDNS(t, "127.0.0.1")
	var probes []Probe
	for _, o := range []DNS{
		{Name: "www.example.test", Server: server},
		{Name: "big.example.test", RecordType: "TXT", Server: server},
		{Name: "hang.example.test", Server: server, Timeout: 100 * time.Millisecond},
		{Name: "www.example.test", Server: "127.0.0.1:" + strconv.Itoa(closedPort(t))},
	} {
		p, err := NewDNS(o)
		if err != nil {
			t.Fatal(err)
		}
		probes = append(probes, p)
	}
	before := runtime.NumGoroutine()
	for range 3 {
		for _, p := range probes {
			p.Run(t.Context())
		}
	}
	// The server's goroutines for the queries end soon after; the probes'
	// must end with their runs.
	await.Until(t, "goroutines back to "+strconv.Itoa(before), func() bool { return runtime.NumGoroutine() <= before })
}

// BenchmarkDNS measures DNS probes a second against the loopback test
// server, an A query each, run from as many goroutines as GOMAXPROCS.
func BenchmarkDNS(b *testing.B) {
	server := startDNS(b, "127.0.0.1")
	p, err := NewDNS(DNS{Name: "v4.example.test", RecordType: "A", Server: server, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	benchProbe(b, p)
}
