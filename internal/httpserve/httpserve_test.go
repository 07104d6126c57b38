package httpserve_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/httpserve"
	"github.com/dmonitor/dmonitor/internal/httpserve/tlstest"
	"github.com/dmonitor/dmonitor/internal/syncbuf"
)

var hello = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })

// serve runs srv until the test ends, and checks that it stops cleanly.
func serve(t *testing.T, srv *httpserve.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v, want nil after its context ended", err)
		}
	})
}

// client returns a client that trusts what tc trusts and opens a new
// connection, hence a new handshake, for every request.
func client(tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

// servedSerial makes a request to url and returns the serial number of the
// certificate the server presented.
func servedSerial(t *testing.T, c *http.Client, url string) *big.Int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Fatalf("GET %s = %s %q", url, resp.Status, b)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber
}

func TestListenTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.WriteCert(t, caFile)
	cert := ca.Issue(t, certFile, keyFile)

	srv, err := httpserve.ListenTLS("control", "127.0.0.1:0", certFile, keyFile, hello, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv)
	url := "https://" + srv.Addr().String() + "/"

	// A client trusting the CA file gets the issued certificate, verified,
	// at TLS 1.2 or later.
	tc, err := httpserve.ClientTLS(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, client(tc), url); got.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("served certificate %v, want the issued one %v", got, cert.SerialNumber)
	}

	// A client that trusts only the system's roots refuses it: the CA
	// file is what makes the server trusted.
	system, err := httpserve.ClientTLS("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client(system).Get(url); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("GET with the system roots = %v, want unknown authority", err)
	}

	// TLS 1.1 is refused, even where Go's own default would allow it.
	t.Setenv("GODEBUG", "tls10server=1")
	old := tc.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := client(old).Get(url); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("GET at TLS 1.1 = %v, want a protocol version alert", err)
	}

	// Plain HTTP gets no page.
	resp, err := http.Get("http://" + srv.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port = %s, want 400", resp.Status)
	}
}

func TestListenTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, certFile, keyFile)
	otherCert, otherKey := filepath.Join(dir, "other-cert.pem"), filepath.Join(dir, "other-key.pem")
	ca.Issue(t, otherCert, otherKey)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name, cert, key string
		want            []string // in the error
	}{
		// Each error names the server and the file at fault.
		{"missing certificate", missing, keyFile, []string{"control: TLS certificate", missing, "no such file"}},
		{"missing key", certFile, missing, []string{"control: TLS key", missing, "no such file"}},
		{"certificate not PEM", garbage, keyFile, []string{garbage, "certificate input"}},
		{"key not PEM", certFile, garbage, []string{garbage, "key input"}},
		// A key that is not the certificate's.
		{"key of another certificate", certFile, otherKey, []string{certFile, otherKey, "private key does not match public key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := httpserve.ListenTLS("control", "127.0.0.1:0", tt.cert, tt.key, hello, slog.New(slog.DiscardHandler))
			if err == nil {
				srv.Serve(canceled())
				t.Fatal("ListenTLS succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ListenTLS = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

// canceled returns a context that is already done.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestListenTLSReload renews the certificate on disk, as certbot would, and
// checks that the next handshake presents the new one without a restart,
// and that a broken renewal keeps the last good one.
func TestListenTLSReload(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := ca.Issue(t, certFile, keyFile)
	logs := &syncbuf.Buffer{}
	srv, err := httpserve.ListenTLS("control", "127.0.0.1:0", certFile, keyFile, hello, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv)
	url := "https://" + srv.Addr().String() + "/"
	c := client(&tls.Config{RootCAs: ca.Pool()})
	if got := servedSerial(t, c, url); got.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("served %v, want the first certificate %v", got, first.SerialNumber)
	}

	// Each write is stamped a minute later than the last, so the change
	// shows whatever the file system's clock granularity.
	stamp := time.Now()
	touch := func(files ...string) {
		t.Helper()
		stamp = stamp.Add(time.Minute)
		for _, f := range files {
			if err := os.Chtimes(f, stamp, stamp); err != nil {
				t.Fatal(err)
			}
		}
	}

	second := ca.Issue(t, certFile, keyFile)
	touch(certFile, keyFile)
	if got := servedSerial(t, c, url); got.Cmp(second.SerialNumber) != 0 {
		t.Errorf("after renewal, served %v, want the second certificate %v", got, second.SerialNumber)
	}

	// A renewal caught half-written: the previous pair is still served,
	// and the failure logged once, not at every handshake.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ntruncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	touch(certFile)
	for range 2 {
		if got := servedSerial(t, c, url); got.Cmp(second.SerialNumber) != 0 {
			t.Errorf("after a broken renewal, served %v, want the second certificate %v still", got, second.SerialNumber)
		}
	}
	if n := strings.Count(logs.String(), "cannot be loaded"); n != 1 {
		t.Errorf("broken renewal logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), certFile) {
		t.Errorf("log does not name %s:\n%s", certFile, logs)
	}

	// Once whole again, the new pair is served.
	third := ca.Issue(t, certFile, keyFile)
	touch(certFile, keyFile)
	if got := servedSerial(t, c, url); got.Cmp(third.SerialNumber) != 0 {
		t.Errorf("after the repaired renewal, served %v, want the third certificate %v", got, third.SerialNumber)
	}
}

func TestClientTLSErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	if _, err := httpserve.ClientTLS(missing); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ClientTLS(missing) = %v, want an error naming the file", err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("no certificates here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := httpserve.ClientTLS(empty); err == nil || !strings.Contains(err.Error(), "no PEM certificate in "+empty) {
		t.Errorf("ClientTLS(empty) = %v, want an error naming the file", err)
	}
}

// BenchmarkHandshake is one HTTPS request on a new connection over
// loopback: the handshake that BenchmarkGetCertificate's stats are added to.
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	ca := tlstest.NewCA(b, "bench CA")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(b, certFile, keyFile)
	srv, err := httpserve.ListenTLS("control", "127.0.0.1:0", certFile, keyFile, hello, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	c := client(&tls.Config{RootCAs: ca.Pool()})
	url := "https://" + srv.Addr().String() + "/"
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
