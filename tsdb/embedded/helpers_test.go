package embedded

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// base is the start of the test data: a fixed past time, so nothing
// depends on the clock.
var base = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

func at(sec int64) time.Time { return base.Add(time.Duration(sec) * time.Second) }

// openStore opens a store in dir (a new temporary one if dir is "") and
// closes it when the test ends.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// tags builds a tag map from "k=v" pairs.
func tags(kv ...string) map[string]string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return m
}

// series is the points of one series at (second offset, value) pairs.
func series(metric string, tg map[string]string, svs ...sv) []tsdb.Point {
	var pts []tsdb.Point
	for _, x := range svs {
		pts = append(pts, tsdb.Point{Metric: metric, Tags: tg, Time: at(x.sec), Value: x.v})
	}
	return pts
}

// sv is a sample as tests write it: seconds after base and a value.
type sv struct {
	sec int64
	v   float64
}

func (x sv) String() string { return fmt.Sprintf("%d:%g", x.sec, x.v) }

func mustAppend(t *testing.T, s *Store, pts ...[]tsdb.Point) {
	t.Helper()
	var all []tsdb.Point
	for _, p := range pts {
		all = append(all, p...)
	}
	if err := s.Append(context.Background(), all); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func mustQuery(t *testing.T, s *Store, q tsdb.Query) []tsdb.Series {
	t.Helper()
	out, err := s.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("Query(%+v): %v", q, err)
	}
	return out
}

// svsOf returns a series' samples as (seconds after base, value).
func svsOf(t *testing.T, s tsdb.Series) []sv {
	t.Helper()
	out := make([]sv, len(s.Samples))
	for i, x := range s.Samples {
		d := x.Time.Sub(base)
		if d%time.Second != 0 {
			t.Fatalf("sample time %s is not a whole second after base", x.Time)
		}
		out[i] = sv{int64(d / time.Second), x.Value}
	}
	return out
}

// sameSVs compares samples, NaN equal to NaN, values within 1e-9.
func sameSVs(got, want []sv) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.sec != w.sec {
			return false
		}
		if math.IsNaN(w.v) != math.IsNaN(g.v) || !math.IsNaN(w.v) && math.Abs(g.v-w.v) > 1e-9 {
			return false
		}
	}
	return true
}

func checkSVs(t *testing.T, what string, s tsdb.Series, want ...sv) {
	t.Helper()
	if got := svsOf(t, s); !sameSVs(got, want) {
		t.Errorf("%s: samples\n got %v\nwant %v", what, got, want)
	}
}

// only returns the single series of an answer.
func only(t *testing.T, out []tsdb.Series) tsdb.Series {
	t.Helper()
	if len(out) != 1 {
		t.Fatalf("got %d series, want 1: %+v", len(out), out)
	}
	return out[0]
}

// liveHeap collects the garbage and returns the bytes of heap still in use.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
