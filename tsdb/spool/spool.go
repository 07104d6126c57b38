// Package spool keeps datapoints on local disk while the time-series store
// cannot take them, and replays them, in order, once it can.
//
// A Spool sits between a writer and its store (the downstream). While the
// spool is empty, Append passes points straight through. When the
// downstream fails with an error wrapping tsdb.ErrUnavailable, the points
// are written to the spool instead and Append returns nil, so checks and
// alerting go on through an outage. From then on every Append goes to the
// spool, behind what is already there, until Run has replayed all of it:
// points reach the downstream in the order they were appended (a point
// appended after another Append returned is delivered after that one's).
//
// Durability: Append returns nil for spooled points after they are written
// to a segment file with write(2), so they survive the process being killed
// (kill -9) and are replayed after the next Open. Files are not fsynced
// unless Options.Sync is set, so without it a kernel crash or power loss
// can lose the last writes; a record damaged that way is detected by its
// checksum and cut off, never misread.
//
// Delivery is at least once. The replay position is saved after each
// delivered batch, so a restart does not deliver again what was delivered;
// a crash between a delivery and the saving of its position delivers that
// one batch twice. OpenTSDB and the embedded store keep one value per
// series and timestamp, so a point delivered twice is stored once.
//
// The spool is bounded by Options.MaxBytes. When a write would pass it, the
// oldest segment files are deleted; the points in them that were not yet
// delivered are counted in Stats.Dropped and logged at error level.
package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Appender is the downstream a Spool writes to: a tsdb.Store, or anything
// that appends points with the same error contract (tsdb.ErrUnavailable
// for a failure worth retrying, anything else blaming the data).
type Appender interface {
	Append(ctx context.Context, points []tsdb.Point) error
}

// Partial is implemented by a downstream error that reports a batch as
// partly stored: Unstored returns the points that were not. Such an error
// wrapping tsdb.ErrUnavailable makes the spool keep only the unstored
// points; one that does not wrap it says the unstored points were refused
// for their content. The spool finds it with errors.As, so it may be
// wrapped.
type Partial interface {
	error
	Unstored() []tsdb.Point
}

// ErrClosed is returned by Append and Run after Close.
var ErrClosed = errors.New("spool closed")

// Default option values.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSegmentBytes = 8 << 20
	DefaultReplayBatch  = 5000
	DefaultRetryMin     = 500 * time.Millisecond
	DefaultRetryMax     = 30 * time.Second
	DefaultTimeout      = 30 * time.Second
)

// Options configure a Spool. Zero values mean the defaults.
type Options struct {
	// MaxBytes bounds the size of the spool's files (default 256 MiB).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment file is started
	// (default 8 MiB, at most MaxBytes/4). Overflow deletes whole
	// segments, so this is also how much is dropped at once.
	SegmentBytes int64
	// ReplayBatch is the most points Run sends downstream in one call
	// (default 5000).
	ReplayBatch int
	// RetryMin and RetryMax bound the wait between replay attempts while
	// the downstream is unavailable: it starts at RetryMin and doubles up
	// to RetryMax (defaults 500ms and 30s).
	RetryMin, RetryMax time.Duration
	// Timeout bounds one replay call downstream (default 30s).
	Timeout time.Duration
	// Sync makes every spool write and replay position fsynced before it
	// counts as done, so spooled points also survive a power loss. It
	// costs a disk flush per Append while spooling.
	Sync bool
	// Logger receives overflow, refusal and outage reports; nil discards
	// them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	o.SegmentBytes = max(min(o.SegmentBytes, o.MaxBytes/4), 1)
	if o.ReplayBatch <= 0 {
		o.ReplayBatch = DefaultReplayBatch
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stats are a Spool's gauges and counters. Counters count since Open.
type Stats struct {
	Points    int64  // points in the spool, not yet delivered
	Bytes     int64  // size of the spool's segment files
	Spooled   uint64 // points written to the spool
	Replayed  uint64 // spooled points the downstream took
	Dropped   uint64 // points dropped on overflow, never delivered
	Rejected  uint64 // spooled points the downstream refused as invalid
	Corrupted uint64 // points lost to a damaged record found in replay
}

// segment is one segment file.
type segment struct {
	seq    uint64
	size   int64 // bytes of whole records
	points int64 // points in those records
}

// inflight is what Run is delivering: records of segment seq past the
// cursor. pending counts their points not yet committed. orphaned is set
// when overflow deleted the segment underneath: the cursor has moved on
// and the batch's fate only changes counters.
type inflight struct {
	seq      uint64
	pending  int64
	orphaned bool
}

// Spool is a bounded, durable FIFO of points in front of a downstream
// Appender. It is safe for concurrent use; Run replays while Appends go on.
type Spool struct {
	dir  string
	down Appender
	opts Options
	log  *slog.Logger
	lock *os.File
	wake chan struct{} // a token: there is something new to replay
	encs sync.Pool     // *encoder

	// closeMu is held for reading by Append and for writing by Close, so
	// the files outlive every Append that passed the closed check.
	closeMu sync.RWMutex

	mu        sync.Mutex
	closed    bool
	segs      []*segment // oldest first, never empty; the last is the head
	head      *os.File   // the last segment, opened for appending
	bytes     int64      // sum of segs' sizes
	cur       position   // first byte not delivered, always in segs[0]
	curPoints int64      // points of segs[0] before cur
	curFile   *os.File
	inflight  *inflight
	stats     Stats
	runCancel context.CancelFunc // non-nil while Run runs
	runDone   chan struct{}
}

var _ Appender = (*Spool)(nil)

func segName(seq uint64) string { return fmt.Sprintf("%020d.seg", seq) }

func (s *Spool) segPath(seq uint64) string { return filepath.Join(s.dir, segName(seq)) }

// Open opens the spool in dir, creating it if needed, in front of down.
// Points spooled before are kept and replayed by Run. A damaged record
// (the tail of a write cut short) is cut off with everything after it in
// its segment, and logged. The directory is locked against a second Open,
// in this or another process, until Close.
func Open(dir string, down Appender, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	s := &Spool{dir: dir, down: down, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
	s.encs.New = func() any { return newEncoder() }
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s: in use by another spool", dir)
		}
		return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
	}
	s.lock = lock
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	return s, nil
}

// load reads the cursor and the segments, cuts off damaged records and
// opens the head for appending.
func (s *Spool) load() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil || segName(seq) != e.Name() {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)

	curPath := filepath.Join(s.dir, "cursor")
	s.curFile, err = os.OpenFile(curPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(s.curFile, cursorSize+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", curPath, err)
	}
	cur, curOK := decodeCursor(raw)
	if !curOK && len(raw) > 0 {
		s.log.Warn("spool cursor damaged; replaying from the oldest segment, which may deliver points twice", "file", curPath)
	}

	for _, seq := range seqs {
		if curOK && seq < cur.seq {
			// Delivered in full: the process died between saving the
			// cursor past this segment and deleting it.
			if err := os.Remove(s.segPath(seq)); err != nil {
				return err
			}
			continue
		}
		seg, err := s.scan(seq)
		if err != nil {
			return err
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
	}

	switch {
	case len(s.segs) == 0:
		seq := uint64(1)
		if curOK {
			seq = max(seq, cur.seq)
		}
		s.segs = []*segment{{seq: seq}}
		s.cur = position{seq: seq}
	case curOK && s.segs[0].seq == cur.seq:
		s.cur = cur
		if err := s.placeCursor(); err != nil {
			return err
		}
	default:
		if curOK {
			s.log.Warn("spool cursor names a missing segment; replaying from the oldest", "cursor_segment", cur.seq, "oldest", s.segs[0].seq)
		}
		s.cur = position{seq: s.segs[0].seq}
	}

	head := s.segs[len(s.segs)-1]
	s.head, err = os.OpenFile(s.segPath(head.seq), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if err := s.saveCursorLocked(); err != nil {
		return err
	}
	for len(s.segs) > 1 && s.cur.off == s.segs[0].size {
		s.advanceLocked()
	}
	if p := s.pendingLocked(); p > 0 {
		s.log.Info("spool holds points to replay", "dir", s.dir, "points", p, "bytes", s.bytes)
	}
	return nil
}

// scan reads segment seq, cuts off a damaged tail and counts its points.
func (s *Spool) scan(seq uint64) (*segment, error) {
	path := s.segPath(seq)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	seg := &segment{seq: seq}
	r := newRecordReader(f, 0, fi.Size(), nil)
	for {
		n, _, err := r.next()
		if err == nil {
			seg.points += int64(n)
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if !errors.Is(err, errDamaged) {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		// The tail of a write cut short by a crash, or damage: either
		// way nothing from here on can be trusted to be points.
		s.log.Warn("spool segment ends in a damaged record; cutting it off", "file", path, "bytes", fi.Size()-r.off, "err", err)
		if err := os.Truncate(path, r.off); err != nil {
			return nil, fmt.Errorf("truncate %s: %w", path, err)
		}
		break
	}
	seg.size = r.off
	return seg, nil
}

// placeCursor moves s.cur, read from the cursor file, onto the record
// boundary at or before it in segs[0] and counts the points before it. A
// cursor past the end (its segment was emptied, or cut off at open) means
// everything there was delivered.
func (s *Spool) placeCursor() error {
	seg := s.segs[0]
	if s.cur.off >= seg.size {
		s.cur.off, s.curPoints = seg.size, seg.points
		return nil
	}
	path := s.segPath(seg.seq)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := newRecordReader(f, 0, seg.size, nil)
	var points int64
	for r.off < s.cur.off {
		at := r.off
		n, _, err := r.next()
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if r.off > s.cur.off {
			s.log.Warn("spool cursor is not at a record boundary; replaying from the one before", "file", path, "offset", s.cur.off, "boundary", at)
			s.cur.off = at
			break
		}
		points += int64(n)
	}
	s.curPoints = points
	return nil
}

// saveCursorLocked writes s.cur to the cursor file.
func (s *Spool) saveCursorLocked() error {
	b := encodeCursor(s.cur)
	if _, err := s.curFile.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("save cursor %s: %w", s.curFile.Name(), err)
	}
	if s.opts.Sync {
		if err := s.curFile.Sync(); err != nil {
			return fmt.Errorf("save cursor %s: %w", s.curFile.Name(), err)
		}
	}
	return nil
}

// advanceLocked moves the cursor from the fully delivered segs[0] to the
// start of segs[1] and deletes segs[0]. The cursor is saved first, so a
// crash in between leaves a segment that the next Open deletes rather
// than one it replays.
func (s *Spool) advanceLocked() {
	old := s.segs[0]
	s.segs = s.segs[1:]
	s.bytes -= old.size
	s.cur = position{seq: s.segs[0].seq}
	s.curPoints = 0
	if err := s.saveCursorLocked(); err != nil {
		s.log.Error("spool: cannot save the replay position; a restart may deliver points twice", "err", err)
	}
	if err := os.Remove(s.segPath(old.seq)); err != nil {
		s.log.Error("spool: cannot delete a delivered segment", "err", err)
	}
}

// pendingLocked is the number of points in the spool not yet delivered.
func (s *Spool) pendingLocked() int64 {
	var n int64
	for _, seg := range s.segs {
		n += seg.points
	}
	return n - s.curPoints
}

// emptyLocked reports whether a point can bypass the spool: nothing is
// spooled and nothing is being replayed, not even a batch whose segment
// overflow deleted.
func (s *Spool) emptyLocked() bool {
	return s.inflight == nil && s.pendingLocked() == 0
}

// Append writes points downstream, or to the spool (see the package
// documentation). It returns nil once the points are stored downstream or
// written to the spool. An error from downstream that does not wrap
// tsdb.ErrUnavailable (the data's fault) is returned as it is and nothing
// is spooled; a downstream cut short by ctx (its deadline, or
// cancellation) counts as unavailable, because that says nothing against
// the data. Append does not keep points after it returns.
func (s *Spool) Append(ctx context.Context, points []tsdb.Point) error {
	if len(points) == 0 {
		return nil
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	empty := s.emptyLocked()
	s.mu.Unlock()
	if empty {
		err := s.down.Append(ctx, points)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		var p Partial
		if errors.As(err, &p) {
			points = p.Unstored()
			if len(points) == 0 {
				return nil
			}
		}
		return s.spool(points, err)
	}
	return s.spool(points, nil)
}

// retryable reports whether err leaves the data blameless: the store is
// unavailable, or the call was cut short.
func retryable(err error) bool {
	return errors.Is(err, tsdb.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// spool writes points to the head segment. cause is the downstream error
// that sent them here, nil when they queue behind spooled points.
func (s *Spool) spool(points []tsdb.Point, cause error) error {
	enc := s.encs.Get().(*encoder)
	buf, err := enc.appendRecords(enc.buf[:0], points)
	defer func() {
		if cap(buf) <= maxPooledBuf {
			enc.buf = buf
		}
		s.encs.Put(enc)
	}()
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if cause != nil && s.emptyLocked() {
		s.log.Warn("tsdb unavailable; spooling points until it is back", "dir", s.dir, "err", cause)
	}
	fits, err := s.makeRoomLocked(int64(len(buf)))
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	if !fits {
		s.stats.Dropped += uint64(len(points))
		s.log.Error("spool: points dropped, a batch is larger than the whole spool", "dir", s.dir, "points", len(points), "bytes", len(buf), "max_bytes", s.opts.MaxBytes)
		return nil
	}
	head := s.segs[len(s.segs)-1]
	if _, err := s.head.Write(buf); err != nil {
		// Cut off whatever part was written, so the next record
		// follows a whole one.
		if terr := s.head.Truncate(head.size); terr != nil {
			s.log.Error("spool: cannot cut off a failed write; the next open will", "file", s.head.Name(), "err", terr)
		}
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	if s.opts.Sync {
		if err := s.head.Sync(); err != nil {
			return fmt.Errorf("spool %s: %w", s.dir, err)
		}
	}
	head.size += int64(len(buf))
	head.points += int64(len(points))
	s.bytes += int64(len(buf))
	s.stats.Spooled += uint64(len(points))
	if head.size >= s.opts.SegmentBytes {
		if err := s.rotateLocked(); err != nil {
			// The points are written; the next write tries again.
			s.log.Error("spool: cannot start a new segment", "dir", s.dir, "err", err)
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// maxPooledBuf is the largest encoding buffer kept for the next Append.
const maxPooledBuf = 4 << 20

// makeRoomLocked deletes the oldest segments until n more bytes fit in
// MaxBytes. It reports false if n alone is more than MaxBytes.
func (s *Spool) makeRoomLocked(n int64) (bool, error) {
	for s.bytes+n > s.opts.MaxBytes && len(s.segs) > 1 {
		s.dropOldestLocked()
	}
	if s.bytes+n > s.opts.MaxBytes && s.segs[0].size > 0 {
		// Only the head is left: start a new one to drop it.
		if err := s.rotateLocked(); err != nil {
			return false, err
		}
		s.dropOldestLocked()
	}
	return n <= s.opts.MaxBytes, nil
}

// dropOldestLocked deletes segs[0] for overflow, counting and reporting
// the points in it that were not delivered.
func (s *Spool) dropOldestLocked() {
	seg := s.segs[0]
	lost := seg.points - s.curPoints
	if fl := s.inflight; fl != nil && fl.seq == seg.seq && !fl.orphaned {
		// Run is delivering these; it counts them once it knows
		// whether they arrived.
		lost -= fl.pending
		fl.orphaned = true
	}
	s.stats.Dropped += uint64(lost)
	if lost > 0 {
		s.log.Error("spool full: dropped the oldest points", "dir", s.dir, "points", lost, "dropped_total", s.stats.Dropped, "max_bytes", s.opts.MaxBytes)
	}
	s.advanceLocked()
}

// rotateLocked starts a new head segment.
func (s *Spool) rotateLocked() error {
	seq := s.segs[len(s.segs)-1].seq + 1
	f, err := os.OpenFile(s.segPath(seq), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if s.opts.Sync {
		if err := syncDir(s.dir); err != nil {
			f.Close()
			os.Remove(f.Name())
			return err
		}
	}
	if err := s.head.Close(); err != nil {
		s.log.Error("spool: close segment", "file", s.head.Name(), "err", err)
	}
	s.head = f
	s.segs = append(s.segs, &segment{seq: seq})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Stats returns the spool's gauges and counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Points = s.pendingLocked()
	st.Bytes = s.bytes
	return st
}

// Close stops Run, waits for Appends in flight and closes the files. The
// spooled points stay on disk for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel, done := s.runCancel, s.runDone
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	return s.closeFiles()
}

func (s *Spool) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{s.head, s.curFile, s.lock} {
		if f != nil {
			if err := f.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spool %s: close: %w", s.dir, err)
	}
	return nil
}
