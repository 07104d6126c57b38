package spool

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/dmonitor/dmonitor/internal/tmpfstest"
	"github.com/dmonitor/dmonitor/tsdb"
)

// segBytes is the size of the segment files in dir.
func segBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, f := range segFiles(t, dir) {
		n += fileSize(t, f)
	}
	return n
}

func TestFullDiskHoldsInMemoryThenWritesInOrder(t *testing.T) {
	mnt := tmpfstest.Mount(t, "1m")
	dir := filepath.Join(mnt, "spool")
	down := &fakeStore{down: true}
	sink := &logSink{}
	opts := fastRetry(Options{SegmentBytes: 64 << 10, Logger: slog.New(sink)})
	s, err := Open(dir, down, opts)
	if err != nil {
		t.Fatal(err)
	}
	const per = 50
	n := 0
	appendBatch := func() {
		t.Helper()
		mustAppend(t, s, pts(n, per))
		n += per
	}
	for range 20 {
		appendBatch()
	}
	free := tmpfstest.Fill(t, mnt)

	// Appends go on without an error while the disk is full, and an
	// annotation among them keeps its place.
	for i := range 200 {
		appendBatch()
		if i == 100 {
			mustAnnotate(t, s, ann(n))
		}
	}
	st := s.Stats()
	if st.Buffered == 0 || st.BufferedAnnotations != 1 || !st.DiskFailing || st.DiskErrors == 0 || !errors.Is(st.LastDiskError, syscall.ENOSPC) {
		t.Fatalf("stats on a full disk: %+v, want points in memory and the disk failing with ENOSPC", st)
	}
	if st.Points+st.Buffered != int64(n) || st.Dropped != 0 {
		t.Fatalf("%d points on disk + %d in memory, %d dropped; want %d and none dropped", st.Points, st.Buffered, st.Dropped, n)
	}
	// A write cut short by the full disk was cut off: the files hold
	// whole records only.
	if b := segBytes(t, dir); b != st.Bytes {
		t.Fatalf("segment files hold %d bytes, the spool's records %d", b, st.Bytes)
	}

	// Space again: the next Append moves memory to disk, in order.
	free()
	appendBatch()
	st = s.Stats()
	if st.Buffered != 0 || st.BufferedAnnotations != 0 || st.DiskFailing || st.Points != int64(n) || st.Annotations != 1 {
		t.Fatalf("stats after the disk has space again: %+v, want all %d points on disk", st, n)
	}
	if _, k := sink.sum(slog.LevelError, "cannot write to disk", ""); k != 1 {
		t.Errorf("%d error logs about the full disk, want 1", k)
	}
	if _, k := sink.sum(slog.LevelInfo, "writing to disk again", ""); k != 1 {
		t.Errorf("%d logs about the disk writing again, want 1", k)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The next Open finds every record whole.
	sink = &logSink{}
	opts.Logger = slog.New(sink)
	s = openSpool(t, dir, down, opts)
	if st := s.Stats(); st.Points != int64(n) || st.Annotations != 1 {
		t.Fatalf("after reopening: %+v, want %d points and 1 annotation", st, n)
	}
	if _, k := sink.sum(slog.LevelWarn, "damaged record", ""); k != 0 {
		t.Fatalf("reopening after a full disk cut off %d damaged records", k)
	}
	down.setDown(false)
	startRun(t, s)
	waitDelivered(t, s, down, n)
	checkValues(t, down.values(), seq(0, n))
	_, at := down.annotations()
	checkValues(t, at, []int{(20 + 101) * per})
}

func TestOpenOnFullDiskNamesWhatItCannotCreate(t *testing.T) {
	// A tmpfs of two inodes: its root and the spool's directory. The
	// lock file cannot be created.
	mnt := tmpfstest.Mount(t, "1m,nr_inodes=2")
	dir := filepath.Join(mnt, "spool")
	s, err := Open(dir, &fakeStore{}, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded without space for its lock file")
	}
	lock := filepath.Join(dir, "lock")
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), lock) {
		t.Fatalf("Open: %v, want ENOSPC naming %s", err, lock)
	}
}

func TestFullDiskDeliversFromMemory(t *testing.T) {
	mnt := tmpfstest.Mount(t, "1m")
	dir := filepath.Join(mnt, "spool")
	down := &fakeStore{down: true}
	opts := fastRetry(Options{ReplayBatch: 300})
	// The spool's directory exists, then the disk fills up: Open must
	// still work.
	s, err := Open(dir, down, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tmpfstest.Fill(t, mnt)
	s = openSpool(t, dir, down, opts)

	const batches, per = 100, 40
	for i := range batches {
		mustAppend(t, s, pts(i*per, per))
		if i == 50 {
			mustAnnotate(t, s, ann(1))
		}
	}
	if st := s.Stats(); st.Buffered != batches*per || st.Points != 0 {
		t.Fatalf("stats on a full disk: %+v, want all %d points in memory", st, batches*per)
	}
	// The store is back, the disk still full: Run delivers from memory.
	down.setDown(false)
	startRun(t, s)
	waitDelivered(t, s, down, batches*per)
	checkValues(t, down.values(), seq(0, batches*per))
	_, at := down.annotations()
	checkValues(t, at, []int{51 * per})
	if st := s.Stats(); st.Replayed != batches*per || st.AnnotationsReplayed != 1 || st.Dropped != 0 {
		t.Errorf("stats after delivering from memory: %+v", st)
	}
	// Empty again: Appends pass straight through.
	mustAppend(t, s, pts(batches*per, per))
	checkValues(t, down.values(), seq(0, (batches+1)*per))
}

func TestFullDiskMemoryBoundDropsOldest(t *testing.T) {
	mnt := tmpfstest.Mount(t, "1m")
	dir := filepath.Join(mnt, "spool")
	down := &fakeStore{down: true}
	sink := &logSink{}
	const memBytes = 16 << 10
	s := openSpool(t, dir, down, fastRetry(Options{MemoryBytes: memBytes, Logger: slog.New(sink)}))
	free := tmpfstest.Fill(t, mnt)

	const batches, per = 200, 50
	for i := range batches {
		mustAppend(t, s, pts(i*per, per))
	}
	st := s.Stats()
	if st.DroppedMemory == 0 || st.Dropped != st.DroppedMemory {
		t.Fatalf("stats past the memory bound: %+v, want points dropped from memory", st)
	}
	if st.Buffered+int64(st.Dropped) != batches*per {
		t.Fatalf("%d in memory + %d dropped != %d appended", st.Buffered, st.Dropped, batches*per)
	}
	if st.BufferedBytes > memBytes {
		t.Fatalf("memory holds %d bytes, over its bound of %d", st.BufferedBytes, memBytes)
	}
	if _, k := sink.sum(slog.LevelError, "memory full", ""); k != 1 {
		t.Errorf("%d error logs about dropping from memory, want 1 for the episode", k)
	}

	free()
	down.setDown(false)
	startRun(t, s)
	waitDelivered(t, s, down, batches*per-int(st.Dropped))
	// The oldest went: what arrives is everything after them, in order.
	checkValues(t, down.values(), seq(int(st.Dropped), batches*per))
	if logged, _ := sink.sum(slog.LevelError, "writing to disk again", "points"); logged != int64(st.Dropped) {
		t.Errorf("the end of the episode reports %d points dropped, Stats %d", logged, st.Dropped)
	}
}

func TestCloseOnFullDisk(t *testing.T) {
	for _, tc := range []struct {
		name  string
		space bool // the disk has space again at Close
	}{
		// Memory goes to disk at Close, for the next Open.
		{"space again", true},
		// It cannot: dropped, counted and logged.
		{"still full", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := tmpfstest.Mount(t, "1m")
			dir := filepath.Join(mnt, "spool")
			down := &fakeStore{down: true}
			sink := &logSink{}
			s, err := Open(dir, down, Options{Logger: slog.New(sink)})
			if err != nil {
				t.Fatal(err)
			}
			free := tmpfstest.Fill(t, mnt)
			for i := range 10 {
				mustAppend(t, s, pts(i*10, 10))
			}
			if b := s.Stats().Buffered; b != 100 {
				t.Fatalf("%d points in memory, want 100", b)
			}
			if tc.space {
				free()
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if !tc.space {
				if st.Dropped != 100 || st.DroppedMemory != 100 || st.Buffered != 0 {
					t.Fatalf("stats after Close on a full disk: %+v, want 100 dropped from memory", st)
				}
				if logged, _ := sink.sum(slog.LevelError, "closing with entries in memory", "points"); logged != 100 {
					t.Errorf("Close logged %d dropped points, want 100", logged)
				}
				return
			}
			if st.Dropped != 0 {
				t.Fatalf("%d points dropped at Close with space on disk", st.Dropped)
			}
			down.setDown(false)
			s = openSpool(t, dir, down, fastRetry(Options{}))
			startRun(t, s)
			waitDelivered(t, s, down, 100)
			checkValues(t, down.values(), seq(0, 100))
		})
	}
}

func TestConcurrentAppendsWhileTheDiskFillsAndFrees(t *testing.T) {
	mnt := tmpfstest.Mount(t, "1m")
	down := &fakeStore{}
	// The downstream fails every third call, so passing through,
	// spooling to disk or memory, replaying from either and moving
	// memory to disk all interleave; while the disk is full it fails
	// every call, so the spool must hold what comes.
	var calls int
	var full bool
	down.judge = func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if calls++; full || calls%3 == 0 {
			return nil, errDown
		}
		return ps, nil
	}
	s := openSpool(t, filepath.Join(mnt, "spool"), down, fastRetry(Options{SegmentBytes: 8 << 10, ReplayBatch: 64}))
	startRun(t, s)
	const writers, phases, batches, per = 4, 3, 100, 5
	// Writer w owns values w*1e6 + k, in order, and appends them in
	// three phases: the disk has space, is full, has space again.
	next := make([]chan struct{}, phases)
	for i := range next {
		next[i] = make(chan struct{})
	}
	var phase sync.WaitGroup
	phase.Add(writers)
	for w := range writers {
		go func() {
			k := 0
			for p := range phases {
				<-next[p]
				for range batches {
					if err := s.Append(context.Background(), pts(w*1_000_000+k*per, per)); err != nil {
						t.Errorf("Append: %v", err)
					}
					k++
				}
				phase.Done()
			}
		}()
	}
	close(next[0])
	phase.Wait()

	free := tmpfstest.Fill(t, mnt)
	down.mu.Lock()
	full = true
	down.mu.Unlock()
	phase.Add(writers)
	close(next[1])
	phase.Wait()
	if st := s.Stats(); st.DiskErrors == 0 || st.Buffered == 0 {
		t.Fatalf("stats with the disk full: %+v, want points in memory", st)
	}

	free()
	down.mu.Lock()
	full = false
	down.mu.Unlock()
	phase.Add(writers)
	close(next[2])
	phase.Wait()

	waitDelivered(t, s, down, writers*phases*batches*per)
	byWriter := make([][]int, writers)
	for _, v := range down.values() {
		byWriter[v/1_000_000] = append(byWriter[v/1_000_000], v%1_000_000)
	}
	for _, got := range byWriter {
		// Each writer's points arrive in its order, each once.
		checkValues(t, got, seq(0, phases*batches*per))
	}
	if st := s.Stats(); st.Dropped != 0 {
		t.Errorf("%d points dropped", st.Dropped)
	}
}
