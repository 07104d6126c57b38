package httpserve

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/dmonitor/dmonitor/internal/httpserve/tlstest"
)

// BenchmarkGetCertificate is what looking for a renewed certificate adds
// to each handshake: two stats of unchanged files.
func BenchmarkGetCertificate(b *testing.B) {
	dir := b.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	tlstest.NewCA(b, "bench CA").Issue(b, certFile, keyFile)
	kp, err := loadKeyPair(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := kp.getCertificate(nil); err != nil {
			b.Fatal(err)
		}
	}
}
