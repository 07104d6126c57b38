package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"testing"

	"github.com/dmonitor/dmonitor/tsdb"
)

// abuseBody is a put body of n points, each of a new series
// (host=<prefix><i>), of some 87 bytes each: 150,000 of them are the 13 MB
// requests that grew the daemon by 860 MB.
func abuseBody(prefix string, n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 90)
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"metric":"abuse.series","timestamp":1356998400,"value":1,"tags":{"host":"`)
		b.WriteString(prefix)
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`"}}`)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// heapInUse is the heap the live objects hold, after collecting what is
// garbage.
func heapInUse() (inUse, sys uint64) {
	runtime.GC()
	runtime.GC() // the first may leave finalizer-held objects behind
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.HeapSys
}

// abuseHeapBound is the most heap the abuse below may leave behind. Every
// request is refused before any point reaches the store, so nothing the
// requests bring should stay live: what does is the handler's and the
// engine's lazily grown state and the HTTP server's and client's pooled
// buffers, measured within ±0.1 MiB (go test, -race or not). 8 MiB leaves
// room for runtime and allocator noise, yet is less than one twelfth of
// what a single one of these requests retains without the limits (some
// 120 MiB, see BenchmarkPutAbuse/off).
const abuseHeapBound = 8 << 20

// Five 13 MB bodies of 150,000 new series each, and five of 20,000 new
// series within the data points limit, against a real embedded store
// under the default limits: all refused, nothing stored, and the heap
// stays where it was.
func TestPutAbuseHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("posts 70 MB of JSON")
	}
	st := openStore(t)
	s := serve(t, st, st, Options{}, nil)
	// Warm up the store, the handler and both HTTP ends with one request
	// of each kind.
	s.put(t, string(abuseBody("warm", 10)))
	s.do(t, http.MethodPost, "/api/put", abuseBody("warm", DefaultMaxDatapointsPerRequest+1))
	s.do(t, http.MethodPost, "/api/put", abuseBody("warm", DefaultMaxDatapointsPerRequest))

	before, _ := heapInUse()
	for i := range 5 {
		body := abuseBody(fmt.Sprintf("a%d-", i), 150_000)
		checkError(t, "150,000 points", s.do(t, http.MethodPost, "/api/put", body), 400,
			fmt.Sprintf("datapoints per request limit %d exceeded: more in a body of %d bytes", DefaultMaxDatapointsPerRequest, len(body)))
	}
	for i := range 5 {
		body := abuseBody(fmt.Sprintf("b%d-", i), DefaultMaxDatapointsPerRequest)
		checkError(t, "20,000 new series", s.do(t, http.MethodPost, "/api/put", body), 400,
			fmt.Sprintf("new series limit per request %d exceeded: %d new series, first abuse.series{host=b%d-0}",
				DefaultMaxNewSeriesPerRequest, DefaultMaxDatapointsPerRequest, i))
	}
	after, _ := heapInUse()
	growth := int64(after) - int64(before)
	t.Logf("heap in use %.1f MiB before, %.1f MiB after: %+.2f MiB", mib(before), mib(after), float64(growth)/(1<<20))
	if growth > abuseHeapBound {
		t.Errorf("the heap grew by %.1f MiB, want under %d MiB", float64(growth)/(1<<20), abuseHeapBound>>20)
	}
	if n := seriesOf(t, st, "abuse.series"); n != 10 {
		t.Errorf("%d abuse series stored, want only the 10 of the warm-up", n)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// BenchmarkPutAbuse posts the measured abuse, five bodies of 150,000 new
// series each, to a real embedded store, and reports what it leaves on
// the heap (in-use MiB after GC, growth) and the heap reserved (a proxy
// for the peak), under the default limits and with every limit off.
// "within" posts what the defaults let through instead: five bodies of
// 10,000 new series, the per-minute allowance, over a store that counts
// new series, and a sixth that is refused.
func BenchmarkPutAbuse(b *testing.B) {
	off := Options{MaxDatapointsPerRequest: -1, MaxNewSeriesPerRequest: -1, MaxNewSeriesPerMinute: -1}
	for _, bc := range []struct {
		name     string
		opts     Options
		points   int
		requests int
		counting bool
	}{
		{"defaults", Options{}, 150_000, 5, false},
		{"within", Options{}, DefaultMaxNewSeriesPerRequest, 6, true},
		{"off", off, 150_000, 5, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				var (
					s     *server
					store tsdb.Store
				)
				if bc.counting {
					cs := countingStore{newCapStore(b, 0)}
					s, store = serve(b, cs.st, cs, bc.opts, nil), cs
				} else {
					st := openStore(b)
					s, store = serve(b, st, st, bc.opts, nil), st
				}
				// Warm the store up directly, so the new-series
				// allowance is whole for the requests measured.
				if err := store.Append(context.Background(), []tsdb.Point{{Metric: "warm", Tags: map[string]string{"host": "a"}, Time: now, Value: 1}}); err != nil {
					b.Fatal(err)
				}
				before, sysBefore := heapInUse()
				b.StartTimer()
				stored := 0
				for i := range bc.requests {
					r := s.do(b, http.MethodPost, "/api/put", abuseBody(fmt.Sprintf("r%d-", i), bc.points))
					if r.code == http.StatusNoContent {
						stored += bc.points
					}
				}
				b.StopTimer()
				after, sysAfter := heapInUse()
				b.ReportMetric(mib(after), "heap-after-MiB")
				b.ReportMetric(mib(after)-mib(before), "heap-growth-MiB")
				b.ReportMetric(mib(sysAfter)-mib(sysBefore), "heap-reserved-growth-MiB")
				b.ReportMetric(float64(stored), "series-stored")
				b.StartTimer()
			}
		})
	}
}
