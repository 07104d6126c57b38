package probe

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/dmonitor/dmonitor/check"
)

// DNS are the options of a DNS probe, check_dns's equivalents in brackets.
type DNS struct {
	// Name is the name looked up, or an address, whose PTR record is
	// looked up [-H].
	Name string
	// RecordType is the type of the records asked for, one of
	// DNSRecordTypes in any case. "" asks what check_dns asks: the A and
	// AAAA records of a name, the PTR record of an address.
	RecordType string
	// Server is the name server asked, "host" or "host:port" (port 53 by
	// default) [-s]. "" asks the nameservers of /etc/resolv.conf in turn,
	// as nslookup does, each for its share of the timeout; the name is
	// taken as fully qualified (no search domains).
	Server string
	// Expect lists answers that must each be among the records returned,
	// else the result is CRITICAL; other records may be returned too. An
	// answer is written as dig +short writes it ("127.0.0.1", "10
	// mx.example.org.", `"v=spf1 -all"`); an address also matches a CIDR
	// ("10.0.0.0/8") and the same address written another way, and a host
	// name matches without its final dot, in any case, alone or as the
	// host of an MX or SRV record; a TXT record also matches unquoted.
	// check_dns -a is OK when any expected answer appears, with -L when
	// they are exactly the answers; every one must appear here.
	Expect  []string
	Timeout time.Duration // [-t] the whole run; 0 means DefaultTimeout
	Warn    time.Duration // [-w] response time above which WARNING; 0 unset
	Crit    time.Duration // [-c] response time above which CRITICAL; 0 unset
}

// dnsTypes are the record types a DNS probe asks for by name.
var dnsTypes = map[string]dnsmessage.Type{
	"A": dnsmessage.TypeA, "AAAA": dnsmessage.TypeAAAA, "CNAME": dnsmessage.TypeCNAME,
	"MX": dnsmessage.TypeMX, "NS": dnsmessage.TypeNS, "PTR": dnsmessage.TypePTR,
	"SOA": dnsmessage.TypeSOA, "SRV": dnsmessage.TypeSRV, "TXT": dnsmessage.TypeTXT,
}

// DNSRecordTypes returns the record types a DNS probe can ask for, sorted.
func DNSRecordTypes() []string {
	names := make([]string, 0, len(dnsTypes))
	for n := range dnsTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// resolvConf names the system's nameservers.
const resolvConf = "/etc/resolv.conf"

// ednsSize is the UDP payload size a query advertises: the DNS flag day's
// 1232 bytes, which fits any path's MTU without fragments.
const ednsSize = 1232

// NewDNS checks o and returns its probe.
func NewDNS(o DNS) (Probe, error) {
	if o.Name == "" {
		return nil, errors.New("dns probe: no name")
	}
	if err := validTimes("dns", &o.Timeout, &o.Warn, &o.Crit); err != nil {
		return nil, err
	}
	p := &dnsProbe{o: o, resolvConf: resolvConf}
	qname := o.Name
	addr, err := netip.ParseAddr(o.Name)
	isAddr := err == nil
	t := strings.ToUpper(o.RecordType)
	switch {
	case t == "" && isAddr, t == "PTR":
		p.types = []dnsmessage.Type{dnsmessage.TypePTR}
		if isAddr {
			qname = reverseName(addr)
		}
	case t == "":
		p.types = []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}
	default:
		typ, ok := dnsTypes[t]
		if !ok {
			return nil, fmt.Errorf("dns probe: record type %q: want one of %s", o.RecordType, strings.Join(DNSRecordTypes(), ", "))
		}
		p.types = []dnsmessage.Type{typ}
	}
	if !strings.HasSuffix(qname, ".") {
		qname += "."
	}
	if p.qname, err = dnsmessage.NewName(qname); err == nil {
		// Packing is where the labels are judged.
		_, err = buildQuery(0, p.qname, p.types[0])
	}
	if err != nil {
		return nil, fmt.Errorf("dns probe: name %q: %w", o.Name, err)
	}
	if o.Server != "" {
		if p.server, err = serverAddr(o.Server); err != nil {
			return nil, fmt.Errorf("dns probe: server %q: %w", o.Server, err)
		}
	}
	for _, e := range o.Expect {
		if e == "" {
			return nil, errors.New("dns probe: an expected answer is empty")
		}
		if strings.Contains(e, "/") {
			if _, err := netip.ParsePrefix(e); err != nil {
				return nil, fmt.Errorf("dns probe: expected answer %q: %w", e, err)
			}
		}
	}
	return p, nil
}

// serverAddr completes a server as host:port: an address or a name alone
// gets port 53.
func serverAddr(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(a.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") {
			return "", err
		}
		return net.JoinHostPort(s, "53"), nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q out of range 1..65535", port)
	}
	if host == "" {
		return "", errors.New("no host")
	}
	return s, nil
}

// reverseName is the PTR name of a: d.c.b.a.in-addr.arpa or the nibbles of
// an IPv6 address under ip6.arpa.
func reverseName(a netip.Addr) string {
	a = a.Unmap()
	var b strings.Builder
	if a.Is4() {
		v := a.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(v[i])) + ".")
		}
		b.WriteString("in-addr.arpa.")
		return b.String()
	}
	const hex = "0123456789abcdef"
	v := a.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[v[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[v[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa.")
	return b.String()
}

type dnsProbe struct {
	o      DNS
	qname  dnsmessage.Name
	types  []dnsmessage.Type
	server string // host:port; "" for the nameservers of resolvConf
	// resolvConf is the file naming the nameservers when server is "";
	// tests point it elsewhere.
	resolvConf string
}

var _ Probe = (*dnsProbe)(nil)

// dnsReply is what one query got back.
type dnsReply struct {
	rcode     dnsmessage.RCode
	truncated bool
	answers   []string // the records of the type asked for, as dig +short writes them
}

// nameserver is a server to ask and how messages name it.
type nameserver struct{ addr, shown string }

func (p *dnsProbe) Run(parent context.Context) check.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, p.o.Timeout)
	defer cancel()

	servers := []nameserver{{p.server, p.o.Server}}
	if p.server == "" {
		servers = systemNameservers(p.resolvConf)
	}
	var (
		replies []dnsReply
		err     error
		used    nameserver
	)
	for i, s := range servers {
		used = s
		sctx, scancel := ctx, context.CancelFunc(func() {})
		if rest := len(servers) - i; rest > 1 {
			// The servers still to ask share what is left of the timeout.
			dl, _ := ctx.Deadline()
			sctx, scancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(rest))
		}
		replies, err = p.ask(sctx, s.addr)
		scancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	elapsed := time.Since(start)
	if err != nil {
		return p.askFailure(parent, start, used.shown, err)
	}

	var answers []string
	for _, r := range replies {
		if r.rcode != dnsmessage.RCodeSuccess {
			return result(start, check.Critical, p.rcodeMessage(used.shown, r.rcode), nil)
		}
		answers = append(answers, r.answers...)
	}
	if len(answers) == 0 {
		return result(start, check.Critical, fmt.Sprintf("DNS CRITICAL - Domain '%s' was not found by the server (no %s record)", p.o.Name, p.typeNames()), nil)
	}
	slices.Sort(answers) // as check_dns sorts them, by strcmp
	got := strings.Join(answers, ",")
	for _, e := range p.o.Expect {
		if !slices.ContainsFunc(answers, func(a string) bool { return answerMatches(a, e) }) {
			return result(start, check.Critical, fmt.Sprintf("DNS CRITICAL - expected '%s' but got '%s'", strings.Join(p.o.Expect, "; "), got), nil)
		}
	}
	st := timeStatus(elapsed, p.o.Warn, p.o.Crit)
	unit := "seconds"
	if uint64(elapsed.Seconds()) == 1 {
		unit = "second" // check_dns's ngettext on the whole seconds
	}
	msg := fmt.Sprintf("DNS %s: %.3f %s response time. %s returns %s", st, elapsed.Seconds(), unit, p.o.Name, got)
	v, zero := check.Seconds(elapsed), 0.0
	perf := check.Perf{Label: "time", Value: v, Text: fixed6(v), UOM: "s", Warn: threshold(p.o.Warn), Crit: threshold(p.o.Crit), Min: &zero}
	return result(start, st, msg, []check.Perf{perf})
}

// typeNames words the types asked for: "A or AAAA", "MX".
func (p *dnsProbe) typeNames() string {
	names := make([]string, len(p.types))
	for i, t := range p.types {
		names[i] = strings.TrimPrefix(t.String(), "Type")
	}
	return strings.Join(names, " or ")
}

// askFailure words a lookup that got no answer as check_dns words a
// server that does not answer.
func (p *dnsProbe) askFailure(parent context.Context, start time.Time, server string, err error) check.Result {
	if parent.Err() != nil && !errors.Is(context.Cause(parent), context.DeadlineExceeded) {
		return result(start, check.Unknown, "UNKNOWN - probe canceled: "+context.Cause(parent).Error(), nil)
	}
	var ne net.Error
	var op *net.OpError
	var why string
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		why = "within " + strconv.FormatFloat(p.o.Timeout.Seconds(), 'f', -1, 64) + " seconds"
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "(connection refused)"
	case errors.As(err, &op) && op.Err != nil:
		why = "(" + op.Err.Error() + ")"
	default:
		why = "(" + err.Error() + ")"
	}
	return result(start, check.Critical, "DNS CRITICAL - No response from DNS "+server+" "+why, nil)
}

// rcodeMessage words an error a server answered with, in check_dns's
// phrases where it has one.
func (p *dnsProbe) rcodeMessage(server string, rc dnsmessage.RCode) string {
	switch rc {
	case dnsmessage.RCodeNameError:
		return fmt.Sprintf("DNS CRITICAL - Domain '%s' was not found by the server (NXDOMAIN)", p.o.Name)
	case dnsmessage.RCodeServerFailure:
		return fmt.Sprintf("DNS CRITICAL - DNS failure for %s (SERVFAIL for '%s')", server, p.o.Name)
	case dnsmessage.RCodeRefused:
		return fmt.Sprintf("DNS CRITICAL - Connection to DNS %s was refused (REFUSED for '%s')", server, p.o.Name)
	case dnsmessage.RCodeFormatError:
		return fmt.Sprintf("DNS CRITICAL - DNS %s answered FORMERR for '%s'", server, p.o.Name)
	case dnsmessage.RCodeNotImplemented:
		return fmt.Sprintf("DNS CRITICAL - DNS %s answered NOTIMP for '%s'", server, p.o.Name)
	}
	return fmt.Sprintf("DNS CRITICAL - DNS %s answered RCODE %d for '%s'", server, rc, p.o.Name)
}

// systemNameservers reads the nameservers of a resolv.conf file; without
// any, the resolver's default is the local host.
func systemNameservers(path string) []nameserver {
	var ns []nameserver
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() && len(ns) < 3 { // glibc's MAXNS
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "nameserver" {
				if _, err := netip.ParseAddr(fields[1]); err == nil {
					ns = append(ns, nameserver{net.JoinHostPort(fields[1], "53"), fields[1]})
				}
			}
		}
		f.Close()
	}
	if len(ns) == 0 {
		ns = []nameserver{{"127.0.0.1:53", "127.0.0.1"}}
	}
	return ns
}

// ask sends a query for each of the probe's types to server over UDP,
// sends again those still unanswered after 1, 2, 4... seconds, and asks
// again over TCP for those answered truncated. It returns one reply per
// type, or the error that ended the exchange (ctx's when it ran out).
func (p *dnsProbe) ask(ctx context.Context, server string) ([]dnsReply, error) {
	conn, err := dialer().DialContext(ctx, "udp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The caller's cancellation unblocks a read at once: no goroutine of
	// ours waits on the socket.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	deadline, _ := ctx.Deadline()

	queries := make([][]byte, len(p.types))
	ids := make([]uint16, len(p.types))
	for i, t := range p.types {
		ids[i] = uint16(rand.Uint32())
		if queries[i], err = buildQuery(ids[i], p.qname, t); err != nil {
			return nil, err
		}
	}
	replies := make([]*dnsReply, len(p.types))
	send := func() error {
		for i, q := range queries {
			if replies[i] == nil {
				if _, err := conn.Write(q); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := send(); err != nil {
		return nil, err
	}
	wait := time.Second
	resend := time.Now().Add(wait)
	buf := make([]byte, 4096)
	for pending := len(queries); pending > 0; {
		wake := resend
		if deadline.Before(wake) {
			wake = deadline
		}
		_ = conn.SetReadDeadline(wake)
		if ctx.Err() != nil {
			// Checked after the deadline is set: a cancellation since
			// then is not overwritten.
			return nil, ctx.Err()
		}
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return nil, err
			}
			if !time.Now().Before(deadline) {
				return nil, context.DeadlineExceeded
			}
			// A query or its answer may have been lost: UDP's only remedy.
			wait *= 2
			resend = time.Now().Add(wait)
			if err := send(); err != nil {
				return nil, err
			}
			continue
		}
		i, r, ok := p.parseReply(buf[:n], ids)
		if !ok || replies[i] != nil {
			continue // not an answer to a pending query of ours
		}
		replies[i] = &r
		pending--
	}
	out := make([]dnsReply, len(replies))
	for i, r := range replies {
		out[i] = *r
		if r.truncated {
			if out[i], err = p.askTCP(ctx, server, ids[i], queries[i]); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// askTCP asks query again over TCP, as a truncated UDP answer asks.
func (p *dnsProbe) askTCP(ctx context.Context, server string, id uint16, query []byte) (dnsReply, error) {
	conn, err := dialer().DialContext(ctx, "tcp", server)
	if err != nil {
		return dnsReply{}, err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(query)), uint16(len(query)))
	if _, err := conn.Write(append(msg, query...)); err != nil {
		return dnsReply{}, err
	}
	var n [2]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return dnsReply{}, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return dnsReply{}, err
	}
	_, r, ok := p.parseReply(buf, []uint16{id})
	if !ok || r.truncated {
		return dnsReply{}, errors.New("malformed answer over TCP")
	}
	return r, nil
}

// buildQuery packs a recursive query for name and t, advertising EDNS.
func buildQuery(id uint16, name dnsmessage.Name, t dnsmessage.Type) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: name, Type: t, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// parseReply parses msg as the answer to the query of ids[i] and reports
// i; ok is false for anything else (another ID, not a response, another
// question), which a spoofer or a late answer may send.
func (p *dnsProbe) parseReply(msg []byte, ids []uint16) (i int, r dnsReply, ok bool) {
	var ps dnsmessage.Parser
	h, err := ps.Start(msg)
	if err != nil || !h.Response {
		return 0, r, false
	}
	if i = slices.Index(ids, h.ID); i < 0 {
		return 0, r, false
	}
	want := p.types[i]
	qs, err := ps.AllQuestions()
	if err != nil || len(qs) != 1 || qs[0].Type != want || qs[0].Class != dnsmessage.ClassINET ||
		!strings.EqualFold(qs[0].Name.String(), p.qname.String()) {
		return 0, r, false
	}
	r.rcode, r.truncated = h.RCode, h.Truncated
	if r.truncated {
		return i, r, true
	}
	for {
		rh, err := ps.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return 0, r, false
		}
		// Only the records of the type asked for: an A query answered
		// through a CNAME gives the addresses, as nslookup's do.
		if rh.Type != want || rh.Class != dnsmessage.ClassINET {
			if err := ps.SkipAnswer(); err != nil {
				return 0, r, false
			}
			continue
		}
		a, err := renderAnswer(&ps, want)
		if err != nil {
			return 0, r, false
		}
		r.answers = append(r.answers, a)
	}
	return i, r, true
}

// renderAnswer reads the current answer, of type t, and writes it as dig
// +short does.
func renderAnswer(ps *dnsmessage.Parser, t dnsmessage.Type) (string, error) {
	switch t {
	case dnsmessage.TypeA:
		r, err := ps.AResource()
		return netip.AddrFrom4(r.A).String(), err
	case dnsmessage.TypeAAAA:
		r, err := ps.AAAAResource()
		return netip.AddrFrom16(r.AAAA).String(), err
	case dnsmessage.TypeCNAME:
		r, err := ps.CNAMEResource()
		return r.CNAME.String(), err
	case dnsmessage.TypeNS:
		r, err := ps.NSResource()
		return r.NS.String(), err
	case dnsmessage.TypePTR:
		r, err := ps.PTRResource()
		return r.PTR.String(), err
	case dnsmessage.TypeMX:
		r, err := ps.MXResource()
		return fmt.Sprintf("%d %s", r.Pref, r.MX.String()), err
	case dnsmessage.TypeSRV:
		r, err := ps.SRVResource()
		return fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, r.Target.String()), err
	case dnsmessage.TypeSOA:
		r, err := ps.SOAResource()
		return fmt.Sprintf("%s %s %d %d %d %d %d", r.NS.String(), r.MBox.String(), r.Serial, r.Refresh, r.Retry, r.Expire, r.MinTTL), err
	case dnsmessage.TypeTXT:
		r, err := ps.TXTResource()
		parts := make([]string, len(r.TXT))
		for i, s := range r.TXT {
			parts[i] = quoteTXT(s)
		}
		return strings.Join(parts, " "), err
	}
	return "", fmt.Errorf("record type %v not rendered", t)
}

// quoteTXT quotes one string of a TXT record as dig does: in double
// quotes, with " and \ escaped and bytes outside printable ASCII as \DDD.
func quoteTXT(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// answerMatches reports whether the answer a, as renderAnswer writes it,
// is the expected answer e (DNS.Expect).
func answerMatches(a, e string) bool {
	if a == e {
		return true
	}
	if addr, err := netip.ParseAddr(a); err == nil {
		if pfx, err := netip.ParsePrefix(e); err == nil {
			return pfx.Contains(addr)
		}
		want, err := netip.ParseAddr(e)
		return err == nil && want == addr
	}
	if strings.HasPrefix(a, `"`) {
		// A TXT record of one string without escapes matches its text.
		return strings.Count(a, `"`) == 2 && !strings.Contains(a, `\`) && a[1:len(a)-1] == e
	}
	sameName := func(name string) bool {
		return strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(e, "."))
	}
	if sameName(a) {
		return true
	}
	// The host of an MX or SRV record, the name that ends it.
	i := strings.LastIndexByte(a, ' ')
	return i >= 0 && strings.HasSuffix(a, ".") && sameName(a[i+1:])
}
