package embedded

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/tsdb"
)

// TestKeeperWritesChunksAndCompacts checks the engine's background writes,
// which the keeper does in its place (see engineOptions): full head chunks
// reach the chunks_head files, where they no longer take heap, and a head
// spanning more than one and a half blocks is compacted into a block on
// disk, with every point still read back.
func TestKeeperWritesChunksAndCompacts(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{samplesPerChunk: 30})
	// One point a minute for 5 series: 100 minutes cut three chunks a
	// series and leave the head short of a block.
	const n = 5
	batch := func(minute int) []tsdb.Point {
		pts := make([]tsdb.Point, n)
		for i := range pts {
			pts[i] = tsdb.Point{Metric: "m", Tags: map[string]string{"host": fmt.Sprintf("h%d", i)},
				Time: at(int64(minute) * 60), Value: float64(minute)}
		}
		return pts
	}
	for m := range 100 {
		mustAppend(t, s, batch(m))
	}
	await.Until(t, "full head chunks written to chunks_head", func() bool {
		return chunkFiles(t, dir) > 0
	})
	if b := blocks(t, dir); b != 0 {
		t.Fatalf("%d blocks before the head spans a block and a half", b)
	}

	for m := 100; m < 240; m++ {
		mustAppend(t, s, batch(m))
	}
	await.Until(t, "the head compacted into a block", func() bool {
		return blocks(t, dir) > 0
	})
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(240 * 60)})
	if len(out) != n {
		t.Fatalf("%d series read back, want %d", len(out), n)
	}
	for _, ser := range out {
		if got := len(svsOf(t, ser)); got != 240 {
			t.Errorf("series %v: %d points read back, want 240", ser.Tags, got)
		}
	}
}

// chunkFiles is how many chunks_head files dir has: the engine makes the
// first when it writes the first full head chunk (into its write buffer).
func chunkFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "chunks_head"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(ents)
}

// blocks is how many blocks the engine has written in dir.
func blocks(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, err := ulid.ParseStrict(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil {
			n++
		}
	}
	return n
}
