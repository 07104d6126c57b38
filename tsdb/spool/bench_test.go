package spool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

const benchBatch = 1000 // points per Append, the evaluator's batches under load

// benchPoints is batch k in dmonitor's shape: 1000 hosts × 10 checks of one
// observer, a status each.
func benchPoints(k int) []tsdb.Point {
	out := make([]tsdb.Point, benchBatch)
	for i := range out {
		id := (k*benchBatch + i) % 10000
		out[i] = tsdb.Point{
			Metric: "dmonitor.check.status",
			Tags: map[string]string{
				"host":     fmt.Sprintf("host%03d.example.org", id/10),
				"check":    fmt.Sprintf("check%d", id%10),
				"observer": "eu-1",
			},
			Time:  base.Add(time.Duration(k) * 10 * time.Second),
			Value: float64(i % 4),
		}
	}
	return out
}

// jsonPoint is a point as OpenTSDB's /api/put takes it, the other
// encoding considered.
type jsonPoint struct {
	Metric    string            `json:"metric"`
	Timestamp int64             `json:"timestamp"`
	Value     float64           `json:"value"`
	Tags      map[string]string `json:"tags"`
}

func encodeJSON(ps []tsdb.Point) []byte {
	jp := make([]jsonPoint, len(ps))
	for i, p := range ps {
		jp[i] = jsonPoint{p.Metric, p.Time.UnixMilli(), p.Value, p.Tags}
	}
	b, err := json.Marshal(jp)
	if err != nil {
		panic(err)
	}
	return b
}

// BenchmarkEncode encodes a batch as spool records and reports size and
// speed against JSON (OpenTSDB's own encoding) measured in the same run.
func BenchmarkEncode(b *testing.B) {
	ps := benchPoints(0)
	const jsonRuns = 200
	began := time.Now()
	var js []byte
	for range jsonRuns {
		js = encodeJSON(ps)
	}
	jsonPer := time.Since(began) / jsonRuns

	enc := newEncoder()
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var err error
		if buf, err = enc.appendRecords(buf[:0], ps); err != nil {
			b.Fatal(err)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(len(buf))/benchBatch, "bytes/point")
	b.ReportMetric(float64(len(js))/benchBatch, "json-bytes/point")
	b.ReportMetric(float64(len(buf))/float64(len(js)), "size-ratio-to-json")
	b.ReportMetric(float64(jsonPer)/float64(per), "speedup-over-json")
}

// BenchmarkSpoolAppend appends batches while the downstream is down, one
// batch per op, and reports points/s and the ratio to the floor: writing
// the same bytes to a file with one write(2) each, measured in the same
// run.
func BenchmarkSpoolAppend(b *testing.B) {
	dir := b.TempDir()
	s := openSpool(b, filepath.Join(dir, "spool"), &fakeStore{down: true}, Options{})
	batches := make([][]tsdb.Point, 64)
	for k := range batches {
		batches[k] = benchPoints(k)
	}
	raw, err := newEncoder().appendRecords(nil, batches[0])
	if err != nil {
		b.Fatal(err)
	}
	floor := writeRate(b, filepath.Join(dir, "floor"), raw, 2000)

	b.ReportAllocs()
	b.ResetTimer()
	k := 0
	for b.Loop() {
		if err := s.Append(context.Background(), batches[k%len(batches)]); err != nil {
			b.Fatal(err)
		}
		k++
	}
	ours := float64(b.N*benchBatch) / b.Elapsed().Seconds()
	b.ReportMetric(ours, "points/s")
	b.ReportMetric(floor, "write-floor-points/s")
	b.ReportMetric(ours/floor, "ratio-to-floor")
	b.ReportMetric(float64(s.Stats().Bytes)/float64(s.Stats().Points), "bytes/point")
}

// writeRate writes rec to a new file n times and returns points/s.
func writeRate(b *testing.B, path string, rec []byte, n int) float64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	began := time.Now()
	for range n {
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n*benchBatch) / time.Since(began).Seconds()
}

// countStore counts the points it takes, or refuses all while down.
type countStore struct {
	down atomic.Bool
	n    atomic.Int64
}

func (c *countStore) Append(ctx context.Context, ps []tsdb.Point) error {
	if c.down.Load() {
		return errDown
	}
	c.n.Add(int64(len(ps)))
	return nil
}

// BenchmarkReplay replays 100,000 spooled points per op into a downstream
// that takes them at once, and reports points/s and the ratio to the
// floor: reading and decoding the same records in one loop, measured in
// the same run.
func BenchmarkReplay(b *testing.B) {
	const per = 100 * benchBatch
	down := &countStore{}
	s := openSpool(b, b.TempDir(), down, Options{})
	fill := func() {
		down.down.Store(true)
		for k := range per / benchBatch {
			if err := s.Append(context.Background(), benchPoints(k)); err != nil {
				b.Fatal(err)
			}
		}
		down.down.Store(false)
	}
	fill()
	floor := decodeRate(b, s)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		want := down.n.Load() + per
		for down.n.Load() < want {
			time.Sleep(50 * time.Microsecond)
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	ours := float64(b.N*per) / b.Elapsed().Seconds()
	b.ReportMetric(ours, "points/s")
	b.ReportMetric(floor, "decode-floor-points/s")
	b.ReportMetric(ours/floor, "ratio-to-floor")
}

// decodeRate reads and decodes every record in the spool's segments
// and returns points/s.
func decodeRate(b *testing.B, s *Spool) float64 {
	files, err := filepath.Glob(filepath.Join(s.dir, "*.seg"))
	if err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	points := 0
	var all []tsdb.Point
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		fi, _ := f.Stat()
		r := newRecordReader(f, 0, fi.Size(), nil)
		for {
			_, n, payload, err := r.next()
			if err != nil {
				break
			}
			if all, err = decodePayload(all[:0], payload, n); err != nil {
				b.Fatal(err)
			}
			points += n
		}
		f.Close()
	}
	return float64(points) / time.Since(began).Seconds()
}

// BenchmarkPassthrough appends batches while the spool is empty and the
// downstream takes them, the path of every Append while the store is
// healthy, and reports the cost the spool adds per Append: its time less
// calling the downstream directly, measured in the same run.
func BenchmarkPassthrough(b *testing.B) {
	down := &countStore{}
	s := openSpool(b, b.TempDir(), down, Options{})
	ps := benchPoints(0)
	const directRuns = 100000
	began := time.Now()
	for range directRuns {
		if err := down.Append(context.Background(), ps); err != nil {
			b.Fatal(err)
		}
	}
	direct := time.Since(began) / directRuns

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.Append(context.Background(), ps); err != nil {
			b.Fatal(err)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per-direct), "added-ns/append")
}
