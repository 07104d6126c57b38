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

// Serve listens on a free loopback port and hands every connection to
// serve, one after the other, from a goroutine of its own that the end of
// the test stops (after closing the listener). It returns the address.
func Serve(t testing.TB, serve func(net.Conn)) *net.TCPAddr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().(*net.TCPAddr)
}
