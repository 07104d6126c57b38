package probe

import (
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

// NewHTTP checks o and returns its probe. The probe owns one http.Client
// for all its runs; keep-alive is off, so every run opens a connection as
// check_http does and no idle connection outlives a run.
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
	p.port, _ = strconv.Atoi(u.Port())
	if p.port == 0 {
		p.port = 80
		if u.Scheme == "https" {
			p.port = 443
		}
	}
	tr := &http.Transport{
		Proxy:                  nil, // the target itself, as check_http
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		DisableCompression:     true, // size is what the server sent, as check_http counts it
		MaxResponseHeaderBytes: 64 << 10,
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: !o.TLSVerify, RootCAs: o.RootCAs},
	}
	p.client = &http.Client{Transport: tr, CheckRedirect: p.checkRedirect}
	return p, nil
}

type httpProbe struct {
	o      HTTP
	url    *url.URL
	host   string
	port   int
	re     *regexp.Regexp
	client *http.Client
}

var _ Probe = (*httpProbe)(nil)

// errTooManyRedirects ends a run that was redirected more than MaxRedirects.
var errTooManyRedirects = errors.New("too many redirects")

func (p *httpProbe) checkRedirect(_ *http.Request, via []*http.Request) error {
	if !p.o.FollowRedirects {
		return http.ErrUseLastResponse
	}
	if len(via) > p.o.MaxRedirects {
		return errTooManyRedirects
	}
	return nil
}

func (p *httpProbe) Run(parent context.Context) check.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, p.o.Timeout)
	defer cancel()

	var body io.Reader
	if p.o.Body != "" {
		body = strings.NewReader(p.o.Body)
	}
	req, err := http.NewRequestWithContext(ctx, p.o.Method, p.o.URL, body)
	if err != nil {
		return result(start, check.Unknown, "HTTP UNKNOWN - "+err.Error(), nil)
	}
	for k, vs := range p.o.Headers {
		req.Header[k] = vs
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "dmonitor-probe")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return p.requestFailure(parent, start, err)
	}
	defer resp.Body.Close()

	// The body: kept up to MaxBody when it is to be searched, counted
	// to its end either way (a body that never ends meets the timeout).
	var kept bytes.Buffer
	var n int64
	if p.o.BodyContains != "" || p.re != nil {
		n, err = io.Copy(&kept, io.LimitReader(resp.Body, p.o.MaxBody))
		if err == nil {
			var rest int64
			rest, err = io.Copy(io.Discard, resp.Body)
			n += rest
		}
	} else {
		n, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		if st, msg, ok := failure(parent, err, p.o.Timeout); ok {
			return result(start, st, msg, nil)
		}
		return result(start, check.Critical, "HTTP CRITICAL - error reading the body: "+err.Error(), nil)
	}
	elapsed := time.Since(start)
	size := headerSize(resp) + n

	var lines []string // the certificate's line, as check_http prints it first
	st := check.OK
	if p.o.CheckCert && resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		cst, msg := certStatus(resp.TLS.PeerCertificates[0], start, p.o.CertWarnDays, p.o.CertCritDays)
		st = cst
		lines = append(lines, msg)
	}

	statusLine := resp.Proto + " " + resp.Status
	if len(p.o.ExpectStatus) > 0 {
		if !slices.Contains(p.o.ExpectStatus, resp.StatusCode) {
			// check_http stops here, without perfdata.
			lines = append(lines, fmt.Sprintf("HTTP CRITICAL - Invalid HTTP response received from host on port %d: %s", p.port, statusLine))
			return result(start, check.Critical, strings.Join(lines, "\n"), nil)
		}
		statusLine = fmt.Sprintf("Status line output matched %q", strconv.Itoa(resp.StatusCode))
	} else {
		switch {
		case resp.StatusCode >= 500:
			st = worse(st, check.Critical)
		case resp.StatusCode >= 400:
			st = worse(st, check.Warning)
		}
	}

	var found string
	switch {
	case p.o.BodyContains != "" && !bytes.Contains(kept.Bytes(), []byte(p.o.BodyContains)):
		st = worse(st, check.Critical)
		found = fmt.Sprintf("string '%s' not found on '%s' - ", p.o.BodyContains, resp.Request.URL)
	case p.re != nil && !p.re.Match(kept.Bytes()):
		st = worse(st, check.Critical)
		found = "pattern not found - "
	}
	st = worse(st, timeStatus(elapsed, p.o.Warn, p.o.Crit))

	lines = append(lines, fmt.Sprintf("HTTP %s: %s - %s%d bytes in %.3f second response time", st, statusLine, found, size, elapsed.Seconds()))
	zero := 0.0
	perf := []check.Perf{
		timePerf(elapsed, p.o.Warn, p.o.Crit, p.o.Timeout),
		{Label: "size", Value: float64(size), Text: strconv.FormatInt(size, 10), UOM: "B", Min: &zero},
	}
	return result(start, st, strings.Join(lines, "\n"), perf)
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
