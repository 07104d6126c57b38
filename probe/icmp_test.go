package probe

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/internal/await"
)

// netnsEnv marks the test process that TestICMPAgainstCheckPing starts in
// a network namespace of its own.
const netnsEnv = "DMONITOR_TEST_NETNS"

// TestICMPAgainstCheckPing runs TestICMPInNamespace in a network namespace
// of its own (unshare -n, which needs root), where it may allow ICMP
// datagram sockets without touching the host's sysctl: the host's
// net.ipv4.ping_group_range is left as it is.
func TestICMPAgainstCheckPing(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to make a network namespace of its own (unshare -n)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "unshare", "--net", exe,
		"-test.run=^TestICMPInNamespace$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests in a network namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestICMPInNamespace ") {
		t.Fatalf("TestICMPInNamespace did not pass in its namespace:\n%s", out)
	}
	t.Logf("in a network namespace:\n%s", out)
}

// TestICMPInNamespace is run by TestICMPAgainstCheckPing in a network
// namespace of its own: it brings lo up, allows ICMP datagram sockets to
// every group there, and runs the ICMP probe and check_ping against the
// same loopback addresses.
func TestICMPInNamespace(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		t.Skip("run by TestICMPAgainstCheckPing, in a network namespace of its own")
	}
	loopbackUp(t)
	setSysctl(t, "net/ipv4/ping_group_range", "0 2147483647")
	if err := ICMPAllowed(); err != nil {
		t.Fatalf("ICMPAllowed with every group allowed: %v", err)
	}

	t.Run("compare", func(t *testing.T) {
		const timeout = 5 * time.Second
		ok := comparison{status: check.OK, phrases: []string{"PING OK - Packet loss = 0%, RTA = "}}
		for _, tc := range []struct {
			name string
			o    ICMP
			want comparison
		}{
			// Every reply back, fast: the rta and pl perfdata with their
			// thresholds.
			{"up", ICMP{Host: "127.0.0.1", Warn: pt(100*time.Millisecond, 20), Crit: pt(500*time.Millisecond, 60)}, ok},
			{"up ipv6", ICMP{Host: "::1", Warn: pt(100*time.Millisecond, 20), Crit: pt(500*time.Millisecond, 60)}, ok},
			// A name, looked up in /etc/hosts.
			{"up by name", ICMP{Host: "localhost", Warn: pt(100*time.Millisecond, 20), Crit: pt(500*time.Millisecond, 60)}, ok},
			// A round trip of tens of microseconds against a warn of one:
			// slow, as a far host would be against a warn in milliseconds.
			{"slow", ICMP{Host: "127.0.0.1", Warn: pt(time.Microsecond, 20), Crit: pt(500*time.Millisecond, 60)},
				comparison{status: check.Warning, phrases: []string{"PING WARNING - Packet loss = 0%, RTA = "}}},
			{"slow crit", ICMP{Host: "127.0.0.1", Warn: pt(time.Microsecond, 20), Crit: pt(2*time.Microsecond, 60)},
				comparison{status: check.Critical, phrases: []string{"PING CRITICAL - Packet loss = 0%, RTA = "}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.o.Packets, tc.o.Timeout = 3, timeout
				p, err := NewICMP(tc.o)
				if err != nil {
					t.Fatal(err)
				}
				got := p.Run(t.Context())
				plug := runPlugin(t, "check_ping", pingArgs(tc.o)...)
				t.Logf("probe:  %s %v\ncheck_ping: %s %v", got.Output, got.Perf, plug.Output, plug.Perf)
				compare(t, got, plug, tc.want)
			})
		}
	})

	// Nothing answers: every request lost, CRITICAL, and no rta (check_ping
	// writes rta=U).
	t.Run("down", func(t *testing.T) {
		setSysctl(t, "net/ipv4/icmp_echo_ignore_all", "1")
		setSysctl(t, "net/ipv6/icmp/echo_ignore_all", "1")
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(host, func(t *testing.T) {
				t.Parallel()
				o := ICMP{Host: host, Packets: 3, Warn: pt(100*time.Millisecond, 20), Crit: pt(500*time.Millisecond, 60), Timeout: 2 * time.Second}
				p, err := NewICMP(o)
				if err != nil {
					t.Fatal(err)
				}
				got := p.Run(t.Context())
				plug := runPlugin(t, "check_ping", pingArgs(o)...)
				t.Logf("probe:  %s %v\ncheck_ping: %s %v", got.Output, got.Perf, plug.Output, plug.Perf)
				compare(t, got, plug, comparison{status: check.Critical, phrases: []string{"PING CRITICAL - Packet loss = 100%"}})
			})
		}
	})

	// As many requests as asked, as far apart as asked: the kernel counts
	// the echo requests lo received, nothing else pings in this namespace.
	t.Run("packets and interval", func(t *testing.T) {
		const packets, interval = 7, 50 * time.Millisecond
		before := icmpInEchos(t)
		p, err := NewICMP(ICMP{Host: "127.0.0.1", Packets: packets, Interval: interval})
		if err != nil {
			t.Fatal(err)
		}
		got := p.Run(t.Context())
		if got.Status != check.OK || !strings.Contains(got.Output, "Packet loss = 0%") {
			t.Errorf("got %v %q, want OK, no loss", got.Status, got.Output)
		}
		if n := icmpInEchos(t) - before; n != packets {
			t.Errorf("%d echo requests received, want %d", n, packets)
		}
		// Timers never fire early: the last request went out no sooner.
		if got.Duration < (packets-1)*interval {
			t.Errorf("run took %v, less than %d intervals of %v", got.Duration, packets-1, interval)
		}
	})

	// Runs at once each get their own replies, none lost to another's
	// socket.
	t.Run("concurrent", func(t *testing.T) {
		p, err := NewICMP(ICMP{Host: "127.0.0.1", Packets: 5, Interval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		results := make([]check.Result, 8)
		for i := range results {
			wg.Go(func() { results[i] = p.Run(t.Context()) })
		}
		wg.Wait()
		for i, r := range results {
			if r.Status != check.OK || !strings.Contains(r.Output, "Packet loss = 0%") {
				t.Errorf("run %d: %v %q, want OK, no loss", i, r.Status, r.Output)
			}
		}
	})

	// Runs that get every reply, lose them all to the timeout, or are
	// canceled leave no goroutine of theirs behind.
	t.Run("no goroutine left", func(t *testing.T) {
		var probes []Probe
		for _, o := range []ICMP{
			{Host: "127.0.0.1", Packets: 2, Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond},
			{Host: "::1", Packets: 2, Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond},
		} {
			p, err := NewICMP(o)
			if err != nil {
				t.Fatal(err)
			}
			probes = append(probes, p)
		}
		canceled, cancel := context.WithCancel(t.Context())
		cancel()
		before := runtime.NumGoroutine()
		for range 3 {
			for _, p := range probes {
				p.Run(t.Context())
				p.Run(canceled)
			}
		}
		setSysctl(t, "net/ipv4/icmp_echo_ignore_all", "1")
		for range 3 {
			if r := probes[0].Run(t.Context()); !strings.Contains(r.Output, "Packet loss = 100%") {
				t.Errorf("echo ignored: %v %q, want a total loss", r.Status, r.Output)
			}
		}
		await.Until(t, "goroutines back to "+strconv.Itoa(before), func() bool { return runtime.NumGoroutine() <= before })
	})

	// Sockets not allowed to this process's group: UNKNOWN, naming the
	// sysctl and the command that allows them.
	t.Run("not allowed", func(t *testing.T) {
		setSysctl(t, "net/ipv4/ping_group_range", "1 0")
		assertNotAllowed(t, `net.ipv4.ping_group_range is "1 0"`)
	})
}

// TestICMPNotAllowedOnHost: on a host whose net.ipv4.ping_group_range
// leaves this process's group out (root's too: the sysctl is the only
// gate), a run is UNKNOWN and says what to run. Skipped on a host that
// allows it; TestICMPInNamespace denies it in its namespace anyway.
func TestICMPNotAllowedOnHost(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(pingGroupRange)
	if err != nil {
		t.Skip(err)
	}
	var lo, hi int
	fields := strings.Fields(string(b))
	if len(fields) == 2 {
		lo, _ = strconv.Atoi(fields[0])
		hi, _ = strconv.Atoi(fields[1])
	}
	groups, _ := os.Getgroups()
	groups = append(groups, os.Getegid())
	if slices.ContainsFunc(groups, func(g int) bool { return g >= lo && g <= hi }) {
		t.Skipf("this host's net.ipv4.ping_group_range %q allows this process's groups", strings.Join(fields, " "))
	}
	assertNotAllowed(t, `net.ipv4.ping_group_range is "`+strings.Join(fields, " ")+`"`)
}

// assertNotAllowed runs a probe where ICMP datagram sockets are not
// allowed: UNKNOWN, naming the sysctl's value and the command to run.
func assertNotAllowed(t *testing.T, value string) {
	t.Helper()
	for _, host := range []string{"127.0.0.1", "::1"} {
		p, err := NewICMP(ICMP{Host: host})
		if err != nil {
			t.Fatal(err)
		}
		got := p.Run(t.Context())
		want := []string{"PING UNKNOWN - ICMP datagram sockets are not allowed to group " + strconv.Itoa(os.Getegid()),
			value, `allow them with: sysctl -w net.ipv4.ping_group_range="0 2147483647"`}
		if got.Status != check.Unknown || got.Perf != nil {
			t.Errorf("%s: got %v %q %v, want UNKNOWN without perfdata", host, got.Status, got.Output, got.Perf)
		}
		for _, w := range want {
			if !strings.Contains(got.Output, w) {
				t.Errorf("%s: output %q lacks %q", host, got.Output, w)
			}
		}
	}
	// What the node's self check reports (dmonitor.plugins).
	err := ICMPAllowed()
	if err == nil {
		t.Fatal("ICMPAllowed: nil where sockets are not allowed")
	}
	for _, w := range []string{"ICMP datagram sockets are not allowed to group " + strconv.Itoa(os.Getegid()),
		value, `allow them with: sysctl -w net.ipv4.ping_group_range="0 2147483647"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("ICMPAllowed: %q lacks %q", err, w)
		}
	}
}

// loopbackUp brings lo up, down in a new network namespace, as ip link
// set lo up would.
func loopbackUp(t *testing.T) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("lo's flags: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("bringing lo up: %v", err)
	}
}

// setSysctl writes a sysctl of this network namespace and puts its value
// back when the test ends.
func setSysctl(t *testing.T, name, value string) {
	t.Helper()
	path := "/proc/sys/" + name
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			t.Error(err)
		}
	})
}

// icmpInEchos reads how many ICMP echo requests this namespace received.
func icmpInEchos(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		if i := slices.Index(names, "InEchos"); i > 0 && i < len(fields) {
			n, err := strconv.Atoi(fields[i])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Icmp InEchos in /proc/net/snmp")
	return 0
}

// pt is a PingThreshold.
func pt(rta time.Duration, loss int) PingThreshold { return PingThreshold{RTA: rta, Loss: loss} }

// pingArgs is the check_ping command line equivalent to o.
func pingArgs(o ICMP) []string {
	return []string{"-H", o.Host, "-w", o.Warn.String(), "-c", o.Crit.String(),
		"-p", strconv.Itoa(o.Packets), "-t", secs(o.Timeout)}
}

// TestParsePingThreshold reads check_ping's -w and -c forms.
func TestParsePingThreshold(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PingThreshold
		err  string
	}{
		{in: "100,20%", want: pt(100*time.Millisecond, 20)},
		{in: "0.5,0%", want: pt(500*time.Microsecond, 0)},
		{in: "250", want: pt(250*time.Millisecond, 0)},
		{in: "60%", want: pt(0, 60)},
		{in: "1.5s,100%", want: pt(1500*time.Millisecond, 100)},
		{in: "100,20", err: `packet loss "20" lacks its %`},
		{in: "100,120%", err: `packet loss "120%" is not a percentage from 0 to 100`},
		{in: "fast,20%", err: `round trip average "fast" is not a number of milliseconds`},
		{in: "-5,20%", err: `round trip average "-5" out of range`},
		{in: "NaN,20%", err: `round trip average "NaN" out of range`},
		{in: ",20%", err: "empty part"},
	} {
		got, err := ParsePingThreshold(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParsePingThreshold(%q) = %v, %v, want error %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParsePingThreshold(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
	if s := pt(100*time.Millisecond, 20).String(); s != "100,20%" {
		t.Errorf("String() = %q, want 100,20%%", s)
	}
}

// TestNewICMPRefuses: options a probe cannot run with are refused, naming
// the offender.
func TestNewICMPRefuses(t *testing.T) {
	for _, tc := range []struct {
		o    ICMP
		want string
	}{
		{ICMP{}, "no host"},
		{ICMP{Host: "h", Packets: -1}, "packets -1 out of range"},
		{ICMP{Host: "h", Interval: time.Millisecond}, "interval 1ms below 10ms"},
		{ICMP{Host: "h", Interval: -time.Second}, "interval -1s is negative"},
		{ICMP{Host: "h", Warn: pt(500*time.Millisecond, 0), Crit: pt(100*time.Millisecond, 0)}, "warn round trip 500ms above crit 100ms"},
		{ICMP{Host: "h", Warn: pt(0, 80), Crit: pt(0, 40)}, "warn loss 80% above crit 40%"},
		{ICMP{Host: "h", Packets: 11, Interval: time.Second}, "11 packets 1s apart take 10s, not less than the timeout 10s"},
		{ICMP{Host: "h", Timeout: -time.Second}, "timeout -1s is negative"},
	} {
		_, err := NewICMP(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewICMP(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
