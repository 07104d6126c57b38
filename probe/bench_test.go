package probe

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// BenchmarkTCP measures TCP probes a second against a loopback listener
// that accepts and closes, run from as many goroutines as GOMAXPROCS.
func BenchmarkTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	p, err := NewTCP(TCP{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	benchProbe(b, p)
}

// BenchmarkHTTP measures HTTP probes a second against an httptest server,
// a new connection each run as check_http.
func BenchmarkHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("hello body"))
	}))
	b.Cleanup(srv.Close)
	p, err := NewHTTP(HTTP{URL: srv.URL + "/", BodyContains: "hello", Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	benchProbe(b, p)
}

func benchProbe(b *testing.B, p Probe) {
	b.ReportAllocs()
	ctx := b.Context()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := p.Run(ctx); r.Status != check.OK {
				b.Errorf("probe: %v %s", r.Status, r.Output)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "probes/s")
}
