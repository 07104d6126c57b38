package embedded

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/wlog"
	bolt "go.etcd.io/bbolt"
)

// The engine's write-ahead logs: samples in order, and out of order.
var logDirs = []string{"wal", "wbl"}

// errNoRoom says the engine cannot be opened until space is freed.
var errNoRoom = errors.New("not enough free space")

// engineOptions are the engine's options for opts.
func engineOptions(opts Options) *promtsdb.Options {
	eo := promtsdb.DefaultOptions()
	eo.RetentionDuration = opts.Retention.Milliseconds()
	eo.OutOfOrderTimeWindow = opts.OutOfOrderWindow.Milliseconds()
	// The engine's default of 16384 lock stripes suits a Prometheus with
	// millions of series and costs a monitor of ten thousand checks 4 MiB
	// of heap for nothing; appends are serialised here anyway.
	eo.StripeSize = 1024
	// Isolation (a query never sees part of a commit) costs a ring of
	// append IDs per series, 45 bytes of heap each, 13 MiB at 300,000
	// series (issue 12), and buys our readers nothing. A batch is whatever
	// the writer had queued: results of unrelated checks, which no rule
	// or OpenTSDB query reads as a unit, and which the opentsdb backend
	// stores point by point anyway (OpenTSDB itself has no isolation, so
	// its API promises none). Samples reach the series only at commit,
	// so a query still never sees a batch that is rolled back; a query
	// during a commit may see some of its series with their new point
	// and others not yet, as it would a moment earlier or later. The
	// engine still tracks open reads, so head truncation waits for them.
	// Mimir and Cortex ingesters run the engine this way.
	eo.IsolationDisabled = true
	// The engine's default of 120 samples a chunk is kept: with run times
	// written to 2⁻²⁰ s, 60 takes more heap at steady state
	// (BenchmarkSeriesMemoryTwoHours: a peak of 1,656 bytes a series
	// against 1,346), each cut chunk the head holds costing 40 bytes, and
	// more disk. Options.samplesPerChunk lets the benchmarks and the
	// full-disk tests use other values.
	if opts.samplesPerChunk > 0 {
		eo.SamplesPerChunk = opts.samplesPerChunk
	}
	// Compact 2h blocks into larger ones as Prometheus does (a tenth of the
	// retention, at most 31 days), so a long retention is not thousands of
	// blocks for every query to open.
	eo.MaxBlockDuration = max(eo.MinBlockDuration, min(eo.RetentionDuration/10, (31*24*time.Hour).Milliseconds()))
	// The engine panics when it cannot write a full head chunk to its
	// chunks_head files (handleChunkWriteError), which on a disk that
	// another program filled would end the daemon. A panic can be recovered
	// only on the goroutine that raised it, so every such write is made
	// on one of ours: synchronously (no write queue, whose goroutine
	// would run the failure's callback), and not by the engine's own loop,
	// whose pass that writes head chunks (every BlockReloadInterval) is
	// pushed out of reach and whose compactions (which write out-of-order
	// chunks the same way) are disabled at open. The keeper does both (see
	// Store.maintain). Head chunks are written off the append path either
	// way, so the queue bought appends nothing. One write is left on the
	// append path: an out-of-order sample that fills its series'
	// out-of-order chunk (32 samples) has that chunk written in the
	// commit, with the series locked and not unlocked on a panic, so that
	// one is not recovered (a crash, as before, rather than a store that
	// hangs); it needs out-of-order samples and a disk filled past the
	// reserve since the last check of free space, a second before.
	eo.HeadChunksWriteQueueSize = 0
	eo.BlockReloadInterval = 100 * 365 * 24 * time.Hour
	// The store holds the directory's lock itself from Open to Close, also
	// while the engine is closed for want of space (see Store.lock).
	eo.NoLockfile = true
	return eo
}

// openEngine opens the engine and the annotation database when the disk
// has the reserve free, and unless a damaged write-ahead log would make the
// engine repair it on a disk without room for that.
//
// The reserve, because the log's replay writes the head chunks it fills,
// on goroutines of the engine's own, where a write that fails for want of
// space is a panic that no caller can recover (see engineOptions). The
// keeper writes full head chunks every second, so replay has a few
// seconds' worth to write, which the reserve holds.
//
// The repair, because the engine's repair renames the damaged segment to
// NNNNNNNN.repair, starts the segment anew and copies the good records
// back, and when a copy fails for want of space it leaves the segment
// empty, so the next start reads an empty log and every point in it is
// lost.
//
// Errors wrapping errNoRoom say to try again once space is freed.
func (s *Store) openEngine() (*promtsdb.DB, error) {
	for _, d := range logDirs {
		if err := restoreFailedRepair(filepath.Join(s.dir, d)); err != nil {
			return nil, err
		}
	}
	free, err := freeBytes(s.dir)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: free space: %w", s.dir, err)
	}
	if free < s.reserve {
		return nil, fmt.Errorf("embedded tsdb %s: %d bytes free, below the reserve of %d: %w", s.dir, free, s.reserve, errNoRoom)
	}
	seg, err := largestSegment(s.dir)
	if err != nil {
		return nil, err
	}
	if free < s.reserve+seg {
		for _, d := range logDirs {
			damage, err := logDamage(filepath.Join(s.dir, d))
			if err != nil {
				return nil, err
			}
			if damage != "" {
				return nil, fmt.Errorf("embedded tsdb %s: %s needs repair (%s), which needs %d bytes free plus the reserve %d, and %d are: %w",
					s.dir, d, damage, seg, s.reserve, free, errNoRoom)
			}
		}
	}
	db, err := promtsdb.Open(s.dir, s.engineLog, nil, engineOptions(s.opts), nil)
	if err != nil {
		err = fmt.Errorf("embedded tsdb %s: open: %w", s.dir, err)
		if errors.Is(err, syscall.ENOSPC) {
			// Should the check above have been wrong, put a half-done
			// repair back before anything else is written.
			for _, d := range logDirs {
				err = errors.Join(err, restoreFailedRepair(filepath.Join(s.dir, d)))
			}
			return nil, fmt.Errorf("%w: %w", err, errNoRoom)
		}
		return nil, err
	}
	db.DisableCompactions() // the keeper compacts (see engineOptions)
	return db, nil
}

// errPanicked marks the errors that recovered turned from a panic.
var errPanicked = errors.New("engine panicked")

// recovered runs f, which calls the engine, and returns the error the
// engine raised as a panic, as it does when it cannot write a head chunk
// (see engineOptions). A runtime error is recovered too, with its stack:
// after a failed write the engine's chunk writer is left half set up, and
// its next write dereferences nil; should it be a bug of the engine's
// instead, the store closes and reopens the engine all the same, and the
// node goes on checking and paging rather than ending.
func recovered(f func() error) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		var stack string
		if _, ok := r.(runtime.Error); ok {
			stack = "\n" + string(debug.Stack())
		}
		if e, ok := r.(error); ok {
			err = fmt.Errorf("%w: %w%s", errPanicked, e, stack)
		} else {
			err = fmt.Errorf("%w: %v%s", errPanicked, r, stack)
		}
	}()
	return f()
}

// restoreFailedRepair undoes a repair of the log in dir that the engine
// began and could not finish (see openEngine): when a segment NNNNNNNN.repair
// exists and no later segment holds anything, it is the whole segment as it
// was, and goes back in place of the partial copy. The engine then repairs
// it again, with room to, and keeps every record before the damage. When a
// later segment holds records, the store was started since and wrote them;
// putting the old segment back would make the repair drop them, so the
// leftover is left alone and logged.
func restoreFailedRepair(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("embedded tsdb: read %s: %w", dir, err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".repair")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		later, err := laterSegmentsHold(ents, n)
		if err != nil {
			return fmt.Errorf("embedded tsdb: %s: %w", dir, err)
		}
		if later {
			continue
		}
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("embedded tsdb: restore %s after a failed repair: %w", filepath.Join(dir, e.Name()), err)
		}
	}
	return nil
}

func laterSegmentsHold(ents []os.DirEntry, n int) (bool, error) {
	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil || k <= n {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return false, err
		}
		if fi.Size() > 0 {
			return true, nil
		}
	}
	return false, nil
}

// largestSegment is the size of the largest segment of the write-ahead
// logs: what a repair needs to rewrite.
func largestSegment(dir string) (uint64, error) {
	var n uint64
	for _, d := range logDirs {
		ents, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return 0, fmt.Errorf("embedded tsdb %s: %w", dir, err)
		}
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				return 0, fmt.Errorf("embedded tsdb %s: %w", dir, err)
			}
			n = max(n, uint64(fi.Size()))
		}
	}
	return n, nil
}

// logDamage reads every segment of the log in dir as the engine's replay
// does, one at a time, and describes the damage it finds, "" if none.
func logDamage(dir string) (string, error) {
	first, last, err := wlog.Segments(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", fmt.Errorf("embedded tsdb: list %s: %w", dir, err)
	}
	for i := first; i >= 0 && i <= last; i++ {
		seg, err := wlog.OpenReadSegment(wlog.SegmentName(dir, i))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return "", fmt.Errorf("embedded tsdb: %w", err)
		}
		r := wlog.NewReader(wlog.NewSegmentBufReader(seg))
		for r.Next() {
		}
		rerr := r.Err()
		seg.Close()
		if rerr != nil {
			return rerr.Error(), nil
		}
	}
	return "", nil
}

// run is the store's keeper: it closes an engine that failed to write,
// opens it when there is room, and writes the points held in memory, on
// every kick (an Append that held points or found some held) and every
// spaceCheckInterval, until ctx ends.
func (s *Store) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(spaceCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
		}
		s.tend(ctx)
	}
}

// tend does one round of the keeper's work.
func (s *Store) tend(ctx context.Context) {
	if s.failed.Load() {
		s.closeFailedEngine()
	}
	if !s.engineOpen() {
		s.tryOpen()
	}
	if s.buf.len() > 0 {
		s.space.expire()
		s.drain(ctx)
	}
	s.maintain(ctx)
}

// chunkRoom is the free space below which the keeper writes no head
// chunks: a second's worth at 100,000 checks is tens of kilobytes.
const chunkRoom = 1 << 20

// compactInterval is how often the keeper asks the engine to compact when
// its head is not yet due: the engine's own default, for the blocks that
// merge into larger ones and those past the retention.
const compactInterval = time.Minute

// maintain does the engine's background writes on the keeper's goroutine,
// where a failure the engine raises as a panic is recovered (see
// engineOptions): it writes the head chunks that are full to the
// chunks_head files, every round, and compacts when the head spans one
// and a half blocks, as the engine would, or compactInterval has passed.
// A failed chunk write leaves the engine's chunk files in a state it
// cannot go on from, so the engine is treated as failed: closed and
// opened again once the reserve is free, which replays the log, where
// every sample of the head is.
func (s *Store) maintain(ctx context.Context) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Close waits for the keeper, and a compaction under way is not cut
	// short: none is begun once Close has asked the keeper to stop.
	if s.db == nil || s.closed || s.failed.Load() || ctx.Err() != nil {
		return
	}
	// Below the reserve too, which is there for the engine's own writes
	// (a full chunk left in memory is written by the engine's Close, where
	// a failure leaves its files open: closeEngine); but not on a disk
	// with next to nothing free, where the write would fail and the engine
	// would have to be closed so.
	if free, err := freeBytes(s.dir); err != nil || free >= chunkRoom {
		if err := recovered(func() error { s.db.ForceHeadMMap(); return nil }); err != nil {
			s.engineFailed(fmt.Errorf("write head chunks: %w", err))
			return
		}
	}
	h := s.db.Head()
	due := h.MinTime() != math.MaxInt64 && h.MaxTime()-h.MinTime() > promtsdb.DefaultBlockDuration*3/2
	if (!due || s.compactFailed) && time.Since(s.compacted) < compactInterval {
		return
	}
	s.compacted = time.Now()
	err := recovered(func() error { return s.db.Compact(ctx) })
	s.compactFailed = err != nil
	switch {
	case errors.Is(err, errPanicked):
		s.engineFailed(fmt.Errorf("compact: %w", err))
	case err == nil || ctx.Err() != nil:
	default:
		// A block it could not write (for want of space) leaves the
		// engine as it was: tried again in a minute, not at every round.
		s.log.Error("embedded tsdb: compaction failed; trying again in a minute", "dir", s.dir, "err", err)
	}
}

func (s *Store) engineOpen() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db != nil
}

// tryOpen opens the engine if it can, installing it for the calls to use.
func (s *Store) tryOpen() {
	db, ann, err := s.openAll()
	if err != nil {
		s.notOpen.Store(&err)
		if !errors.Is(err, errNoRoom) {
			s.log.Error("embedded tsdb: cannot open the engine; holding points in memory and retrying", "dir", s.dir, "err", err)
		}
		return
	}
	s.mu.Lock()
	s.db = db
	if ann != nil {
		s.ann = ann
	}
	s.mu.Unlock()
	s.notOpen.Store(nil)
	s.log.Info("embedded tsdb: engine open", "dir", s.dir, "held_points", s.buf.len())
}

// openAll opens the engine and, unless it is open already, the annotation
// database.
func (s *Store) openAll() (*promtsdb.DB, *bolt.DB, error) {
	db, err := s.openEngine()
	if err != nil {
		return nil, nil, err
	}
	s.mu.RLock()
	have := s.ann != nil
	s.mu.RUnlock()
	if have {
		return db, nil, nil
	}
	ann, err := openAnnotations(s.dir)
	if err != nil {
		err = errors.Join(err, closeEngine(db))
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: %w", err, errNoRoom)
		}
		return nil, nil, err
	}
	return db, ann, nil
}

// closeFailedEngine closes an engine whose write failed (see engineFailed).
func (s *Store) closeFailedEngine() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		s.failed.Store(false)
		return
	}
	if err := closeEngine(s.db); err != nil {
		s.log.Warn("embedded tsdb: close after a write error", "dir", s.dir, "err", err)
	}
	s.db = nil
	s.forgetSeries()
	s.failed.Store(false)
}

// closeEngine closes db. When the engine panics in Close, as it does when
// it cannot write its last full head chunks (see engineOptions; the
// keeper leaves at most a second's worth), the rest of its Close does not
// run: its chunk files stay mapped and its log's files open, and its log's
// goroutine runs, until the process ends, so the space of those the
// engine opened again later deletes is not given back until then. Their
// records are whole, so that engine reads them; the error says so.
func closeEngine(db *promtsdb.DB) error {
	err := recovered(db.Close)
	if errors.Is(err, errPanicked) {
		return fmt.Errorf("%w; its write-ahead log's files stay open until the process ends", err)
	}
	return err
}

// engineFailed takes note that the engine failed to write a batch, for want
// of space or another I/O error. The keeper then closes it and opens it
// again once there is room, rather than letting it go on: a commit that
// failed leaves its series in the engine's memory without their record in
// the log (the engine logs a series once, when it creates it), so every
// later sample of such a series would be dropped when the log is replayed,
// and a log page half written stays torn on disk if the process stops
// before the engine gets to write the rest. Reopening replays the log,
// repairs a torn tail (those records are of the failed commit, which this
// store holds in memory and writes again), and starts from what is on disk.
func (s *Store) engineFailed(err error) {
	if s.failed.CompareAndSwap(false, true) {
		s.log.Error("embedded tsdb: write failed; holding points in memory and reopening the engine when there is room", "dir", s.dir, "err", err)
	}
	s.writeErr.Store(&err)
	s.space.expire()
	s.poke()
}

// poke wakes the keeper without waiting.
func (s *Store) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
