package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// HTTP are the options of an HTTP(S) probe, check_http's equivalents in
// brackets.
type HTTP struct {
	// URL is the address to request, http:// or https:// [-H -p -u -S].
	URL     string
	Method  string      // [-j] "" means GET
	Headers http.Header // [-k] sent with every request
	Body    string      // [-P] sent as the request body when not ""
	// ExpectStatus, when not empty, lists the status codes that are OK;
	// any other is CRITICAL [-e]. When empty, check_http's rule applies:
	// 5xx CRITICAL, 4xx WARNING, anything else OK.
	ExpectStatus []int
	// BodyContains must occur in the body, else CRITICAL [-s].
	BodyContains string
	// BodyRegexp (RE2 syntax) must match the body, else CRITICAL [-r].
	BodyRegexp string
	// FollowRedirects follows up to MaxRedirects (0: 15) redirects and
	// judges the last response [-f follow --max-redirs]; otherwise a 3xx
	// is judged as it is (OK).
	FollowRedirects bool
	MaxRedirects    int
	// TLSVerify verifies the server's chain and name against RootCAs (nil:
	// the system's roots); the plugins never verify.
	TLSVerify bool
	RootCAs   *x509.CertPool
	// CheckCert judges the server certificate's days to expiry by
	// CertWarnDays and CertCritDays as the TLS probe does, and goes on with
	// the request [-C warn,crit --continue-after-certificate].
	CheckCert                  bool
	CertWarnDays, CertCritDays int
	// MaxBody bounds the part of the body kept for BodyContains and
	// BodyRegexp; the rest is read and counted, not kept. 0 means 1 MiB.
	MaxBody int64
	Timeout time.Duration // [-t] the whole run; 0 means DefaultTimeout
	Warn    time.Duration // [-w] response time above which WARNING; 0 unset
	Crit    time.Duration // [-c] response time above which CRITICAL; 0 unset
}

// maxHeaderBytes bounds the status line and headers of a response.
const maxHeaderBytes = 64 << 10

// NewHTTP checks o and returns its probe.
func NewHTTP(o HTTP) (Probe, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("http probe: url %q: %w", o.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("http probe: url %q: want http:// or https:// and a host", o.URL)
	}
	if err := validTimes("http", &o.Timeout, &o.Warn, &o.Crit); err != nil {
		return nil, err
	}
	if o.Method == "" {
		o.Method = http.MethodGet
	}
	if o.MaxRedirects < 0 || o.MaxBody < 0 || o.CertWarnDays < 0 || o.CertCritDays < 0 {
		return nil, fmt.Errorf("http probe: url %q: negative max redirects, max body or days", o.URL)
	}
	if o.MaxRedirects == 0 {
		o.MaxRedirects = 15
	}
	if o.MaxBody == 0 {
		o.MaxBody = 1 << 20
	}
	for _, c := range o.ExpectStatus {
		if c < 100 || c > 999 {
			return nil, fmt.Errorf("http probe: url %q: expected status %d is not a status code", o.URL, c)
		}
	}
	p := &httpProbe{o: o, url: u}
	if o.BodyRegexp != "" {
		if p.re, err = regexp.Compile(o.BodyRegexp); err != nil {
			return nil, fmt.Errorf("http probe: url %q: body regexp: %w", o.URL, err)
		}
	}
	p.host = u.Hostname()
	p.port = portOf(u)
	p.tls = p.tlsConfig(p.host)
	// The first request is the same every run: written once.
	if p.first, err = p.request(u, o.Method, o.Body, true); err != nil {
		return nil, fmt.Errorf("http probe: url %q: %w", o.URL, err)
	}
	return p, nil
}

// httpProbe makes each request itself on a connection it dials and closes,
// as check_http does, rather than through net/http's Client: the Transport
// starts three goroutines for each new connection (dial, read and write
// loops), which at thousands of probes a second cost more than the
// exchange. Redirects are followed as the Client follows them.
type httpProbe struct {
	o     HTTP
	url   *url.URL
	host  string
	port  int
	re    *regexp.Regexp
	tls   *tls.Config // for the URL's own host
	first []byte      // the request to the URL, as written on the wire
}

var _ Probe = (*httpProbe)(nil)

// errTooManyRedirects ends a run that was redirected more than MaxRedirects.
var errTooManyRedirects = errors.New("too many redirects")

// portOf is u's port, or its scheme's.
func portOf(u *url.URL) int {
	if p, err := strconv.Atoi(u.Port()); err == nil {
		return p
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// tlsConfig is the configuration of a handshake with host: SNI and, with
// TLSVerify, the name verified, as net/http's Transport sets them.
func (p *httpProbe) tlsConfig(host string) *tls.Config {
	return &tls.Config{ServerName: host, InsecureSkipVerify: !p.o.TLSVerify, RootCAs: p.o.RootCAs}
}

// request writes the request for u as net/http's Transport would with
// keep-alive and compression off; own says u is on the probe's host, to
// which the configured headers go (to another host, as the Client, not
// the credentials among them).
func (p *httpProbe) request(u *url.URL, method, body string, own bool) ([]byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range p.o.Headers {
		if own || !sensitiveHeader(k) {
			req.Header[k] = vs
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "dmonitor-probe")
	}
	req.Close = true // Connection: close, one request per connection
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// sensitiveHeader is a header net/http's Client drops on a redirect to
// another host.
func sensitiveHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Authorization", "Www-Authenticate", "Cookie", "Cookie2", "Proxy-Authorization":
		return true
	}
	return false
}

// response is what one exchange learnt.
type response struct {
	*http.Response
	url  *url.URL
	tls  *tls.ConnectionState
	kept []byte // the body, up to MaxBody, when it is searched
	size int64  // status line, headers and body, as check_http counts them
}

func (p *httpProbe) Run(parent context.Context) check.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, p.o.Timeout)
	defer cancel()

	r, err := p.follow(ctx)
	if err != nil {
		return p.requestFailure(parent, start, err)
	}
	elapsed := time.Since(start)

	var lines []string // the certificate's line, as check_http prints it first
	st := check.OK
	if p.o.CheckCert && r.tls != nil && len(r.tls.PeerCertificates) > 0 {
		cst, msg := certStatus(r.tls.PeerCertificates[0], start, p.o.CertWarnDays, p.o.CertCritDays)
		st = cst
		lines = append(lines, msg)
	}

	statusLine := r.Proto + " " + r.Status
	if len(p.o.ExpectStatus) > 0 {
		if !slices.Contains(p.o.ExpectStatus, r.StatusCode) {
			// check_http stops here, without perfdata.
			lines = append(lines, fmt.Sprintf("HTTP CRITICAL - Invalid HTTP response received from host on port %d: %s", p.port, statusLine))
			return result(start, check.Critical, strings.Join(lines, "\n"), nil)
		}
		statusLine = fmt.Sprintf("Status line output matched %q", strconv.Itoa(r.StatusCode))
	} else {
		switch {
		case r.StatusCode >= 500:
			st = worse(st, check.Critical)
		case r.StatusCode >= 400:
			st = worse(st, check.Warning)
		}
	}

	var found string
	switch {
	case p.o.BodyContains != "" && !bytes.Contains(r.kept, []byte(p.o.BodyContains)):
		st = worse(st, check.Critical)
		found = fmt.Sprintf("string '%s' not found on '%s' - ", p.o.BodyContains, r.url)
	case p.re != nil && !p.re.Match(r.kept):
		st = worse(st, check.Critical)
		found = "pattern not found - "
	}
	st = worse(st, timeStatus(elapsed, p.o.Warn, p.o.Crit))

	lines = append(lines, fmt.Sprintf("HTTP %s: %s - %s%d bytes in %.3f second response time", st, statusLine, found, r.size, elapsed.Seconds()))
	zero := 0.0
	perf := []check.Perf{
		timePerf(elapsed, p.o.Warn, p.o.Crit, p.o.Timeout),
		{Label: "size", Value: float64(r.size), Text: strconv.FormatInt(r.size, 10), UOM: "B", Min: &zero},
	}
	return result(start, st, strings.Join(lines, "\n"), perf)
}

// follow makes the request and, when FollowRedirects, the requests it is
// redirected to, as net/http's Client would: 301, 302 and 303 turn into a
// GET without a body (HEAD stays HEAD), 307 and 308 repeat the request; a
// redirect without a Location is the response.
func (p *httpProbe) follow(ctx context.Context) (*response, error) {
	u, method, body, req := p.url, p.o.Method, p.o.Body, p.first
	for hops := 0; ; hops++ {
		r, err := p.exchange(ctx, u, method, req)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", method, u, err)
		}
		loc := r.Header.Get("Location")
		if !p.o.FollowRedirects || loc == "" {
			return r, nil
		}
		switch r.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther:
			if method != http.MethodHead {
				method, body = http.MethodGet, ""
			}
		case http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		default:
			return r, nil
		}
		if hops == p.o.MaxRedirects {
			return nil, errTooManyRedirects
		}
		next, err := u.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("%s %q: redirect to %q: %w", method, u, loc, err)
		}
		if next.Scheme != "http" && next.Scheme != "https" {
			return nil, fmt.Errorf("%s %q: redirect to %q: unsupported scheme", method, u, loc)
		}
		if req, err = p.request(next, method, body, next.Hostname() == p.host); err != nil {
			return nil, fmt.Errorf("%s %q: %w", method, next, err)
		}
		u = next
	}
}

// exchange dials u's host, writes req (a method request), and reads the
// response and its whole body (a body that never ends meets the timeout). One deadline
// covers it all, and the caller's cancellation unblocks it at once: no
// goroutine of ours waits on the socket.
func (p *httpProbe) exchange(ctx context.Context, u *url.URL, method string, req []byte) (*response, error) {
	conn, err := dialer().DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), strconv.Itoa(portOf(u))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	r := &response{url: u}
	rw := io.ReadWriter(conn)
	if u.Scheme == "https" {
		conf := p.tls
		if h := u.Hostname(); h != p.host {
			conf = p.tlsConfig(h)
		}
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		cs := tc.ConnectionState()
		r.tls, rw = &cs, tc
	}
	if _, err := rw.Write(req); err != nil {
		return nil, err
	}
	hr := &headerReader{r: rw, left: maxHeaderBytes}
	// A small buffer: it holds a status line and the headers of most
	// replies, longer lines are read in pieces, and the body's large
	// reads go past it. The default 4 KiB was a third of a run's garbage.
	br := bufio.NewReaderSize(hr, 512)
	// The method tells whether a body follows (not after a HEAD).
	if r.Response, err = http.ReadResponse(br, &http.Request{Method: method}); err != nil {
		if hr.left <= 0 {
			return nil, fmt.Errorf("server response headers exceeded %d bytes", maxHeaderBytes)
		}
		return nil, err
	}
	defer r.Body.Close()
	hr.left = -1 // the body is not bounded but by the timeout

	var n int64
	if p.o.BodyContains != "" || p.re != nil {
		var kept bytes.Buffer
		n, err = io.Copy(&kept, io.LimitReader(r.Body, p.o.MaxBody))
		r.kept = kept.Bytes()
	}
	if err == nil {
		var rest int64
		rest, err = io.Copy(io.Discard, r.Body)
		n += rest
	}
	if err != nil {
		return nil, fmt.Errorf("error reading the body: %w", err)
	}
	r.size = headerSize(r.Response) + n
	return r, nil
}

// headerReader bounds what is read before the body as the Transport's
// MaxResponseHeaderBytes does; left < 0 lifts the bound.
type headerReader struct {
	r    io.Reader
	left int64
}

func (h *headerReader) Read(b []byte) (int, error) {
	if h.left < 0 {
		return h.r.Read(b)
	}
	if h.left == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n, err := h.r.Read(b[:min(int64(len(b)), h.left)])
	h.left -= int64(n)
	return n, err
}

// requestFailure words a request that got no response as check_http does.
func (p *httpProbe) requestFailure(parent context.Context, start time.Time, err error) check.Result {
	if st, msg, ok := failure(parent, err, p.o.Timeout); ok {
		return result(start, st, msg, nil)
	}
	if errors.Is(err, errTooManyRedirects) {
		return result(start, check.Warning, fmt.Sprintf("HTTP WARNING - maximum redirection depth %d exceeded", p.o.MaxRedirects), nil)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return result(start, check.Critical, "HTTP CRITICAL - Unable to open TCP socket: "+connectError(p.host, p.port, err), nil)
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return result(start, check.Critical, "HTTP CRITICAL - certificate verification failed: "+cv.Err.Error(), nil)
	}
	return result(start, check.Critical, "HTTP CRITICAL - "+err.Error(), nil)
}

// headerSize is the length of the status line and headers as the server
// most likely wrote them (recounted from their parsed form): check_http's
// size counts them with the body.
func headerSize(resp *http.Response) int64 {
	n := len(resp.Proto) + 1 + len(resp.Status) + 2
	for k, vs := range resp.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return int64(n + 2)
}
