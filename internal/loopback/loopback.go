// Package loopback gives tests addresses on 127.0.0.1.
package loopback

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback address that nothing listened on a moment
// ago: for a server a test will start there, or for a connection that must
// be refused.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
