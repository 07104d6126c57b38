package embedded

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/tmpfstest"
	"github.com/dmonitor/dmonitor/tsdb"
)

// fullDiskBatch is batch n of the full-disk tests: 200 series, one point
// each, 10 s after the previous batch.
func fullDiskBatch(n int) []tsdb.Point {
	pts := make([]tsdb.Point, 200)
	for i := range pts {
		pts[i] = tsdb.Point{Metric: "m", Tags: map[string]string{"host": fmt.Sprintf("h%03d", i)},
			Time: at(int64(n) * 10), Value: float64(n*1000 + i)}
	}
	return pts
}

// checkBatches checks the store holds exactly batches [0, n) of
// fullDiskBatch but for the batches in missing.
func checkBatches(t *testing.T, s *Store, want []int) {
	t.Helper()
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(1 << 20)})
	got := map[string]map[int64]float64{}
	for _, ser := range out {
		m := map[int64]float64{}
		for _, x := range svsOf(t, ser) {
			m[x.sec] = x.v
		}
		got[ser.Tags["host"]] = m
	}
	lost, total := 0, 0
	for _, n := range want {
		for _, p := range fullDiskBatch(n) {
			total++
			if v, ok := got[p.Tags["host"]][int64(p.Time.Sub(base).Seconds())]; !ok || v != p.Value {
				lost++
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged points are missing", lost, total)
	}
	stored := 0
	for _, m := range got {
		stored += len(m)
	}
	if stored != total {
		t.Errorf("the store holds %d points, want %d", stored, total)
	}
}

func seq(from, to int) []int {
	var out []int
	for n := from; n < to; n++ {
		out = append(out, n)
	}
	return out
}

// TestFullDiskKeepsHistory is the issue "Watch itself, stay bounded": with
// the data on a small file system that fills up, appends go on, a restart
// while it is full starts, and once space is freed every acknowledged point
// is there. Before the fix the first append on the full disk failed, tore a
// page of the write-ahead log, the restart failed ("repair corrupted WAL:
// ... no space left on device") and the next one found the log empty: the
// engine's repair had moved it aside to 00000000.repair and could not copy
// it back.
//
// The two cases reach the full disk by the two ways the store knows of it:
// its free-space check, and the engine failing to write (another program
// filled the disk between two checks).
//
// Each case runs twice: with the engine's 120 samples a chunk, and with
// 30, so that series have full head chunks waiting to be written to the
// chunks_head files while the disk is full. The engine panics when such a
// write fails (handleChunkWriteError); before the store took those writes
// over, closing the store on the full disk killed the process.
func TestFullDiskKeepsHistory(t *testing.T) {
	for _, tc := range []struct {
		name string
		// noticed says whether the store's check sees the disk full
		// before the engine writes to it.
		noticed         bool
		samplesPerChunk int
	}{
		{"free space below the reserve", true, 0},
		{"engine write fails", false, 0},
		{"free space below the reserve, chunks cut", true, 30},
		{"engine write fails, chunks cut", false, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tmpfstest.Mount(t, "8m")
			opts := Options{MinFreeBytes: 1 << 20, samplesPerChunk: tc.samplesPerChunk}
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for n := range 100 {
				mustAppend(t, s, fullDiskBatch(n))
			}
			freeDisk := tmpfstest.Fill(t, dir)
			if tc.noticed {
				s.space.expire()
			} else {
				// The last check said there was room for a while.
				s.space.budget.Store(math.MaxInt64 / 2)
				s.space.deadline.Store(math.MaxInt64)
			}
			// A batch may still fit in the log's last block; those that
			// do are stored, the others held.
			stored := seq(0, 100)
			for n := 100; n < 150; n++ {
				held := s.Stats().Buffered
				if err := s.Append(ctx, fullDiskBatch(n)); err != nil {
					t.Fatalf("Append of batch %d on a full disk: %v", n, err)
				}
				if s.Stats().Buffered == held {
					stored = append(stored, n)
				}
			}
			st := s.Stats()
			if st.Buffered < 40*200 || !st.DiskFull || st.DiskErr == nil || st.Dropped != 0 {
				t.Errorf("on a full disk: stats %+v, want the points buffered, DiskFull and why", st)
			}
			// The held points are lost when the store is closed before
			// there is room, and Close says so.
			lost := fmt.Sprintf("%d points held in memory are lost", st.Buffered)
			if err := s.Close(); err == nil || !strings.Contains(err.Error(), lost) {
				t.Errorf("Close on a full disk: %v, want it to say %q", err, lost)
			}
			if tc.noticed {
				// The engine was never handed a batch it could not write:
				// its log is whole.
				if damage, err := logDamage(filepath.Join(dir, "wal")); damage != "" || err != nil {
					t.Errorf("the write-ahead log is damaged: %s %v", damage, err)
				}
			}

			// A restart on the full disk starts, and takes points.
			s, err = Open(dir, opts)
			if err != nil {
				t.Fatalf("Open on a full disk: %v", err)
			}
			for n := 150; n < 160; n++ {
				if err := s.Append(ctx, fullDiskBatch(n)); err != nil {
					t.Fatalf("Append of batch %d after a restart on a full disk: %v", n, err)
				}
			}
			// Below the reserve the engine is not opened (its log's replay
			// writes chunks, and fails fatally if it cannot): queries say
			// so until there is room.
			if s.Stats().Open {
				t.Error("the engine opened below the reserve")
			}
			if _, err := s.Query(ctx, tsdb.Query{Metric: "m", Start: at(0), End: at(1 << 20)}); !errors.Is(err, tsdb.ErrUnavailable) {
				t.Errorf("Query before the engine is open: %v, want tsdb.ErrUnavailable", err)
			}

			freeDisk()
			await.Until(t, "the held points written once there is room", func() bool {
				st := s.Stats()
				return st.Open && st.Buffered == 0
			})
			if st := s.Stats(); st.DiskFull || st.DiskErr != nil || st.Dropped != 0 {
				t.Errorf("after space was freed: stats %+v", st)
			}
			want := append(stored, seq(150, 160)...)
			checkBatches(t, s, want)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s = openStore(t, dir, opts)
			checkBatches(t, s, want)
		})
	}
}

// TestRestoresFailedRepair opens a directory as a failed repair left it
// (a segment moved aside to NNNNNNNN.repair and an empty one in its place)
// and finds every point: the store puts the segment back before the engine
// reads the log.
func TestRestoresFailedRepair(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for n := range 20 {
		mustAppend(t, s, fullDiskBatch(n))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, "wal", "00000000")
	if err := os.Rename(seg, seg+".repair"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	checkBatches(t, s, seq(0, 20))
	if _, err := os.Stat(seg + ".repair"); !os.IsNotExist(err) {
		t.Errorf("the .repair file is still there: %v", err)
	}
}

// TestOpenNewStoreOnFullDisk opens a store in an empty directory of a full
// file system: Open succeeds with the engine not open, Append holds points,
// and once there is room the engine opens and writes them.
func TestOpenNewStoreOnFullDisk(t *testing.T) {
	dir := tmpfstest.Mount(t, "8m")
	freeDisk := tmpfstest.Fill(t, dir)
	data := filepath.Join(dir, "data")
	s := openStore(t, data, Options{MinFreeBytes: 1 << 20})
	ctx := context.Background()
	for n := range 5 {
		if err := s.Append(ctx, fullDiskBatch(n)); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	if st := s.Stats(); st.Buffered != 1000 || !st.DiskFull {
		t.Errorf("stats %+v, want 1000 points buffered on a full disk", st)
	}
	freeDisk()
	await.Until(t, "the engine open and the held points written", func() bool {
		st := s.Stats()
		return st.Open && st.Buffered == 0
	})
	checkBatches(t, s, seq(0, 5))
	if err := s.PutAnnotation(ctx, tsdb.Annotation{Start: at(0), Description: "ok"}); err != nil {
		t.Errorf("PutAnnotation once open: %v", err)
	}
}

// TestMemoryBoundDropsOldest holds more points than Options.MemoryPoints
// on a full disk: the oldest are dropped and counted, the newest written
// once there is room.
func TestMemoryBoundDropsOldest(t *testing.T) {
	dir := tmpfstest.Mount(t, "8m")
	s := openStore(t, dir, Options{MinFreeBytes: 1 << 20, MemoryPoints: 1000})
	freeDisk := tmpfstest.Fill(t, dir)
	s.space.expire()
	for n := range 8 {
		if err := s.Append(context.Background(), fullDiskBatch(n)); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	if st := s.Stats(); st.Buffered != 1000 || st.Dropped != 600 {
		t.Errorf("stats %+v, want 1000 buffered and 600 dropped", st)
	}
	freeDisk()
	await.Until(t, "the held points written", func() bool { return s.Stats().Buffered == 0 })
	checkBatches(t, s, seq(3, 8))
}
