package probe

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/dmonitor/dmonitor/internal/await"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// handler is the loopback web site the HTTP tests probe.
func handler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		fmt.Fprint(w, "hello body")
	case "/missing":
		http.NotFound(w, r)
	case "/error":
		http.Error(w, "broken", http.StatusInternalServerError)
	case "/redirect":
		http.Redirect(w, r, "/", http.StatusFound)
	case "/chain":
		// An endless chain of redirects, each to a new URL.
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		http.Redirect(w, r, "/chain?n="+strconv.Itoa(n+1), http.StatusFound)
	case "/slow", "/hang":
		// The target's behaviour, not a synchronisation: answer after a
		// delay (1 s), or never, until the client gives up.
		delay := time.Second
		if r.URL.Path == "/hang" {
			delay = time.Hour
		}
		tm := time.NewTimer(delay)
		defer tm.Stop()
		select {
		case <-tm.C:
			fmt.Fprint(w, "hello slow")
		case <-r.Context().Done():
		}
	default:
		http.NotFound(w, r)
	}
}

// startHTTP serves handler on loopback, over TLS with cert when cert is not
// nil, and returns the server's base URL.
func startHTTP(t testing.TB, cert *testCert) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(handler))
	// The handshakes the verifying probes refuse are expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cert == nil {
		srv.Start()
	} else {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.tls()}}
		srv.StartTLS()
	}
	t.Cleanup(srv.Close)
	return srv.URL
}

// httpArgs is the check_http command line equivalent to o.
func httpArgs(t *testing.T, o HTTP) []string {
	t.Helper()
	u, err := url.Parse(o.URL)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-H", u.Hostname(), "-p", u.Port(), "-u", u.RequestURI()}
	if u.Scheme == "https" {
		args = append(args, "--sni", "-S") // --sni first: see TestTLSAgainstCheckTCP
	}
	if len(o.ExpectStatus) > 0 {
		var codes []string
		for _, c := range o.ExpectStatus {
			codes = append(codes, strconv.Itoa(c))
		}
		args = append(args, "-e", strings.Join(codes, ","))
	}
	if o.BodyContains != "" {
		args = append(args, "-s", o.BodyContains)
	}
	if o.BodyRegexp != "" {
		args = append(args, "-r", o.BodyRegexp)
	}
	if o.FollowRedirects {
		args = append(args, "-f", "follow")
		if o.MaxRedirects > 0 {
			args = append(args, "--max-redirs", strconv.Itoa(o.MaxRedirects))
		}
	}
	if o.CheckCert {
		args = append(args, "-C", strconv.Itoa(o.CertWarnDays)+","+strconv.Itoa(o.CertCritDays), "--continue-after-certificate")
	}
	if o.Warn > 0 {
		args = append(args, "-w", secs(o.Warn))
	}
	if o.Crit > 0 {
		args = append(args, "-c", secs(o.Crit))
	}
	return append(args, "-t", secs(o.Timeout))
}

// TestHTTPAgainstCheckHTTP runs the HTTP probe and check_http against the
// same loopback servers and compares their results field by field. The
// margins keep timing noise from flipping a status: "/slow" answers after
// 1 s against a warn of 0.2 s and a timeout of 5 s.
func TestHTTPAgainstCheckHTTP(t *testing.T) {
	t.Parallel()
	const warn, crit, timeout = 200 * time.Millisecond, 3 * time.Second, 5 * time.Second
	plain := startHTTP(t, nil)
	now := time.Now()
	self := startHTTP(t, makeCert(t, "self", now.Add(90*24*time.Hour+12*time.Hour), nil, false))
	soon := startHTTP(t, makeCert(t, "soon", now.Add(20*24*time.Hour+12*time.Hour), nil, false))
	expired := startHTTP(t, makeCert(t, "expired", now.Add(-2*24*time.Hour), nil, false))
	down := "http://127.0.0.1:" + strconv.Itoa(closedPort(t)) + "/"

	for _, tc := range []struct {
		name string
		o    HTTP
		want comparison
	}{
		// A page: status line, size and time, thresholds in perfdata.
		{"up", HTTP{URL: plain + "/", Warn: warn, Crit: crit},
			comparison{status: check.OK, phrases: []string{"HTTP OK: ", "200 OK", "bytes in", "second response time"}}},
		// The body holds the string and matches the pattern.
		{"body ok", HTTP{URL: plain + "/", BodyContains: "hello", BodyRegexp: "hel+o b"},
			comparison{status: check.OK, phrases: []string{"HTTP OK: ", "200 OK"}}},
		// Nothing listens.
		{"down", HTTP{URL: down},
			comparison{status: check.Critical, phrases: []string{"Connection refused", "Unable to open TCP socket"}}},
		// 1 s to answer, warn at 0.2 s.
		{"slow", HTTP{URL: plain + "/slow", Warn: warn, Crit: crit},
			comparison{status: check.Warning, phrases: []string{"HTTP WARNING: ", "200 OK"}}},
		// No answer within the timeout: the plugin's alarm.
		{"timeout", HTTP{URL: plain + "/hang", Timeout: time.Second},
			comparison{status: check.Critical, phrases: []string{"CRITICAL - Socket timeout after 1 seconds"}}},
		// 4xx is WARNING, 5xx CRITICAL.
		{"404", HTTP{URL: plain + "/missing"},
			comparison{status: check.Warning, phrases: []string{"HTTP WARNING: ", "404 Not Found"}}},
		{"500", HTTP{URL: plain + "/error"},
			comparison{status: check.Critical, phrases: []string{"HTTP CRITICAL: ", "500 Internal Server Error"}}},
		// An expected status: matched, or CRITICAL without perfdata.
		{"expect matched", HTTP{URL: plain + "/missing", ExpectStatus: []int{404}},
			comparison{status: check.OK, phrases: []string{`Status line output matched "404"`}}},
		{"expect mismatch", HTTP{URL: plain + "/", ExpectStatus: []int{201, 204}},
			comparison{status: check.Critical, phrases: []string{"Invalid HTTP response received from host on port", "200 OK"}}},
		// Wrong content: a missing string, a pattern that does not match.
		{"string missing", HTTP{URL: plain + "/", BodyContains: "goodbye"},
			comparison{status: check.Critical, phrases: []string{"HTTP CRITICAL: ", "string 'goodbye' not found on '" + plain + "/'"}}},
		{"pattern missing", HTTP{URL: plain + "/", BodyRegexp: "bye+"},
			comparison{status: check.Critical, phrases: []string{"HTTP CRITICAL: ", "pattern not found"}}},
		// A redirect is OK as it is, or followed to the page.
		{"redirect", HTTP{URL: plain + "/redirect"},
			comparison{status: check.OK, phrases: []string{"HTTP OK: ", "302 Found"}}},
		{"redirect followed", HTTP{URL: plain + "/redirect", FollowRedirects: true, BodyContains: "hello"},
			comparison{status: check.OK, phrases: []string{"HTTP OK: ", "200 OK"}}},
		// A redirect loop, followed: WARNING past the maximum depth.
		{"redirect chain", HTTP{URL: plain + "/chain", FollowRedirects: true, MaxRedirects: 3},
			comparison{status: check.Warning, phrases: []string{"maximum redirection depth 3 exceeded"}}},
		// HTTPS with a self-signed certificate: neither verifies.
		{"https self-signed", HTTP{URL: self + "/", CheckCert: true, CertWarnDays: 30},
			comparison{status: check.OK, phrases: []string{"OK - Certificate 'self' will expire on", "HTTP OK: ", "200 OK"}}},
		// 20 days left, warned at 30: WARNING, the request still made.
		{"https cert warn", HTTP{URL: soon + "/", CheckCert: true, CertWarnDays: 30, CertCritDays: 7},
			comparison{status: check.Warning, phrases: []string{"WARNING - Certificate 'soon' expires in 20 day(s)", "HTTP WARNING: ", "200 OK"}}},
		// Expired: CRITICAL.
		{"https expired", HTTP{URL: expired + "/", CheckCert: true, CertWarnDays: 30},
			comparison{status: check.Critical, phrases: []string{"CRITICAL - Certificate 'expired' expired on", "HTTP CRITICAL: "}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.o.Timeout == 0 {
				tc.o.Timeout = timeout
			}
			p, err := NewHTTP(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			plug := runPlugin(t, "check_http", httpArgs(t, tc.o)...)
			compare(t, got, plug, tc.want)
		})
	}
}

// TestHTTPSVerify: the plugins never verify a certificate, and neither does
// the probe by default; with TLSVerify it refuses a self-signed one and
// accepts one signed by the roots it is given.
func TestHTTPSVerify(t *testing.T) {
	t.Parallel()
	later := time.Now().Add(90 * 24 * time.Hour)
	self := startHTTP(t, makeCert(t, "self", later, nil, false))
	ca := makeCert(t, "test ca", later, nil, true)
	signed := startHTTP(t, makeCert(t, "signed", later, ca, false))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	for _, tc := range []struct {
		name   string
		o      HTTP
		status check.Status
		phrase string
	}{
		{"self-signed unverified", HTTP{URL: self + "/"}, check.OK, "HTTP OK: "},
		{"self-signed verified", HTTP{URL: self + "/", TLSVerify: true}, check.Critical, "certificate verification failed"},
		{"signed verified", HTTP{URL: signed + "/", TLSVerify: true, RootCAs: roots}, check.OK, "HTTP OK: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewHTTP(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			if got.Status != tc.status || !strings.Contains(got.Output, tc.phrase) {
				t.Errorf("got %v %q, want %v ...%s...", got.Status, got.Output, tc.status, tc.phrase)
			}
		})
	}
}

// TestNewHTTPRefuses: options a probe cannot run with are refused, naming
// the offender.
func TestNewHTTPRefuses(t *testing.T) {
	for _, tc := range []struct {
		o    HTTP
		want string
	}{
		{HTTP{URL: "ftp://h/"}, `url "ftp://h/": want http:// or https://`},
		{HTTP{URL: "http:///x"}, "want http:// or https:// and a host"},
		{HTTP{URL: "http://h/", BodyRegexp: "("}, "body regexp: error parsing regexp"},
		{HTTP{URL: "http://h/", ExpectStatus: []int{42}}, "expected status 42 is not a status code"},
		{HTTP{URL: "http://h/", Crit: -1}, "crit -1ns is negative"},
	} {
		_, err := NewHTTP(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewHTTP(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

// TestNoGoroutineLeft: runs that succeed, fail, time out or are canceled
// leave no goroutine of theirs behind. Not parallel, so that the count is
// the probes' alone.
func TestNoGoroutineLeft(t *testing.T) {
	plain := startHTTP(t, nil)
	self := startHTTP(t, makeCert(t, "self", time.Now().Add(48*time.Hour), nil, false))
	tcpUp := startTCP(t, 0, "HELLO\r\n")
	silent := startTCP(t, 0, "")
	var probes []Probe
	for _, o := range []HTTP{
		{URL: plain + "/"}, {URL: plain + "/hang", Timeout: 100 * time.Millisecond},
		{URL: self + "/", CheckCert: true}, {URL: plain + "/redirect", FollowRedirects: true},
	} {
		p, err := NewHTTP(o)
		if err != nil {
			t.Fatal(err)
		}
		probes = append(probes, p)
	}
	for _, o := range []TCP{{Port: tcpUp, Expect: "HELLO"}, {Port: silent, Expect: "x", Timeout: 100 * time.Millisecond}} {
		o.Host = "127.0.0.1"
		p, err := NewTCP(o)
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
	// The servers' own goroutines for the closed connections end soon
	// after; the probes' must end with their runs.
	await.Until(t, "goroutines back to "+strconv.Itoa(before), func() bool { return runtime.NumGoroutine() <= before })
}

// TestHTTPRequestsAsNetHTTP: the probe writes its requests itself, and
// makes them as net/http's Client would. A 303 after a POST is followed
// with a GET without the body, a 307 repeats the POST with it; the
// configured headers go to the probe's own host and, but for the
// credentials, to another; a HEAD's Content-Length is not waited for; a
// response whose headers pass the bound is refused naming it.
func TestHTTPRequestsAsNetHTTP(t *testing.T) {
	t.Parallel()
	type seen struct{ method, path, body, auth, custom, conn string }
	got := make(chan seen, 10)
	record := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, string(b), r.Header.Get("Authorization"), r.Header.Get("X-Custom"), r.Header.Get("Connection")}
	}
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(w, r)
		fmt.Fprint(w, "elsewhere")
	}))
	t.Cleanup(other.Close)
	// The other host is "localhost", this one 127.0.0.1: two host names.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(w, r)
		switch r.URL.Path {
		case "/see-other":
			http.Redirect(w, r, "/page", http.StatusSeeOther)
		case "/temporary":
			http.Redirect(w, r, "/page", http.StatusTemporaryRedirect)
		case "/away":
			http.Redirect(w, r, otherURL+"/there", http.StatusFound)
		case "/head":
			w.Header().Set("Content-Length", "1000000")
		case "/huge":
			w.Header().Set("X-Big", strings.Repeat("x", 70<<10))
		default:
			fmt.Fprint(w, "page")
		}
	}))
	t.Cleanup(srv.Close)
	headers := http.Header{"Authorization": {"Bearer secret"}, "X-Custom": {"yes"}}

	for _, tc := range []struct {
		name   string
		o      HTTP
		status check.Status
		phrase string
		want   []seen
	}{
		{"303 turns a POST into a GET", HTTP{URL: srv.URL + "/see-other", Method: "POST", Body: "form", FollowRedirects: true},
			check.OK, "HTTP OK: HTTP/1.1 200 OK", []seen{{"POST", "/see-other", "form", "", "", "close"}, {"GET", "/page", "", "", "", "close"}}},
		{"307 repeats the POST", HTTP{URL: srv.URL + "/temporary", Method: "POST", Body: "form", FollowRedirects: true},
			check.OK, "HTTP OK: ", []seen{{"POST", "/temporary", "form", "", "", "close"}, {"POST", "/page", "form", "", "", "close"}}},
		{"no credentials to another host", HTTP{URL: srv.URL + "/away", Headers: headers, FollowRedirects: true, BodyContains: "elsewhere"},
			check.OK, "HTTP OK: ", []seen{{"GET", "/away", "", "Bearer secret", "yes", "close"}, {"GET", "/there", "", "", "yes", "close"}}},
		{"HEAD has no body", HTTP{URL: srv.URL + "/head", Method: "HEAD"},
			check.OK, "HTTP OK: ", []seen{{"HEAD", "/head", "", "", "", "close"}}},
		{"headers past the bound", HTTP{URL: srv.URL + "/huge"},
			check.Critical, "server response headers exceeded 65536 bytes", []seen{{"GET", "/huge", "", "", "", "close"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Timeout = 5 * time.Second
			p, err := NewHTTP(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			r := p.Run(t.Context())
			if r.Status != tc.status || !strings.Contains(r.Output, tc.phrase) {
				t.Errorf("got %v %q, want %v ...%s...", r.Status, r.Output, tc.status, tc.phrase)
			}
			for i, want := range tc.want {
				select {
				case s := <-got:
					if s != want {
						t.Errorf("request %d: got %+v, want %+v", i, s, want)
					}
				default:
					t.Fatalf("request %d not made, want %+v", i, want)
				}
			}
			select {
			case s := <-got:
				t.Errorf("one request too many: %+v", s)
			default:
			}
		})
	}
}
