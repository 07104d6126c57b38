// Package probe runs the commonest checks in-process: a TCP connect, a TLS
// certificate's expiry, an HTTP(S) request, a DNS lookup, an ICMP echo.
// Each probe gives the result a
// Debian monitoring-plugins check gives for the same target (status, a
// message with the same key phrases, perfdata with the same labels, units,
// thresholds, minimum and maximum), so rules, graphs and dashboards do not
// care whether a plugin or a probe ran:
//
//	TCP   check_tcp -H host -p port [-s send] [-e expect] [-w] [-c] [-t]
//	TLS   check_tcp -H host -p port -S --sni -D warn,crit [-w] [-c] [-t]
//	HTTP  check_http -H host -p port -u path [-S --sni] [-e] [-s] [-r] [-f follow]
//	      [-C warn,crit --continue-after-certificate] [-w] [-c] [-t]
//	DNS   check_dns -H name [-s server] [-q type] [-a expect...] [-w] [-c] [-t]
//	ICMP  check_ping -H host -p packets -w rta,pl% -c rta,pl% [-t]
//
// A probe is built once from its options (New* validates them) and run as
// often as the schedule asks; it keeps no state between runs but what the
// options imply (an HTTP probe's http.Client), and a run leaves no
// goroutine or connection behind when it returns.
package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// Probe is one configured in-process check.
type Probe interface {
	// Run probes the target once, within the probe's timeout and ctx, and
	// returns the result as a plugin run would have: Status, Raw (the status
	// name), ExitCode (the plugin exit code of Status), Output, Perf, Start
	// and Duration. Host, Check and Observer are the caller's to fill in.
	Run(ctx context.Context) check.Result
}

// DefaultTimeout is the timeout of a probe whose options give none: the
// plugins' default (-t 10).
const DefaultTimeout = 10 * time.Second

// dialer is the dialer of every probe. A probe's connection carries one
// exchange and is closed, so TCP keep-alive, which net.Dialer turns on by
// default at the cost of four setsockopt calls a connection, buys nothing.
func dialer() *net.Dialer { return &net.Dialer{KeepAlive: -1} }

// result assembles a check.Result as a plugin run would have produced it.
func result(start time.Time, st check.Status, out string, perf []check.Perf) check.Result {
	return check.Result{
		Status:   st,
		Raw:      st.String(),
		ExitCode: int(st),
		Output:   out,
		Perf:     perf,
		Start:    start,
		Duration: time.Since(start),
	}
}

// worse returns the more severe of a and b by the plugins' max_state order:
// CRITICAL > WARNING > UNKNOWN > OK.
func worse(a, b check.Status) check.Status {
	rank := func(s check.Status) int {
		switch s {
		case check.Critical:
			return 3
		case check.Warning:
			return 2
		case check.Unknown:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// timeStatus judges an elapsed time against the thresholds as check_tcp and
// check_http do: strictly greater than crit is CRITICAL, than warn WARNING;
// a zero threshold is unset.
func timeStatus(elapsed, warn, crit time.Duration) check.Status {
	switch {
	case crit > 0 && elapsed > crit:
		return check.Critical
	case warn > 0 && elapsed > warn:
		return check.Warning
	}
	return check.OK
}

// fixed6 writes v as C's printf %f does (six decimals), the form the
// plugins' perfdata takes.
func fixed6(v float64) string { return strconv.FormatFloat(v, 'f', 6, 64) }

// threshold writes a time threshold as the plugins do: %f seconds, or ""
// when unset.
func threshold(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fixed6(d.Seconds())
}

// timePerf is the time item of check_tcp and check_http:
// time=<s>s;[warn];[crit];0.000000;<timeout>.
func timePerf(elapsed, warn, crit, timeout time.Duration) check.Perf {
	v := check.Seconds(elapsed)
	zero, max := 0.0, timeout.Seconds()
	return check.Perf{
		Label: "time", Value: v, Text: fixed6(v), UOM: "s",
		Warn: threshold(warn), Crit: threshold(crit),
		Min: &zero, Max: &max,
	}
}

// timeoutMessage is what the plugins print when their alarm fires.
func timeoutMessage(timeout time.Duration) string {
	return "CRITICAL - Socket timeout after " + strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64) + " seconds"
}

// failure classifies an error of a run: whether it is the probe's own
// timeout (CRITICAL, "Socket timeout", as the plugins' alarm), the caller
// giving up (UNKNOWN: nothing was learnt about the target), or a failure
// of the target (CRITICAL with the error).
func failure(parent context.Context, err error, timeout time.Duration) (check.Status, string, bool) {
	if parent.Err() != nil && !errors.Is(context.Cause(parent), context.DeadlineExceeded) {
		return check.Unknown, "UNKNOWN - probe canceled: " + context.Cause(parent).Error(), true
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return check.Critical, timeoutMessage(timeout), true
	}
	return 0, "", false
}

// connectError words a failed connect as the plugins' np_net_connect does:
// "connect to address A and port P: Connection refused".
func connectError(host string, port int, err error) string {
	reason := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "Connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH):
		reason = "No route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		reason = "Network is unreachable"
	default:
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			reason = op.Err.Error()
		}
	}
	return fmt.Sprintf("connect to address %s and port %d: %s", host, port, reason)
}

// validPort reports an error naming the option when port is out of range.
func validPort(kind string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s probe: port %d out of range 1..65535", kind, port)
	}
	return nil
}

// validTimes fills in the default timeout and refuses negative durations.
func validTimes(kind string, timeout, warn, crit *time.Duration) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", *timeout}, {"warn", *warn}, {"crit", *crit}} {
		if d.v < 0 {
			return fmt.Errorf("%s probe: %s %v is negative", kind, d.name, d.v)
		}
	}
	if *timeout == 0 {
		*timeout = DefaultTimeout
	}
	return nil
}
