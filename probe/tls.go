package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// TLS are the options of a TLS certificate probe, the equivalent of
// check_tcp -S --sni -D WarnDays,CritDays (check_tcp's options in brackets).
type TLS struct {
	Host string // [-H]
	Port int    // [-p]
	// ServerName is sent as SNI and verified against; "" means Host.
	ServerName string
	// WarnDays and CritDays judge the whole days left before the server's
	// certificate expires [-D warn,crit]: more than WarnDays is OK, more
	// than CritDays WARNING, else CRITICAL. Less than a day left and an
	// expired certificate are CRITICAL (the plugins' rules, in certStatus).
	WarnDays, CritDays int
	// Verify also verifies the chain and the name against RootCAs (nil: the
	// system's roots); a failure is CRITICAL. The plugins never verify, so
	// without it a self-signed certificate is judged by its expiry alone.
	Verify  bool
	RootCAs *x509.CertPool
	Timeout time.Duration // [-t] the whole run; 0 means DefaultTimeout
	Warn    time.Duration // [-w] connect and handshake time above which WARNING; 0 unset
	Crit    time.Duration // [-c] the same for CRITICAL; 0 unset
}

// NewTLS checks o and returns its probe.
func NewTLS(o TLS) (Probe, error) {
	if o.Host == "" {
		return nil, errors.New("tls probe: no host")
	}
	if err := validPort("tls", o.Port); err != nil {
		return nil, err
	}
	if err := validTimes("tls", &o.Timeout, &o.Warn, &o.Crit); err != nil {
		return nil, err
	}
	if o.WarnDays < 0 || o.CritDays < 0 {
		return nil, fmt.Errorf("tls probe: days %d,%d: negative", o.WarnDays, o.CritDays)
	}
	name := o.ServerName
	if name == "" {
		name = o.Host
	}
	p := &tlsProbe{o: o, addr: net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), name: name}
	// One config for every run: the verification is ours (after the
	// handshake) so that an expired or self-signed certificate is still
	// seen and judged by its days, as the plugins do.
	p.conf = &tls.Config{ServerName: name, InsecureSkipVerify: true}
	if net.ParseIP(name) != nil {
		p.conf.ServerName = "" // no SNI for an address, as crypto/tls would refuse
	}
	return p, nil
}

type tlsProbe struct {
	o    TLS
	addr string
	name string
	conf *tls.Config
}

var _ Probe = (*tlsProbe)(nil)

func (p *tlsProbe) Run(parent context.Context) check.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, p.o.Timeout)
	defer cancel()

	d := tls.Dialer{NetDialer: dialer(), Config: p.conf}
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		if st, msg, ok := failure(parent, err, p.o.Timeout); ok {
			return result(start, st, msg, nil)
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return result(start, check.Critical, connectError(p.o.Host, p.o.Port, err), nil)
		}
		return result(start, check.Critical, "CRITICAL - Cannot make SSL connection: "+err.Error(), nil)
	}
	elapsed := time.Since(start)
	defer conn.Close()
	state := conn.(*tls.Conn).ConnectionState()

	st, msg := certStatus(state.PeerCertificates[0], start, p.o.WarnDays, p.o.CritDays)
	if st != check.OK {
		// check_tcp stops at a certificate that is not OK, without perfdata.
		return result(start, st, msg, nil)
	}
	if p.o.Verify {
		if err := verify(state, p.name, p.o.RootCAs, start); err != nil {
			return result(start, check.Critical, "CRITICAL - certificate verification failed: "+err.Error(), nil)
		}
	}
	st = timeStatus(elapsed, p.o.Warn, p.o.Crit)
	msg += fmt.Sprintf("\nTCP %s - %.3f second response time on %s port %d", st, elapsed.Seconds(), p.o.Host, p.o.Port)
	return result(start, st, msg, []check.Perf{timePerf(elapsed, p.o.Warn, p.o.Crit, p.o.Timeout)})
}

// verify checks the chain the server sent against roots and name, at now.
func verify(state tls.ConnectionState, name string, roots *x509.CertPool, now time.Time) error {
	opts := x509.VerifyOptions{
		Roots:         roots,
		DNSName:       name,
		CurrentTime:   now,
		Intermediates: x509.NewCertPool(),
	}
	for _, c := range state.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := state.PeerCertificates[0].Verify(opts)
	return err
}

// certStatus judges a certificate's expiry as the plugins' sslutils does:
// the days left are the seconds left divided by 86400, truncated; a
// certificate with more than warnDays left is OK, with more than critDays
// WARNING, else CRITICAL; with less than a day left it is counted in hours
// or minutes; an expired one is CRITICAL.
func certStatus(cert *x509.Certificate, now time.Time, warnDays, critDays int) (check.Status, string) {
	cn := cert.Subject.CommonName
	if cn == "" {
		cn = "Unknown CN"
	}
	stamp := cert.NotAfter.Local().Format("Mon Jan _2 15:04:05 2006 -0700")
	left := cert.NotAfter.Sub(now).Seconds()
	days := int(math.Trunc(left / 86400))
	word := func() check.Status {
		if days > critDays {
			return check.Warning
		}
		return check.Critical
	}
	switch {
	case days > 0 && days <= warnDays:
		st := word()
		return st, fmt.Sprintf("%s - Certificate '%s' expires in %d day(s) (%s).", st, cn, days, stamp)
	case days == 0 && left > 0:
		st := word()
		n, unit := int(left/3600), "hours"
		if left < 3600 {
			n, unit = int(left/60), "minutes"
		}
		return st, fmt.Sprintf("%s - Certificate '%s' expires in %d %s (%s)", st, cn, n, unit, stamp)
	case left < 0:
		return check.Critical, fmt.Sprintf("CRITICAL - Certificate '%s' expired on %s.", cn, stamp)
	case days == 0:
		st := word()
		return st, fmt.Sprintf("%s - Certificate '%s' just expired (%s).", st, cn, stamp)
	}
	return check.OK, fmt.Sprintf("OK - Certificate '%s' will expire on %s.", cn, stamp)
}
