package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/dmonitor/dmonitor/check"
)

// ICMP are the options of an ICMP echo probe, check_ping's equivalents in
// brackets. It sends its echo requests over an unprivileged ICMP datagram
// socket, which Linux allows only to the groups of the sysctl
// net.ipv4.ping_group_range (for IPv6 too); where the process's group is
// not among them, every run is UNKNOWN and says how to allow it.
type ICMP struct {
	// Host is the address pinged, or a name looked up at each run, whose
	// first address is pinged [-H].
	Host string
	// Packets is the number of echo requests sent [-p]; 0 means 5.
	Packets int
	// Interval is the time between two requests; 0 means 200ms. (check_ping
	// runs ping, which waits a second.)
	Interval time.Duration
	// Warn and Crit judge the round trip average and the packet loss as
	// check_ping's -w and -c: at or above either of Crit the result is
	// CRITICAL, else at or above either of Warn WARNING. A total loss is
	// CRITICAL whatever the thresholds.
	Warn, Crit PingThreshold
	// Timeout bounds the whole run [-t]: a reply that has not come by then
	// is lost. 0 means DefaultTimeout; it must leave time to send every
	// request.
	Timeout time.Duration
}

// PingThreshold is one of check_ping's thresholds, -w or -c "rta,pl%".
type PingThreshold struct {
	RTA  time.Duration // round trip average; 0 does not judge it
	Loss int           // packet loss, percent; 0 does not judge it (1 is any loss)
}

// ParsePingThreshold parses a threshold as check_ping's -w and -c take it:
// "rta,pl%", or "rta" or "pl%" alone. rta is in milliseconds ("100",
// "0.5"), or a duration with its unit ("1.5s", "100ms").
func ParsePingThreshold(s string) (PingThreshold, error) {
	bad := func(why string) (PingThreshold, error) {
		return PingThreshold{}, fmt.Errorf("threshold %q: %s (want rta,pl%% as check_ping's, e.g. 100,20%%)", s, why)
	}
	var t PingThreshold
	rta, pl, both := strings.Cut(s, ",")
	if !both && strings.HasSuffix(s, "%") {
		rta, pl = "", s
	}
	if both && (rta == "" || pl == "") {
		return bad("empty part")
	}
	if rta != "" {
		if ms, err := strconv.ParseFloat(rta, 64); err == nil {
			if !(ms >= 0 && ms < 1e9) { // and not NaN
				return bad("round trip average " + strconv.Quote(rta) + " out of range")
			}
			t.RTA = time.Duration(ms * float64(time.Millisecond))
		} else if t.RTA, err = time.ParseDuration(rta); err != nil {
			return bad("round trip average " + strconv.Quote(rta) + " is not a number of milliseconds")
		} else if t.RTA < 0 {
			return bad("negative round trip average")
		}
	}
	if pl != "" {
		n, ok := strings.CutSuffix(pl, "%")
		if !ok {
			return bad("packet loss " + strconv.Quote(pl) + " lacks its %")
		}
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 || v > 100 {
			return bad("packet loss " + strconv.Quote(pl) + " is not a percentage from 0 to 100")
		}
		t.Loss = v
	}
	return t, nil
}

// String writes t as ParsePingThreshold reads it: "100,20%".
func (t PingThreshold) String() string {
	var parts []string
	if t.RTA > 0 {
		parts = append(parts, strconv.FormatFloat(float64(t.RTA)/float64(time.Millisecond), 'f', -1, 64))
	}
	if t.Loss > 0 {
		parts = append(parts, strconv.Itoa(t.Loss)+"%")
	}
	return strings.Join(parts, ",")
}

// Defaults of an ICMP probe.
const (
	DefaultPackets      = 5
	DefaultPingInterval = 200 * time.Millisecond
	minPingInterval     = 10 * time.Millisecond // a flood is not a probe
)

// NewICMP checks o and returns its probe.
func NewICMP(o ICMP) (Probe, error) {
	if o.Host == "" {
		return nil, errors.New("icmp probe: no host")
	}
	var noWarn, noCrit time.Duration
	if err := validTimes("icmp", &o.Timeout, &noWarn, &noCrit); err != nil {
		return nil, err
	}
	if o.Interval < 0 {
		return nil, fmt.Errorf("icmp probe: interval %v is negative", o.Interval)
	}
	if o.Packets < 0 || o.Packets > 65535 {
		return nil, fmt.Errorf("icmp probe: packets %d out of range 1..65535", o.Packets)
	}
	if o.Packets == 0 {
		o.Packets = DefaultPackets
	}
	if o.Interval == 0 {
		o.Interval = DefaultPingInterval
	}
	if o.Interval < minPingInterval {
		return nil, fmt.Errorf("icmp probe: interval %v below %v", o.Interval, minPingInterval)
	}
	for _, t := range []PingThreshold{o.Warn, o.Crit} {
		if t.RTA < 0 || t.Loss < 0 || t.Loss > 100 {
			return nil, fmt.Errorf("icmp probe: threshold %d%% or %v out of range", t.Loss, t.RTA)
		}
	}
	// check_ping refuses these too: a warning that could never be seen.
	if o.Warn.RTA > 0 && o.Crit.RTA > 0 && o.Warn.RTA > o.Crit.RTA {
		return nil, fmt.Errorf("icmp probe: warn round trip %v above crit %v", o.Warn.RTA, o.Crit.RTA)
	}
	if o.Warn.Loss > 0 && o.Crit.Loss > 0 && o.Warn.Loss > o.Crit.Loss {
		return nil, fmt.Errorf("icmp probe: warn loss %d%% above crit %d%%", o.Warn.Loss, o.Crit.Loss)
	}
	if sending := time.Duration(o.Packets-1) * o.Interval; sending >= o.Timeout {
		return nil, fmt.Errorf("icmp probe: %d packets %v apart take %v, not less than the timeout %v", o.Packets, o.Interval, sending, o.Timeout)
	}
	return &icmpProbe{o: o}, nil
}

type icmpProbe struct{ o ICMP }

var _ Probe = (*icmpProbe)(nil)

// pingGroupRange is the sysctl that allows ICMP datagram sockets.
const pingGroupRange = "/proc/sys/net/ipv4/ping_group_range"

func (p *icmpProbe) Run(parent context.Context) check.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, p.o.Timeout)
	defer cancel()
	canceled := func() (check.Result, bool) {
		if parent.Err() != nil && !errors.Is(context.Cause(parent), context.DeadlineExceeded) {
			return result(start, check.Unknown, "UNKNOWN - probe canceled: "+context.Cause(parent).Error(), nil), true
		}
		return check.Result{}, false
	}

	addr, err := netip.ParseAddr(p.o.Host)
	if err != nil {
		addrs, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", p.o.Host)
		if r, ok := canceled(); ok {
			return r
		}
		if lerr != nil || len(addrs) == 0 {
			// check_ping refuses a name it cannot look up as a bad
			// argument, before any ping: UNKNOWN.
			why := "no address"
			if lerr != nil {
				why = lerr.Error()
			}
			return result(start, check.Unknown, fmt.Sprintf("PING UNKNOWN - Invalid hostname/address - %s: %s", p.o.Host, why), nil)
		}
		addr = addrs[0]
	}
	addr = addr.Unmap()

	network, bind, proto := "udp4", "0.0.0.0", 1
	var request, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if addr.Is6() {
		network, bind, proto = "udp6", "::", 58
		request, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	conn, err := icmp.ListenPacket(network, bind)
	if err != nil {
		return result(start, check.Unknown, socketMessage(err), nil)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	deadline, _ := ctx.Deadline()
	dst := &net.UDPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}

	// The kernel gives the socket an echo ID of its own and delivers it
	// only the replies that carry it: runs at once do not see each other's.
	n := p.o.Packets
	sent := make([]time.Time, n)
	rtt := make([]time.Duration, n)
	next, received := 0, 0
	nextAt := start
	buf := make([]byte, 1500)
	for received < n {
		if next < n && !time.Now().Before(nextAt) {
			msg := icmp.Message{Type: request, Body: &icmp.Echo{Seq: next, Data: []byte("dmonitor")}}
			b, err := msg.Marshal(nil)
			if err != nil {
				return result(start, check.Unknown, "PING UNKNOWN - "+err.Error(), nil)
			}
			sent[next] = time.Now()
			if _, err := conn.WriteTo(b, dst); err != nil {
				return result(start, check.Critical, sendMessage(p.o.Host, err), nil)
			}
			next++
			nextAt = start.Add(time.Duration(next) * p.o.Interval)
			continue
		}
		wake := deadline
		if next < n && nextAt.Before(wake) {
			wake = nextAt
		}
		_ = conn.SetReadDeadline(wake)
		if ctx.Err() != nil {
			// Checked after the deadline is set: a cancellation since then
			// is not overwritten.
			break
		}
		m, _, err := conn.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if ctx.Err() != nil || !now.Before(deadline) {
				break
			}
			if errors.As(err, &ne) && ne.Timeout() {
				continue // time to send the next request
			}
			return result(start, check.Critical, fmt.Sprintf("PING CRITICAL - %s: %v", p.o.Host, err), nil)
		}
		got, err := icmp.ParseMessage(proto, buf[:m])
		if err != nil || got.Type != reply {
			continue
		}
		echo, ok := got.Body.(*icmp.Echo)
		if !ok || echo.Seq < 0 || echo.Seq >= next || rtt[echo.Seq] > 0 {
			continue // not one of ours, or a duplicate
		}
		rtt[echo.Seq] = max(now.Sub(sent[echo.Seq]), time.Nanosecond)
		received++
	}
	if r, ok := canceled(); ok {
		return r
	}
	return p.judge(start, received, rtt)
}

// judge words the replies as check_ping does: the loss in whole percent,
// the round trip average in milliseconds.
func (p *icmpProbe) judge(start time.Time, received int, rtt []time.Duration) check.Result {
	n := len(rtt)
	loss := (n - received) * 100 / n
	zero := 0.0
	plPerf := check.Perf{Label: "pl", Value: float64(loss), Text: strconv.Itoa(loss), UOM: "%",
		Warn: lossThreshold(p.o.Warn.Loss), Crit: lossThreshold(p.o.Crit.Loss), Min: &zero}
	if received == 0 {
		// check_ping writes rta=U, which carries no value.
		return result(start, check.Critical, "PING CRITICAL - Packet loss = 100%", []check.Perf{plPerf})
	}
	var sum time.Duration
	for _, d := range rtt {
		sum += d
	}
	rta := sum / time.Duration(received)
	over := func(t PingThreshold) bool {
		return t.Loss > 0 && loss >= t.Loss || t.RTA > 0 && rta >= t.RTA
	}
	st := check.OK
	switch {
	case over(p.o.Crit):
		st = check.Critical
	case over(p.o.Warn):
		st = check.Warning
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rtaPerf := check.Perf{Label: "rta", Value: ms(rta), Text: fixed6(ms(rta)), UOM: "ms",
		Warn: rtaThreshold(p.o.Warn.RTA), Crit: rtaThreshold(p.o.Crit.RTA), Min: &zero}
	msg := fmt.Sprintf("PING %s - Packet loss = %d%%, RTA = %.2f ms", st, loss, ms(rta))
	return result(start, st, msg, []check.Perf{rtaPerf, plPerf})
}

// rtaThreshold writes a round trip threshold as check_ping's perfdata: %f
// milliseconds, or "" when unset.
func rtaThreshold(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fixed6(float64(d) / float64(time.Millisecond))
}

// lossThreshold writes a loss threshold as check_ping's perfdata: %d, or
// "" when unset.
func lossThreshold(pl int) string {
	if pl <= 0 {
		return ""
	}
	return strconv.Itoa(pl)
}

// ICMPAllowed says whether this process may open the ICMP datagram
// sockets icmp probes need, and if not, why and what to run: every run of
// an icmp probe is UNKNOWN until it may, which no rule counts as failing.
func ICMPAllowed() error {
	conn, err := icmp.ListenPacket("udp4", "0.0.0.0")
	if err != nil {
		return errors.New(socketProblem(err))
	}
	return conn.Close()
}

// socketMessage words a socket the kernel would not open as a run's
// output.
func socketMessage(err error) string { return "PING UNKNOWN - " + socketProblem(err) }

// socketProblem words a socket the kernel would not open: for a group
// outside net.ipv4.ping_group_range, what to run to allow it.
func socketProblem(err error) string {
	if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
		return "cannot open an ICMP datagram socket: " + err.Error()
	}
	current := "unreadable"
	if b, rerr := os.ReadFile(pingGroupRange); rerr == nil {
		current = `"` + strings.Join(strings.Fields(string(b)), " ") + `"`
	}
	return fmt.Sprintf("ICMP datagram sockets are not allowed to group %d: net.ipv4.ping_group_range is %s; "+
		`allow them with: sysctl -w net.ipv4.ping_group_range="0 2147483647"`, os.Getegid(), current)
}

// sendMessage words a request the kernel would not send, in check_ping's
// words for what ping says then.
func sendMessage(host string, err error) string {
	switch {
	case errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("CRITICAL - Network Unreachable (%s)", host)
	case errors.Is(err, syscall.EHOSTUNREACH):
		return fmt.Sprintf("CRITICAL - Host Unreachable (%s)", host)
	}
	return fmt.Sprintf("PING CRITICAL - %s: %v", host, err)
}
