package embedded

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// The series cache costs a few dozen bytes a series beside the labels it
// shares with the engine: keyed by the series' whole key it cost over 100
// more (issue 12).
func TestSeriesCacheMemory(t *testing.T) {
	const n = 100_000
	keys := make([][]byte, n)
	lsets := make([]labels.Labels, n)
	for i := range n {
		tg := benchTags(i)
		tg["id"] = fmt.Sprint(i)
		keys[i] = keyFor("dmonitor.check.duration", tg)
		lsets[i] = labels.FromMap(tg)
	}
	before := liveHeap()
	c := newSeriesCache()
	for i := range n {
		c.set(keys[i], seriesEntry{ref: storage.SeriesRef(i + 1), lset: lsets[i]})
	}
	per := float64(liveHeap()-before) / n
	runtime.KeepAlive(keys)
	runtime.KeepAlive(lsets)
	if c.len() != n {
		t.Fatalf("len = %d, want %d", c.len(), n)
	}
	t.Logf("%.0f bytes a series", per)
	if per > 64 {
		t.Errorf("the cache takes %.0f bytes a series, want at most 64", per)
	}
}

// The engine runs without isolation (see engineOptions): its rings of
// append IDs cost 45 to 70 bytes a series.
func TestEngineWithoutIsolation(t *testing.T) {
	if !engineOptions(Options{}).IsolationDisabled {
		t.Error("the engine's isolation is on")
	}
}
