package probe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// testCert is a certificate made for one test and its key.
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// makeCert makes a certificate for the loopback addresses named cn, valid
// from an hour ago (or a day before notAfter, if that is earlier) to
// notAfter, signed by parent or, when parent is nil, by itself. isCA makes
// it able to sign others.
func makeCert(t testing.TB, cn string, notAfter time.Time, parent *testCert, isCA bool) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	notBefore := time.Now().Add(-time.Hour)
	if nb := notAfter.Add(-24 * time.Hour); nb.Before(notBefore) {
		notBefore = nb
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: cert, key: key}
}

func (c *testCert) tls() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.cert.Raw}, PrivateKey: c.key, Leaf: c.cert}
}

// startTLS serves TLS with cert on a loopback port, saying nothing.
func startTLS(t testing.TB, cert *testCert) int {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.tls()}})
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, 0, "")
}

// TestTLSAgainstCheckTCP runs the TLS probe and check_tcp -S --sni -D
// against the same loopback servers and compares their results. The
// certificates' lifetimes sit half a day or half an hour away from any
// boundary of the plugins' day count.
func TestTLSAgainstCheckTCP(t *testing.T) {
	t.Parallel()
	now := time.Now()
	days20 := startTLS(t, makeCert(t, "twenty", now.Add(20*24*time.Hour+12*time.Hour), nil, false))
	hours5 := startTLS(t, makeCert(t, "hours", now.Add(5*time.Hour+30*time.Minute), nil, false))
	expired := startTLS(t, makeCert(t, "expired", now.Add(-2*24*time.Hour), nil, false))
	down := closedPort(t)

	for _, tc := range []struct {
		name string
		o    TLS
		want comparison
	}{
		// 20 days left, more than the 10 asked: OK, and the TCP line with
		// its time perfdata.
		{"valid", TLS{Port: days20, WarnDays: 10},
			comparison{status: check.OK, phrases: []string{"OK - Certificate 'twenty' will expire on", "TCP OK - "}}},
		// 20 days left, at most 30: WARNING (the critical days default to 0).
		{"warn days", TLS{Port: days20, WarnDays: 30},
			comparison{status: check.Warning, phrases: []string{"WARNING - Certificate 'twenty' expires in 20 day(s)"}}},
		// 20 days left, at most 25 too: CRITICAL.
		{"crit days", TLS{Port: days20, WarnDays: 30, CritDays: 25},
			comparison{status: check.Critical, phrases: []string{"CRITICAL - Certificate 'twenty' expires in 20 day(s)"}}},
		// Less than a day: counted in hours, and CRITICAL.
		{"hours", TLS{Port: hours5, WarnDays: 30, CritDays: 7},
			comparison{status: check.Critical, phrases: []string{"CRITICAL - Certificate 'hours' expires in 5 hours"}}},
		// Expired two days ago, self-signed: CRITICAL whatever the days.
		{"expired", TLS{Port: expired, WarnDays: 10},
			comparison{status: check.Critical, phrases: []string{"CRITICAL - Certificate 'expired' expired on"}}},
		// Nothing listens.
		{"down", TLS{Port: down, WarnDays: 10},
			comparison{status: check.Critical, phrases: []string{"Connection refused"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.o.Host, tc.o.Timeout = "127.0.0.1", 5*time.Second
			p, err := NewTLS(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Run(t.Context())
			plug := runPlugin(t, "check_tcp", "-H", tc.o.Host, "-p", strconv.Itoa(tc.o.Port),
				"--sni", "-S", // in this order: check_tcp 2.3.3 ignores what follows -S --sni
				"-D", strconv.Itoa(tc.o.WarnDays)+","+strconv.Itoa(tc.o.CritDays), "-t", secs(tc.o.Timeout))
			compare(t, got, plug, tc.want)
		})
	}
}

// TestTLSVerify: the plugins judge a self-signed certificate by its days
// alone, and so does the probe by default; with Verify it refuses a chain
// it cannot verify and accepts one from the roots it is given.
func TestTLSVerify(t *testing.T) {
	t.Parallel()
	later := time.Now().Add(90 * 24 * time.Hour)
	self := startTLS(t, makeCert(t, "self", later, nil, false))
	ca := makeCert(t, "test ca", later, nil, true)
	signed := startTLS(t, makeCert(t, "signed", later, ca, false))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	for _, tc := range []struct {
		name   string
		o      TLS
		status check.Status
		phrase string
	}{
		// As check_tcp -D: not verified, judged by its days.
		{"self-signed unverified", TLS{Port: self}, check.OK, "will expire on"},
		// Verified against the system's roots, which do not know it.
		{"self-signed verified", TLS{Port: self, Verify: true}, check.Critical, "certificate verification failed"},
		// Signed by the CA given as root.
		{"signed verified", TLS{Port: signed, Verify: true, RootCAs: roots}, check.OK, "will expire on"},
		// Signed by that CA, but the name asked for is not the certificate's.
		{"wrong name", TLS{Port: signed, Verify: true, RootCAs: roots, ServerName: "example.invalid"}, check.Critical, "certificate verification failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Host = "127.0.0.1"
			p, err := NewTLS(tc.o)
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
