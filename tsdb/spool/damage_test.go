package spool

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/tsdb"
)

func createTemp(t *testing.T, b []byte) (*os.File, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err == nil {
		t.Cleanup(func() { f.Close() })
	}
	return f, err
}

func TestDamagedTailIsCutOff(t *testing.T) {
	const batches, per = 5, 10
	for _, tc := range []struct {
		name string
		// damage changes the segment, whose records end at ends.
		damage func(t *testing.T, path string, ends []int64)
		// kept is how many batches survive.
		kept int
	}{
		// kill -9 or a crash in the middle of the last header.
		{"cut in header", func(t *testing.T, path string, ends []int64) {
			truncate(t, path, ends[batches-2]+5)
		}, batches - 1},
		// ... or in the middle of its payload.
		{"cut in payload", func(t *testing.T, path string, ends []int64) {
			truncate(t, path, ends[batches-1]-3)
		}, batches - 1},
		// A bit flipped in the last record: the checksum finds it.
		{"flipped byte", func(t *testing.T, path string, ends []int64) {
			b := readFile(t, path)
			b[ends[batches-1]-10] ^= 0x10
			writeFile(t, path, b)
		}, batches - 1},
		// A flipped length: the record runs past the end of the file.
		{"bad length", func(t *testing.T, path string, ends []int64) {
			b := readFile(t, path)
			b[ends[batches-2]+1] ^= 0x01
			writeFile(t, path, b)
		}, batches - 1},
		// Zeros after the last record, as a file system may leave
		// after a power loss: all records survive.
		{"zeros after", func(t *testing.T, path string, ends []int64) {
			writeFile(t, path, append(readFile(t, path), make([]byte, 4096)...))
		}, batches},
		// A half-written header after the last record.
		{"half a header after", func(t *testing.T, path string, ends []int64) {
			writeFile(t, path, append(readFile(t, path), 1, 2, 3))
		}, batches},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			down := &fakeStore{down: true}
			s, err := Open(dir, down, fastRetry(Options{}))
			if err != nil {
				t.Fatal(err)
			}
			var ends []int64
			for i := range batches {
				mustAppend(t, s, pts(i*per, per))
				ends = append(ends, s.Stats().Bytes)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("%d segment files, want 1", len(files))
			}
			tc.damage(t, files[0], ends)

			sink := &logSink{}
			down.setDown(false)
			s = openSpool(t, dir, down, fastRetry(Options{Logger: slog.New(sink)}))
			if p := s.Stats().Points; p != int64(tc.kept*per) {
				t.Fatalf("%d points after reopening, want %d", p, tc.kept*per)
			}
			if size := fileSize(t, files[0]); size != ends[tc.kept-1] {
				t.Errorf("segment is %d bytes after reopening, want %d", size, ends[tc.kept-1])
			}
			if _, n := sink.sum(slog.LevelWarn, "damaged record", "bytes"); n != 1 {
				t.Errorf("%d warnings about the damage, want 1", n)
			}
			// A new Append after the cut is read back too: nothing
			// is lost behind the damage.
			mustAppend(t, s, pts(1000, per))
			startRun(t, s)
			waitDelivered(t, s, down, (tc.kept+1)*per)
			checkValues(t, down.values(), append(seq(0, tc.kept*per), seq(1000, 1000+per)...))
		})
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedCursorReplaysRatherThanSkips(t *testing.T) {
	dir := t.TempDir()
	down := &fakeStore{down: true}
	opts := fastRetry(Options{ReplayBatch: 10})
	s, err := Open(dir, down, opts)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, pts(0, 10))
	mustAppend(t, s, pts(10, 10))
	// Deliver the first batch only, so the cursor is past it.
	down.setJudge(func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if ps[0].Value == 0 {
			return ps, nil
		}
		return nil, errDown
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	await.Until(t, "the first batch", func() bool { return s.Stats().Replayed == 10 })
	cancel()
	<-done
	s.Close()

	cursor := filepath.Join(dir, "cursor")
	b := readFile(t, cursor)
	b[9] ^= 0xff // the offset's high bytes: a cursor far past the end
	writeFile(t, cursor, b)

	down.setJudge(nil)
	down.setDown(false)
	s = openSpool(t, dir, down, opts)
	startRun(t, s)
	waitDelivered(t, s, down, 30)
	// The first batch twice, rather than the second never.
	checkValues(t, down.values(), append(seq(0, 10), seq(0, 20)...))
}
