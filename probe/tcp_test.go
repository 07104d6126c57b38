package probe

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// TestTCPAgainstCheckTCP runs the TCP probe and check_tcp against the same
// loopback targets and compares their results field by field.
//
// The margins keep timing noise from flipping a status: "slow" answers
// after 1 s against a warn of 0.2 s and a timeout of 5 s; "silent" never
// answers and is cut by a 1 s timeout.
func TestTCPAgainstCheckTCP(t *testing.T) {
	t.Parallel()
	const warn, crit, timeout = 200 * time.Millisecond, 3 * time.Second, 5 * time.Second
	up := startTCP(t, 0, "HELLO world\r\n")
	slow := startTCP(t, time.Second, "HELLO slow\r\n")
	silent := startTCP(t, 0, "")
	down := closedPort(t)

	for _, tc := range []struct {
		name string
		o    TCP
		want comparison
	}{
		// A listener: connected, fast, thresholds and timeout in perfdata.
		{"up", TCP{Port: up, Warn: warn, Crit: crit, Timeout: timeout},
			comparison{status: check.OK, phrases: []string{"TCP OK", "second response time on 127.0.0.1 port " + strconv.Itoa(up)}}},
		// Without thresholds: empty warn/crit, the default 10 s as max.
		{"up default", TCP{Port: up},
			comparison{status: check.OK, phrases: []string{"TCP OK"}}},
		// Send and expect: the banner is shown in brackets.
		{"expect", TCP{Port: up, Send: "hi\r\n", Expect: "HELLO", Timeout: timeout},
			comparison{status: check.OK, phrases: []string{"TCP OK", "[HELLO world]"}}},
		// Nothing listens.
		{"down", TCP{Port: down, Timeout: timeout},
			comparison{status: check.Critical, phrases: []string{"Connection refused", "port " + strconv.Itoa(down)}}},
		// The banner comes after 1 s: above warn, below crit.
		{"slow", TCP{Port: slow, Expect: "HELLO", Warn: warn, Crit: crit, Timeout: timeout},
			comparison{status: check.Warning, phrases: []string{"TCP WARNING", "[HELLO slow]"}}},
		// The banner comes after 1 s: above crit too.
		{"slow crit", TCP{Port: slow, Expect: "HELLO", Warn: warn, Crit: 500 * time.Millisecond, Timeout: timeout},
			comparison{status: check.Critical, phrases: []string{"TCP CRITICAL", "[HELLO slow]"}}},
		// A banner without the expected string is WARNING (-M warn).
		{"wrong content", TCP{Port: up, Expect: "SSH-", Timeout: timeout},
			comparison{status: check.Warning, phrases: []string{"Unexpected response from host/socket: HELLO world"}}},
		// A server that never answers: the plugin's alarm.
		{"timeout", TCP{Port: silent, Expect: "HELLO", Timeout: time.Second},
			comparison{status: check.Critical, phrases: []string{"CRITICAL - Socket timeout after 1 seconds"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.o.Host = "127.0.0.1"
			p, err := NewTCP(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			plug := runPlugin(t, "check_tcp", tcpArgs(tc.o)...)
			compare(t, got, plug, tc.want)
		})
	}
}

// tcpArgs is the check_tcp command line equivalent to o.
func tcpArgs(o TCP) []string {
	args := []string{"-H", o.Host, "-p", strconv.Itoa(o.Port)}
	if o.Send != "" {
		args = append(args, "-s", o.Send)
	}
	if o.Expect != "" {
		args = append(args, "-e", o.Expect)
	}
	if o.Warn > 0 {
		args = append(args, "-w", secs(o.Warn))
	}
	if o.Crit > 0 {
		args = append(args, "-c", secs(o.Crit))
	}
	if o.Timeout > 0 {
		args = append(args, "-t", secs(o.Timeout))
	}
	return args
}

// TestTCPCanceled: a caller that gives up gets UNKNOWN at once, not a
// verdict on the target.
func TestTCPCanceled(t *testing.T) {
	t.Parallel()
	silent := startTCP(t, 0, "")
	p, err := NewTCP(TCP{Host: "127.0.0.1", Port: silent, Expect: "x", Timeout: time.Minute})
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

// TestNewTCPRefuses: options a probe cannot run with are refused, naming
// the offender.
func TestNewTCPRefuses(t *testing.T) {
	for _, tc := range []struct {
		o    TCP
		want string
	}{
		{TCP{Port: 80}, "no host"},
		{TCP{Host: "h", Port: 0}, "port 0 out of range"},
		{TCP{Host: "h", Port: 70000}, "port 70000 out of range"},
		{TCP{Host: "h", Port: 1, Warn: -time.Second}, "warn -1s is negative"},
	} {
		_, err := NewTCP(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewTCP(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
