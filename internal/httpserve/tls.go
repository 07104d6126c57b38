package httpserve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ClientTLS returns the TLS configuration of a client of servers that
// ListenTLS serves: TLS 1.2 or later, verifying the server against the CA
// certificates (PEM) in caFile, and only those, so that a certificate some
// public CA issued for a peer's name is not enough. An empty caFile
// verifies against the system's roots.
func ClientTLS(caFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return c, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("read TLS CA certificates: no PEM certificate in %s", caFile)
	}
	c.RootCAs = pool
	return c, nil
}

// keyPair is the certificate a TLS server presents, read again from its
// files when they change.
type keyPair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   fileStamp // of the files cert was read from
	lastErr string    // of the last failed reload, logged once; "" after a success
}

// fileStamp tells whether the pair's files changed: their modification
// times and sizes. A renewal (certbot, cert-manager, a copy) changes both
// files' times; the sizes catch a rewrite within the file system's clock
// tick.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func loadKeyPair(certFile, keyFile string, log *slog.Logger) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := kp.stat()
	if err != nil {
		return nil, err
	}
	cert, err := kp.read()
	if err != nil {
		return nil, err
	}
	kp.cert, kp.stamp = cert, stamp
	kp.logLoaded("TLS certificate loaded")
	return kp, nil
}

func (kp *keyPair) stat() (fileStamp, error) {
	c, err := os.Stat(kp.certFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("TLS certificate: %w", err)
	}
	k, err := os.Stat(kp.keyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("TLS key: %w", err)
	}
	return fileStamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

func (kp *keyPair) read() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(kp.certFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(kp.keyFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS key: %w", err)
	}
	// X509KeyPair's errors say which input is wrong ("certificate input",
	// "key input", "private key does not match public key"), not where it
	// came from.
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", kp.certFile, kp.keyFile, err)
	}
	return &cert, nil
}

// getCertificate is tls.Config.GetCertificate: the pair as last read,
// read again first if its files changed since. Two stats per handshake
// cost far less than the handshake; reading on change rather than on a
// timer means no goroutine to own and no renewal missed for a period.
func (kp *keyPair) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	stamp, err := kp.stat()
	if err == nil && stamp == kp.stamp {
		return kp.cert, nil
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = kp.read()
	}
	if err != nil {
		// Mid-renewal the files can be missing or disagree for a moment;
		// the previous pair serves until they are whole again, and the
		// next handshake tries again.
		if msg := err.Error(); msg != kp.lastErr {
			kp.lastErr = msg
			kp.log.Warn("TLS certificate changed on disk but cannot be loaded; serving the previous one", "err", err)
		}
		return kp.cert, nil
	}
	kp.cert, kp.stamp, kp.lastErr = cert, stamp, ""
	kp.logLoaded("TLS certificate reloaded")
	return kp.cert, nil
}

// logLoaded says which certificate is served and until when; kp.mu held
// or kp not yet shared.
func (kp *keyPair) logLoaded(msg string) {
	leaf := kp.cert.Leaf
	if leaf == nil {
		return
	}
	kp.log.Info(msg, "file", kp.certFile, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
	if time.Now().After(leaf.NotAfter) {
		kp.log.Warn("TLS certificate has expired; clients will refuse it", "file", kp.certFile, "not_after", leaf.NotAfter)
	}
}
