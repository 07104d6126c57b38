package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// TCP are the options of a TCP probe, check_tcp's equivalents in brackets.
type TCP struct {
	Host string // [-H] a name or an address
	Port int    // [-p]
	// Send is written once connected [-s]; "" sends nothing.
	Send string
	// Expect must occur in what the server sends, read up to MaxBytes [-e];
	// "" reads nothing. A response without it is WARNING, as check_tcp's
	// default -M warn.
	Expect string
	// MaxBytes bounds the response read while looking for Expect [-m];
	// 0 means 4096.
	MaxBytes int
	Timeout  time.Duration // [-t] the whole run; 0 means DefaultTimeout
	Warn     time.Duration // [-w] response time above which the result is WARNING; 0 unset
	Crit     time.Duration // [-c] response time above which the result is CRITICAL; 0 unset
}

// NewTCP checks o and returns its probe.
func NewTCP(o TCP) (Probe, error) {
	if o.Host == "" {
		return nil, errors.New("tcp probe: no host")
	}
	if err := validPort("tcp", o.Port); err != nil {
		return nil, err
	}
	if err := validTimes("tcp", &o.Timeout, &o.Warn, &o.Crit); err != nil {
		return nil, err
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("tcp probe: max bytes %d is negative", o.MaxBytes)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 4096
	}
	return &tcpProbe{o: o, addr: net.JoinHostPort(o.Host, strconv.Itoa(o.Port))}, nil
}

type tcpProbe struct {
	o    TCP
	addr string
}

var _ Probe = (*tcpProbe)(nil)

func (p *tcpProbe) Run(parent context.Context) check.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, p.o.Timeout)
	defer cancel()

	conn, err := dialer().DialContext(ctx, "tcp", p.addr)
	if err != nil {
		if st, msg, ok := failure(parent, err, p.o.Timeout); ok {
			return result(start, st, msg, nil)
		}
		return result(start, check.Critical, connectError(p.o.Host, p.o.Port, err), nil)
	}
	defer conn.Close()
	// One deadline for the whole exchange, and the caller's cancellation
	// unblocks a read at once: no goroutine of ours waits on the socket.
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var got string
	if p.o.Send != "" {
		if _, err := io.WriteString(conn, p.o.Send); err != nil {
			return p.ioFailure(parent, start, err)
		}
	}
	if p.o.Expect != "" {
		resp, matched, err := readExpect(conn, p.o.Expect, p.o.MaxBytes)
		if err != nil {
			return p.ioFailure(parent, start, err)
		}
		got = strings.TrimRight(string(resp), "\r\n")
		if !matched {
			elapsed := time.Since(start)
			return result(start, check.Warning,
				"TCP WARNING - Unexpected response from host/socket: "+got,
				[]check.Perf{timePerf(elapsed, p.o.Warn, p.o.Crit, p.o.Timeout)})
		}
	}
	elapsed := time.Since(start)
	st := timeStatus(elapsed, p.o.Warn, p.o.Crit)
	msg := fmt.Sprintf("TCP %s - %.3f second response time on %s port %d", st, elapsed.Seconds(), p.o.Host, p.o.Port)
	if got != "" {
		msg += " [" + got + "]"
	}
	return result(start, st, msg, []check.Perf{timePerf(elapsed, p.o.Warn, p.o.Crit, p.o.Timeout)})
}

// ioFailure words a failed send or receive: a timeout as the plugin's
// alarm, anything else as CRITICAL with the error.
func (p *tcpProbe) ioFailure(parent context.Context, start time.Time, err error) check.Result {
	if st, msg, ok := failure(parent, err, p.o.Timeout); ok {
		return result(start, st, msg, nil)
	}
	return result(start, check.Critical, fmt.Sprintf("TCP CRITICAL - %s port %d: %v", p.o.Host, p.o.Port, err), nil)
}

// readExpect reads from r until expect occurs in what was read, r ends, or
// max bytes were read, and reports what was read and whether it matched.
// An end of stream is not an error: it is the server's whole answer.
func readExpect(r io.Reader, expect string, max int) ([]byte, bool, error) {
	buf := make([]byte, 0, min(max, 512))
	for len(buf) < max {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), max)])
		buf = buf[:len(buf)+n]
		if bytes.Contains(buf, []byte(expect)) {
			return buf, true, nil
		}
		if errors.Is(err, io.EOF) {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, false, nil
}
