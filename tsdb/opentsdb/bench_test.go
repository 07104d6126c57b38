package opentsdb

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// benchTSD answers /api/put as OpenTSDB does when every point is good and
// no details are read: it decodes the (gzip) JSON array fully, then 204.
func benchTSD(b *testing.B) string {
	b.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rd io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			rd = zr
		}
		var pts []putPoint
		if err := json.NewDecoder(rd).Decode(&pts); err != nil || len(pts) == 0 {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	b.Cleanup(srv.Close)
	return srv.URL
}

// benchPoints are n points shaped like dmonitor's check results.
func benchPoints(n int) []tsdb.Point {
	pts := make([]tsdb.Point, n)
	t0 := time.Unix(1700000000, 0)
	for i := range pts {
		pts[i] = tsdb.Point{
			Metric: "dmonitor.check.duration",
			Tags:   map[string]string{"host": "web" + strconv.Itoa(i%100) + ".example.org", "check": "http", "observer": "eu-1"},
			Time:   t0.Add(time.Duration(i) * time.Second),
			Value:  0.123 + float64(i%7),
		}
	}
	return pts
}

// BenchmarkPut measures Append of 1000 points per call against a local
// server that decodes them, by batch size. points/s is the throughput;
// x_batch50 is the same run's throughput over that of the default (gzip,
// batches of 50), measured right after in the same benchmark.
func BenchmarkPut(b *testing.B) {
	const perCall = 1000
	pts := benchPoints(perCall)
	for _, bc := range []struct {
		name   string
		batch  int
		noGzip bool
	}{
		{"batch=50", 50, false},
		{"batch=1000", 1000, false},
		{"batch=50/plain", 50, true},
		{"batch=1000/plain", 1000, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			url := benchTSD(b)
			c, err := New(Options{URL: url, BatchSize: bc.batch, DisableGzip: bc.noGzip})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			base, err := New(Options{URL: url})
			if err != nil {
				b.Fatal(err)
			}
			defer base.Close()
			ctx := context.Background()
			n := 0
			start := time.Now()
			for b.Loop() {
				if err := c.Append(ctx, pts); err != nil {
					b.Fatal(err)
				}
				n++
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(n*perCall)/elapsed.Seconds(), "points/s")

			// Baseline: the default client, as many calls (at most 50).
			m := min(n, 50)
			t0 := time.Now()
			for range m {
				if err := base.Append(ctx, pts); err != nil {
					b.Fatal(err)
				}
			}
			baseRate := float64(m*perCall) / time.Since(t0).Seconds()
			b.ReportMetric(float64(n*perCall)/elapsed.Seconds()/baseRate, "x_batch50")
		})
	}
}
