package embedded

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/tsdb"
)

const (
	benchSeries = 10000
	benchBatch  = 1000
)

// benchTags are the tags of the benchmark's series: dmonitor's shape, 1000
// hosts times 10 checks from one observer.
func benchTags(i int) map[string]string {
	return map[string]string{
		"host":     fmt.Sprintf("host%03d.example.org", i/10),
		"check":    fmt.Sprintf("check%d", i%10),
		"observer": "eu-1",
	}
}

// benchBatchAt fills pts with batch k: benchBatch consecutive series of the
// benchSeries, each round over all of them 10 seconds after the previous.
func benchBatchAt(pts []tsdb.Point, all []map[string]string, k int) {
	first := k * benchBatch
	round := first / benchSeries
	for i := range pts {
		pts[i] = tsdb.Point{
			Metric: "dmonitor.check.duration",
			Tags:   all[(first+i)%benchSeries],
			Time:   base.Add(time.Duration(round) * 10 * time.Second),
			Value:  float64(k + i),
		}
	}
}

// engineBaseline appends straight to a store's engine, with labels built
// beforehand and series references kept as our cache keeps them: the most
// the engine can do.
type engineBaseline struct {
	s     *Store
	lsets []labels.Labels
	refs  []storage.SeriesRef
}

func newEngineBaseline(s *Store) *engineBaseline {
	e := &engineBaseline{s: s, lsets: make([]labels.Labels, benchSeries), refs: make([]storage.SeriesRef, benchSeries)}
	for i := range e.lsets {
		lb := labels.NewBuilder(labels.FromMap(benchTags(i)))
		lb.Set(nameLabel, "engine.baseline")
		e.lsets[i] = lb.Labels()
	}
	return e
}

// appendBatch appends batch k, shaped as benchBatchAt shapes it.
func (e *engineBaseline) appendBatch(b *testing.B, k int) {
	first := k * benchBatch
	t := base.Add(time.Duration(first/benchSeries) * 10 * time.Second).UnixMilli()
	app := e.s.db.AppenderV2(context.Background())
	for i := range benchBatch {
		id := (first + i) % benchSeries
		ref, err := app.Append(e.refs[id], e.lsets[id], 0, t, float64(k+i), nil, nil, storage.AOptions{})
		if err != nil {
			b.Fatal(err)
		}
		e.refs[id] = ref
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
}

// rate appends batches [start, start+n) and returns points per second.
func (e *engineBaseline) rate(b *testing.B, start, n int) float64 {
	began := time.Now()
	for k := start; k < start+n; k++ {
		e.appendBatch(b, k)
	}
	return float64(n*benchBatch) / time.Since(began).Seconds()
}

// BenchmarkAppend appends batches of 1000 points over 10,000 series through
// Store.Append, one batch per op, and reports points/s and the ratio to the
// bare engine measured in the same run.
func BenchmarkAppend(b *testing.B) {
	s := openStore(b, "", Options{})
	all := make([]map[string]string, benchSeries)
	for i := range all {
		all[i] = benchTags(i)
	}
	pts := make([]tsdb.Point, benchBatch)
	// Warm both paths up so the series exist and caches are filled: the
	// steady state is what matters for a monitoring system.
	for k := range benchSeries / benchBatch {
		benchBatchAt(pts, all, k)
		if err := s.Append(context.Background(), pts); err != nil {
			b.Fatal(err)
		}
	}
	eb := newEngineBaseline(s)
	eb.rate(b, 0, benchSeries/benchBatch)
	engine := eb.rate(b, benchSeries/benchBatch, 200)

	b.ReportAllocs()
	b.ResetTimer()
	k := benchSeries / benchBatch
	for b.Loop() {
		benchBatchAt(pts, all, k)
		if err := s.Append(context.Background(), pts); err != nil {
			b.Fatal(err)
		}
		k++
	}
	ours := float64(b.N*benchBatch) / b.Elapsed().Seconds()
	b.ReportMetric(ours, "points/s")
	b.ReportMetric(engine, "engine-points/s")
	b.ReportMetric(ours/engine, "ratio-to-engine")
}

// BenchmarkEngineAppend is the baseline alone: the engine's appender with
// labels built beforehand and series references cached, one batch of 1000
// points per op.
func BenchmarkEngineAppend(b *testing.B) {
	s := openStore(b, "", Options{})
	eb := newEngineBaseline(s)
	eb.rate(b, 0, benchSeries/benchBatch) // create the series
	b.ReportAllocs()
	b.ResetTimer()
	k := benchSeries / benchBatch
	for b.Loop() {
		eb.appendBatch(b, k)
		k++
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "points/s")
}

// fillDay writes one day at 10s resolution (8640 points) for n series.
func fillDay(b *testing.B, s *Store, n int) {
	b.Helper()
	pts := make([]tsdb.Point, 0, n)
	tg := make([]map[string]string, n)
	for i := range tg {
		tg[i] = map[string]string{"host": fmt.Sprintf("h%03d", i), "check": "http"}
	}
	for step := range 8640 {
		pts = pts[:0]
		for i := range n {
			pts = append(pts, tsdb.Point{Metric: "day", Tags: tg[i], Time: at(int64(step) * 10), Value: float64(step % 100)})
		}
		if err := s.Append(context.Background(), pts); err != nil {
			b.Fatal(err)
		}
	}
}

// engineReadRate is the baseline for queries: how long the engine takes to
// hand over the same samples, with nothing done to them.
func engineReadRate(b *testing.B, s *Store, runs int) time.Duration {
	b.Helper()
	began := time.Now()
	for range runs {
		q, err := s.db.Querier(at(0).UnixMilli(), at(86400).UnixMilli())
		if err != nil {
			b.Fatal(err)
		}
		set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, nameLabel, "day"))
		var it chunkenc.Iterator
		for set.Next() {
			it = set.At().Iterator(it)
			for it.Next() != chunkenc.ValNone {
			}
		}
		q.Close()
	}
	return time.Since(began) / time.Duration(runs)
}

func benchQuery(b *testing.B, nSeries int, q tsdb.Query) {
	s := openStore(b, "", Options{})
	fillDay(b, s, nSeries)
	baseline := engineReadRate(b, s, 20)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out, err := s.Query(context.Background(), q)
		if err != nil || len(out) != 1 || len(out[0].Samples) == 0 {
			b.Fatalf("query: %d series, err %v", len(out), err)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(time.Millisecond), "ms/query")
	b.ReportMetric(float64(per)/float64(baseline), "ratio-to-engine-read")
}

// BenchmarkQueryDay reads one day of one series at 10s resolution (8640
// samples), raw.
func BenchmarkQueryDay(b *testing.B) {
	benchQuery(b, 1, tsdb.Query{Metric: "day", Start: at(0), End: at(86400)})
}

// BenchmarkQueryDay100Sum sums 100 such series (864,000 samples) into one.
func BenchmarkQueryDay100Sum(b *testing.B) {
	benchQuery(b, 100, tsdb.Query{Metric: "day", Start: at(0), End: at(86400), Aggregator: "sum"})
}

// BenchmarkQueryDay100Downsampled is a typical dashboard query: 100 series
// downsampled to 5 minutes, averaged.
func BenchmarkQueryDay100Downsampled(b *testing.B) {
	benchQuery(b, 100, tsdb.Query{Metric: "day", Start: at(0), End: at(86400), Aggregator: "avg",
		Downsample: &tsdb.Downsample{Interval: 5 * time.Minute, Aggregator: "avg"}})
}

// BenchmarkSeriesMemory creates series of dmonitor's shape (benchTags, a
// point each) and reports the heap they take: the engine's series,
// postings and open chunk, and this store's cache entry.
func BenchmarkSeriesMemory(b *testing.B) {
	const n = 50000
	for b.Loop() {
		b.StopTimer()
		s := openStore(b, "", Options{})
		pts := make([]tsdb.Point, 1000)
		before := liveHeap()
		b.StartTimer()
		for k := range n / len(pts) {
			for i := range pts {
				id := k*len(pts) + i
				tg := benchTags(id % benchSeries)
				tg["id"] = fmt.Sprint(id)
				pts[i] = tsdb.Point{Metric: "dmonitor.check.duration", Tags: tg, Time: base, Value: 1}
			}
			if err := s.Append(context.Background(), pts); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		pts = nil
		b.ReportMetric(float64(liveHeap()-before)/n, "bytes/series")
		b.StartTimer()
	}
}

// BenchmarkSeriesMemoryTwoHours writes what 10,000 probe checks at a 60 s
// interval write, 30,000 series (a constant status, a varying duration and
// perfdata time), for six hours, a point a minute, with 60 samples a
// chunk and with the engine's default, and reports the heap each series
// takes after the first point, and its peak and average over the last 240
// points: the engine's steady state, its head holding one to three hours
// between compactions, each series' open chunk growing (about 8 bytes a
// point for a value that varies in every bit, as a run time does) until
// it is cut. After each point the engine moves cut chunks to disk and
// compacts, as its loop does every minute. It also reports the bytes a
// point the blocks take on disk, and by how much the process's resident
// file-backed memory grew (mmapped chunks read by compactions).
//
// The run times are written raw (nanoseconds, as before check.Seconds) or
// as the daemon writes them, to 2⁻²⁰ s.
func BenchmarkSeriesMemoryTwoHours(b *testing.B) {
	for _, c := range []struct {
		spc   int
		round bool
	}{{60, false}, {60, true}, {promtsdb.DefaultSamplesPerChunk, false}, {promtsdb.DefaultSamplesPerChunk, true}} {
		b.Run(fmt.Sprintf("samples_per_chunk=%d/rounded=%v", c.spc, c.round), func(b *testing.B) {
			benchSeriesMemoryCycle(b, c.spc, c.round)
		})
	}
}

func benchSeriesMemoryCycle(b *testing.B, spc int, round bool) {
	const checks, samples, steady = 10000, 360, 240
	tags := make([][2]map[string]string, checks)
	for i := range tags {
		tg := benchTags(i)
		perf := maps.Clone(tg)
		perf["label"] = "time"
		tags[i] = [2]map[string]string{tg, perf}
	}
	for b.Loop() {
		b.StopTimer()
		rng := rand.New(rand.NewPCG(1, 2))
		s := openStore(b, "", Options{samplesPerChunk: spc})
		// Aligned on the engine's two-hour chunk range, so each 120 points
		// fill one range.
		t0 := time.Now().Add(-8 * time.Hour).Truncate(2 * time.Hour)
		pts := make([]tsdb.Point, 0, 3*checks)
		before := liveHeap()
		rssBefore := rssFile(b)
		var peak, sum, rssPeak uint64
		b.StartTimer()
		for k := range samples {
			pts = pts[:0]
			at := t0.Add(time.Duration(k) * time.Minute)
			for i := range checks {
				d := 0.0001 + rng.Float64()*0.0005
				if round {
					d = check.Seconds(time.Duration(d * float64(time.Second)))
				}
				pts = append(pts,
					tsdb.Point{Metric: "dmonitor.check.status", Tags: tags[i][0], Time: at, Value: 0},
					tsdb.Point{Metric: "dmonitor.check.duration", Tags: tags[i][0], Time: at, Value: d + 1.0/(1<<16)},
					tsdb.Point{Metric: "dmonitor.check.perf", Tags: tags[i][1], Time: at, Value: d})
			}
			if err := s.Append(context.Background(), pts); err != nil {
				b.Fatal(err)
			}
			s.db.ForceHeadMMap()
			if err := s.db.Compact(context.Background()); err != nil {
				b.Fatal(err)
			}
			if k != 0 && k < samples-steady {
				continue
			}
			b.StopTimer()
			h := liveHeap() - before
			if k == 0 {
				b.ReportMetric(float64(h)/(3*checks), "bytes/series_first")
			} else {
				peak = max(peak, h)
				sum += h
			}
			rssPeak = max(rssPeak, rssFile(b))
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(float64(peak)/(3*checks), "bytes/series_peak")
		b.ReportMetric(float64(sum)/steady/(3*checks), "bytes/series_avg")
		b.ReportMetric(float64(rssPeak-rssBefore)/(1<<20), "MiB_rss_file_growth")
		var size, n int64
		for _, bl := range s.db.Blocks() {
			size += bl.Size()
			n += int64(bl.Meta().Stats.NumSamples)
		}
		if n == 0 {
			b.Fatal("no block was compacted")
		}
		b.ReportMetric(float64(size)/float64(n), "block_bytes/point")
		b.StartTimer()
	}
}

// rssFile is the process's resident file-backed memory (RssFile in
// /proc/self/status): mmapped files' pages that have been read.
func rssFile(b *testing.B) uint64 {
	b.Helper()
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status:", err)
	}
	for line := range strings.Lines(string(st)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Skip("no RssFile in /proc/self/status")
	return 0
}

// BenchmarkQuerySamplesPerChunk reads a day of 100 run-time series at a
// 60 s interval, summed, from a store with 60 samples a chunk and from
// one with the engine's default, alternately in the same run, and reports
// the ratio of their times: what smaller chunks cost a query.
func BenchmarkQuerySamplesPerChunk(b *testing.B) {
	const n, points = 100, 1440
	q := tsdb.Query{Metric: "day", Start: at(0), End: at(86400), Aggregator: "sum"}
	open := func(spc int) *Store {
		s := openStore(b, "", Options{samplesPerChunk: spc})
		rng := rand.New(rand.NewPCG(1, 2))
		pts := make([]tsdb.Point, n)
		for k := range points {
			for i := range pts {
				pts[i] = tsdb.Point{Metric: "day", Tags: map[string]string{"host": fmt.Sprintf("h%03d", i)},
					Time: at(60 * int64(k)), Value: 0.0001 + rng.Float64()*0.0005}
			}
			if err := s.Append(context.Background(), pts); err != nil {
				b.Fatal(err)
			}
		}
		s.db.ForceHeadMMap()
		return s
	}
	ours, dflt := open(60), open(promtsdb.DefaultSamplesPerChunk)
	var took [2]time.Duration
	for b.Loop() {
		for i, s := range []*Store{ours, dflt} {
			began := time.Now()
			out, err := s.Query(context.Background(), q)
			took[i] += time.Since(began)
			if err != nil || len(out) != 1 || len(out[0].Samples) != points {
				b.Fatalf("query: %d series, err %v", len(out), err)
			}
		}
	}
	b.ReportMetric(float64(took[0])/float64(b.N)/float64(time.Millisecond), "ms/query")
	b.ReportMetric(float64(took[1])/float64(b.N)/float64(time.Millisecond), "default-ms/query")
	b.ReportMetric(float64(took[0])/float64(took[1]), "ratio-to-default")
}
