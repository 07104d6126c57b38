// Package spool keeps datapoints and annotations on local disk while the
// time-series store cannot take them, and replays them, in order, once it
// can.
//
// A Spool sits between a writer and its store (the downstream). While the
// spool is empty, Append and AppendAnnotation pass straight through, each
// call bounded by Options.PassTimeout. When the downstream fails with an
// error wrapping tsdb.ErrUnavailable, or does not answer within
// PassTimeout, the entries are written to the spool instead and the call
// returns nil, so checks and alerting go on through an outage. From then
// on every call goes to the spool, behind what is already there, without
// waiting on the downstream, until Run has replayed all of it: entries
// reach the downstream in the order they were appended (an entry appended
// after another call returned is delivered after that one's, points and
// annotations alike).
//
// Durability: a call returns nil for spooled entries after they are written
// to a segment file with write(2) (or held in memory, while the disk cannot
// take them: see below), so they survive the process being killed (kill
// -9) and are replayed after the next Open. Files are not
// fsynced unless Options.Sync is set, so without it a kernel crash or power
// loss can lose the last writes; a record damaged that way is detected by
// its checksum and cut off, never misread.
//
// When the disk cannot take a write (full, over quota, failing), the call
// still returns nil: what it carries is held in memory, up to
// Options.MemoryBytes, behind what is on disk and in order, and moved to
// disk once a write succeeds again (Run and later calls retry), or handed
// to the downstream straight from memory if it is back first. A write cut
// short is cut off the file, so the segment stays whole records. Past
// MemoryBytes the oldest entries held in memory are dropped, counted in
// Stats.Dropped and Stats.DroppedMemory, and logged. Entries still in
// memory at Close are written to disk if it takes them, else dropped and
// counted the same way. Memory does not survive the process: what is held
// there when it is killed is lost. Stats.DiskFailing tells whether the
// last write failed.
//
// Delivery is at least once. The replay position is saved after each
// delivered batch, so a restart does not deliver again what was delivered;
// a crash between a delivery and the saving of its position delivers that
// one batch twice, and a pass-through that timed out after the downstream
// stored it is spooled and delivered again. OpenTSDB and the embedded store
// keep one value per series and timestamp, and one annotation per TSUID and
// start time, so a point or annotation delivered twice is stored once (the
// second copy overwrites the first).
//
// The spool is bounded by Options.MaxBytes. When a write would pass it, the
// oldest segment files are deleted; the entries in them that were not yet
// delivered are counted in Stats.Dropped (Stats.AnnotationsDropped) and
// logged at error level.
//
// The downstream must return once the context of a call is done: that is
// what bounds a pass-through, and what lets Close stop Run promptly.
package spool

import (
	"bytes"
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

// Annotator is the downstream of AppendAnnotation: a downstream passed to
// Open that implements it takes annotations too (the OpenTSDB client, the
// embedded store), with the error contract of Appender.
type Annotator interface {
	PutAnnotation(ctx context.Context, a tsdb.Annotation) error
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

// ErrClosed is returned by Append, AppendAnnotation and Run after Close.
var ErrClosed = errors.New("spool closed")

// ErrNoAnnotations is wrapped by the error of AppendAnnotation when the
// downstream passed to Open is not an Annotator, and reported for spooled
// annotations replayed into such a downstream, which are then dropped.
var ErrNoAnnotations = errors.New("downstream does not store annotations")

// Default option values.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSegmentBytes = 8 << 20
	DefaultReplayBatch  = 5000
	DefaultRetryMin     = 500 * time.Millisecond
	DefaultRetryMax     = 30 * time.Second
	DefaultTimeout      = 30 * time.Second
	DefaultPassTimeout  = 2 * time.Second
	DefaultMemoryBytes  = 16 << 20
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
	// PassTimeout bounds one pass-through call downstream, made while the
	// spool is empty (default 2s). On timeout the entries are spooled, as
	// if the downstream were unavailable, so a writer never waits longer
	// on a store that does not answer.
	PassTimeout time.Duration
	// MemoryBytes bounds the entries held in memory while the disk cannot
	// take them, counted by their encoded size (default 16 MiB; about
	// 800,000 check results). Past it the oldest are dropped.
	MemoryBytes int64
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
	if o.PassTimeout <= 0 {
		o.PassTimeout = DefaultPassTimeout
	}
	if o.MemoryBytes <= 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stats are a Spool's gauges and counters. Counters count since Open.
type Stats struct {
	Points      int64 // points in the spool's files, not yet delivered
	Annotations int64 // annotations in the spool's files, not yet delivered
	Bytes       int64 // size of the spool's segment files

	// Buffered, BufferedAnnotations and BufferedBytes are what is held in
	// memory because the disk could not take it (see the package
	// documentation).
	Buffered            int64
	BufferedAnnotations int64
	BufferedBytes       int64

	Spooled  uint64 // points taken into the spool, to disk or to memory
	Replayed uint64 // spooled points the downstream took
	// Dropped counts points lost, never delivered: the oldest files on
	// overflow of MaxBytes, the oldest held in memory past MemoryBytes,
	// and those held in memory at Close that the disk would not take.
	Dropped       uint64
	DroppedMemory uint64 // the part of Dropped that was lost from memory
	Rejected      uint64 // spooled points the downstream refused as invalid
	Corrupted     uint64 // points lost to a damaged record found in replay

	AnnotationsSpooled  uint64
	AnnotationsReplayed uint64
	AnnotationsDropped  uint64 // as Dropped, and those lost to a damaged record
	AnnotationsRejected uint64

	// DiskErrors counts the writes to the spool's files that failed
	// (each retry counts). DiskFailing is true from a failed write until
	// one succeeds: entries go to memory meanwhile, and while the spool
	// passes entries through it writes nothing, so the flag stays as the
	// last write left it. LastDiskError is the last failure, nil if none.
	DiskErrors    uint64
	DiskFailing   bool
	LastDiskError error
}

// tally counts entries by kind.
type tally struct{ points, anns int64 }

func tallyOf(k kind, n int) tally {
	if k == kindAnnotation {
		return tally{anns: int64(n)}
	}
	return tally{points: int64(n)}
}

func (t tally) plus(o tally) tally  { return tally{t.points + o.points, t.anns + o.anns} }
func (t tally) minus(o tally) tally { return tally{t.points - o.points, t.anns - o.anns} }
func (t tally) zero() bool          { return t == tally{} }

// segment is one segment file.
type segment struct {
	seq  uint64
	size int64 // bytes of whole records
	n    tally // entries in those records
}

// inflight is what Run is delivering: records of segment seq past the
// cursor, or (mem) the first memRecs records held in memory. pending counts
// their entries not yet committed. orphaned is set when overflow dropped
// them underneath: the cursor has moved on, or memory let them go, and the
// batch's fate only changes counters.
type inflight struct {
	seq      uint64
	mem      bool
	memRecs  int
	pending  tally
	orphaned bool
}

// memRec is a record held in memory because the disk could not take it:
// the bytes that go to a segment file, header and payload.
type memRec struct {
	b []byte
	k kind
	n int
}

// memory is the records held in memory, oldest first. They follow every
// record on disk.
type memory struct {
	recs  []memRec
	bytes int64
	n     tally
}

func (m *memory) push(r memRec) {
	m.recs = append(m.recs, r)
	m.bytes += int64(len(r.b))
	m.n = m.n.plus(tallyOf(r.k, r.n))
}

func (m *memory) pop() memRec {
	r := m.recs[0]
	m.recs[0] = memRec{}
	m.recs = m.recs[1:]
	m.bytes -= int64(len(r.b))
	m.n = m.n.minus(tallyOf(r.k, r.n))
	if len(m.recs) == 0 {
		m.recs = nil // let the backing array go
	}
	return r
}

// diskState is how the spool's writes have been going.
type diskState struct {
	failing    bool
	errs       uint64
	last       error
	dropped    tally // dropped from memory in this episode of failures
	dropLogged bool  // the episode's first drop was logged
	torn       bool  // a failed write's bytes may follow the head's records
	rotateErr  bool  // the last rotation failed and was logged
}

// Spool is a bounded, durable FIFO of points and annotations in front of a
// downstream Appender. It is safe for concurrent use; Run replays while
// Appends go on.
type Spool struct {
	dir  string
	down Appender
	ann  Annotator // down, if it is one
	opts Options
	log  *slog.Logger
	lock *os.File
	wake chan struct{} // a token: there is something new to replay
	encs sync.Pool     // *encoder

	// closing is done when Close begins: it cuts pass-through calls short,
	// so Close does not wait PassTimeout for them.
	closing  context.Context
	stopPass context.CancelFunc
	// closeMu is held for reading by the Appends and for writing by
	// Close, so the files outlive every Append that passed the closed
	// check.
	closeMu sync.RWMutex

	mu        sync.Mutex
	flushBuf  []byte // flushLocked's buffer
	closed    bool
	segs      []*segment // oldest first, never empty; the last is the head
	head      *os.File   // the last segment, opened for writing
	bytes     int64      // sum of segs' sizes
	cur       position   // first byte not delivered, always in segs[0]
	curN      tally      // entries of segs[0] before cur
	curFile   *os.File
	inflight  *inflight
	mem       memory
	disk      diskState
	stats     Stats
	runCancel context.CancelFunc // non-nil while Run runs
	runDone   chan struct{}
}

var _ Appender = (*Spool)(nil)

func segName(seq uint64) string { return fmt.Sprintf("%020d.seg", seq) }

func (s *Spool) segPath(seq uint64) string { return filepath.Join(s.dir, segName(seq)) }

// Open opens the spool in dir, creating it if needed, in front of down;
// if down is also an Annotator, the spool takes annotations too. Entries
// spooled before are kept and replayed by Run. A damaged record (the tail
// of a write cut short) is cut off with everything after it in its
// segment, and logged. The directory is locked against a second Open, in
// this or another process, until Close.
//
// Open writes nothing but the replay position (a failure to save it is
// logged, not returned), so it succeeds on a full disk where the spool's
// directory and files exist; creating them there may fail, and the error
// names the path.
func Open(dir string, down Appender, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	s := &Spool{dir: dir, down: down, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
	s.ann, _ = down.(Annotator)
	s.encs.New = func() any { return newEncoder() }
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("spool: create lock file: %w", err)
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
	s.closing, s.stopPass = context.WithCancel(context.Background())
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

	// Not O_APPEND: records are written at the head's size (writeLocked),
	// so the bytes of a failed write that could not be cut off are
	// overwritten by the next one rather than left between records.
	head := s.segs[len(s.segs)-1]
	s.head, err = os.OpenFile(s.segPath(head.seq), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := s.saveCursorLocked(); err != nil {
		// The cursor in the file is older: a restart delivers some
		// entries twice, which is allowed; refusing to start is not.
		s.log.Error("spool: cannot save the replay position; a restart may deliver entries twice", "err", err)
	}
	for len(s.segs) > 1 && s.cur.off == s.segs[0].size {
		s.advanceLocked()
	}
	if p := s.pendingLocked(); !p.zero() {
		s.log.Info("spool holds entries to replay", "dir", s.dir, "points", p.points, "annotations", p.anns, "bytes", s.bytes)
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
		k, n, _, err := r.next()
		if err == nil {
			seg.n = seg.n.plus(tallyOf(k, n))
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if !errors.Is(err, errDamaged) {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		// The tail of a write cut short by a crash, or damage: either
		// way nothing from here on can be trusted to be entries.
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
// boundary at or before it in segs[0] and counts the entries before it. A
// cursor past the end (its segment was emptied, or cut off at open) means
// everything there was delivered.
func (s *Spool) placeCursor() error {
	seg := s.segs[0]
	if s.cur.off >= seg.size {
		s.cur.off, s.curN = seg.size, seg.n
		return nil
	}
	path := s.segPath(seg.seq)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := newRecordReader(f, 0, seg.size, nil)
	var before tally
	for r.off < s.cur.off {
		at := r.off
		k, n, _, err := r.next()
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if r.off > s.cur.off {
			s.log.Warn("spool cursor is not at a record boundary; replaying from the one before", "file", path, "offset", s.cur.off, "boundary", at)
			s.cur.off = at
			break
		}
		before = before.plus(tallyOf(k, n))
	}
	s.curN = before
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
	s.curN = tally{}
	if err := s.saveCursorLocked(); err != nil {
		s.log.Error("spool: cannot save the replay position; a restart may deliver entries twice", "err", err)
	}
	if err := os.Remove(s.segPath(old.seq)); err != nil {
		s.log.Error("spool: cannot delete a delivered segment", "err", err)
	}
}

// pendingLocked counts the entries in the spool's files not yet
// delivered.
func (s *Spool) pendingLocked() tally {
	var n tally
	for _, seg := range s.segs {
		n = n.plus(seg.n)
	}
	return n.minus(s.curN)
}

// emptyLocked reports whether an entry can bypass the spool: nothing is
// spooled, on disk or in memory, and nothing is being replayed, not even a
// batch that overflow dropped.
func (s *Spool) emptyLocked() bool {
	return s.inflight == nil && len(s.mem.recs) == 0 && s.pendingLocked().zero()
}

// begin takes the closed check for an Append and reports whether the
// spool is empty, so the entries may pass straight through. On success
// the caller holds closeMu for reading and must release it.
func (s *Spool) begin() (empty bool, err error) {
	s.closeMu.RLock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.closeMu.RUnlock()
		return false, ErrClosed
	}
	return s.emptyLocked(), nil
}

// Append writes points downstream, or to the spool (see the package
// documentation). It returns nil once the points are stored downstream or
// taken by the spool, to disk or, while the disk cannot take them, to
// memory. An error from downstream that does not wrap tsdb.ErrUnavailable
// (the data's fault) is returned as it is and nothing is spooled; a
// downstream cut short by ctx or by Options.PassTimeout counts as
// unavailable, because that says nothing against the data. Append waits on
// the downstream only while the spool is empty, and then at most
// PassTimeout. It does not keep points after it returns.
func (s *Spool) Append(ctx context.Context, points []tsdb.Point) error {
	if len(points) == 0 {
		return nil
	}
	empty, err := s.begin()
	if err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	if empty {
		err := s.pass(ctx, func(ctx context.Context) error { return s.down.Append(ctx, points) })
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
		return s.spoolPoints(points, err)
	}
	return s.spoolPoints(points, nil)
}

// AppendAnnotation writes a downstream, or to the spool, as Append does
// points, in order with them. It returns an error wrapping
// ErrNoAnnotations if the downstream is not an Annotator.
func (s *Spool) AppendAnnotation(ctx context.Context, a tsdb.Annotation) error {
	if s.ann == nil {
		return fmt.Errorf("spool %s: %T: %w", s.dir, s.down, ErrNoAnnotations)
	}
	empty, err := s.begin()
	if err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	var cause error
	if empty {
		cause = s.pass(ctx, func(ctx context.Context) error { return s.ann.PutAnnotation(ctx, a) })
		if cause == nil {
			return nil
		}
		if !retryable(cause) {
			return cause
		}
	}
	enc := s.encs.Get().(*encoder)
	buf, err := enc.appendAnnotationRecord(enc.buf[:0], a)
	defer s.putEncoder(enc, buf)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	s.enqueue(buf, tally{anns: 1}, cause)
	return nil
}

// pass makes a pass-through call downstream, bounded by PassTimeout and
// cut short by Close. A failure after the call's context is done is made
// retryable whatever the downstream wrapped: the call was cut short, which
// says nothing against the data.
func (s *Spool) pass(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.PassTimeout)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	err := call(ctx)
	if err != nil && !retryable(err) && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return err
}

// retryable reports whether err leaves the data blameless: the store is
// unavailable, or the call was cut short.
func retryable(err error) bool {
	return errors.Is(err, tsdb.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// spoolPoints encodes points and queues them. cause is the downstream
// error that sent them here, nil when they queue behind spooled entries.
func (s *Spool) spoolPoints(points []tsdb.Point, cause error) error {
	enc := s.encs.Get().(*encoder)
	buf, err := enc.appendRecords(enc.buf[:0], points)
	defer s.putEncoder(enc, buf)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	s.enqueue(buf, tally{points: int64(len(points))}, cause)
	return nil
}

func (s *Spool) putEncoder(enc *encoder, buf []byte) {
	if cap(buf) <= maxPooledBuf {
		enc.buf = buf
	}
	s.encs.Put(enc)
}

// maxPooledBuf is the largest encoding buffer kept for the next Append.
const maxPooledBuf = 4 << 20

// enqueue puts records buf, holding n, at the end of the spool: on disk,
// or in memory if the disk cannot take them or memory already holds
// records, which must stay ahead of them.
func (s *Spool) enqueue(buf []byte, n tally, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cause != nil && s.emptyLocked() {
		s.log.Warn("tsdb unavailable; spooling until it is back", "dir", s.dir, "err", cause)
	}
	s.stats.Spooled += uint64(n.points)
	s.stats.AnnotationsSpooled += uint64(n.anns)
	defer s.wakeRun()
	if len(s.mem.recs) > 0 {
		s.flushLocked()
	}
	if len(s.mem.recs) == 0 {
		err := s.writeLocked(buf, n)
		switch {
		case err == nil:
			return
		case errors.Is(err, errTooLarge):
			s.countDroppedLocked(n, false)
			s.log.Error("spool: dropped a batch larger than the whole spool", "dir", s.dir, "points", n.points, "annotations", n.anns, "bytes", len(buf), "max_bytes", s.opts.MaxBytes)
			return
		}
		s.diskFailedLocked(err)
	}
	s.bufferLocked(buf)
}

func (s *Spool) wakeRun() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// errTooLarge is writeLocked's refusal of records larger than MaxBytes.
var errTooLarge = errors.New("larger than the spool")

// writeLocked appends the whole records b, holding n, to the head segment,
// first deleting the oldest segments as far as MaxBytes needs. It returns
// errTooLarge, writing nothing, if b alone is larger than MaxBytes, and
// any other error if the disk did not take b: then none of b is left in
// the spool's records.
func (s *Spool) writeLocked(b []byte, n tally) error {
	fits, err := s.makeRoomLocked(int64(len(b)))
	if err != nil {
		return err
	}
	if !fits {
		return errTooLarge
	}
	head := s.segs[len(s.segs)-1]
	if _, err := s.head.WriteAt(b, head.size); err != nil {
		s.cutLocked(head)
		return err
	}
	if s.opts.Sync {
		if err := s.head.Sync(); err != nil {
			// What the kernel holds of the write is unknown: cut it
			// off and keep it in memory rather than count on it.
			s.cutLocked(head)
			return fmt.Errorf("sync %s: %w", s.head.Name(), err)
		}
	}
	head.size += int64(len(b))
	head.n = head.n.plus(n)
	s.bytes += int64(len(b))
	s.diskOKLocked()
	if head.size >= s.opts.SegmentBytes {
		if err := s.rotateLocked(); err != nil {
			// The records are written; the next write tries again.
			if !s.disk.rotateErr {
				s.log.Error("spool: cannot start a new segment", "dir", s.dir, "err", err)
				s.disk.rotateErr = true
			}
		} else {
			s.disk.rotateErr = false
		}
	}
	return nil
}

// cutLocked truncates the head segment back to its whole records after a
// failed write, which may have written part of its bytes (a disk filling
// up in the middle). If that fails too, the next write overwrites the
// bytes, and Close and the next Open cut off what is left.
func (s *Spool) cutLocked(head *segment) {
	if err := s.head.Truncate(head.size); err != nil {
		if !s.disk.torn {
			s.log.Error("spool: cannot cut a failed write off its segment", "file", s.head.Name(), "err", err)
		}
		s.disk.torn = true
		return
	}
	s.disk.torn = false
}

// diskFailedLocked notes a failed write.
func (s *Spool) diskFailedLocked(err error) {
	s.disk.errs++
	s.disk.last = err
	if !s.disk.failing {
		s.disk.failing = true
		s.log.Error("spool: cannot write to disk; holding entries in memory", "dir", s.dir, "memory_bytes", s.opts.MemoryBytes, "err", err)
	}
}

// diskOKLocked notes a successful write, which ends an episode of failed
// ones.
func (s *Spool) diskOKLocked() {
	if !s.disk.failing {
		return
	}
	d := s.disk.dropped
	if d.zero() {
		s.log.Info("spool: writing to disk again", "dir", s.dir, "disk_errors", s.disk.errs)
	} else {
		s.log.Error("spool: writing to disk again; entries were dropped from memory meanwhile", "dir", s.dir, "points", d.points, "annotations", d.anns, "memory_bytes", s.opts.MemoryBytes, "disk_errors", s.disk.errs)
	}
	s.disk.failing, s.disk.dropped, s.disk.dropLogged = false, tally{}, false
}

// bufferLocked holds the records buf in memory, behind those already
// there, and drops the oldest records held if that passes MemoryBytes.
func (s *Spool) bufferLocked(buf []byte) {
	b := bytes.Clone(buf) // buf is the encoder's, reused
	for len(b) > 0 {
		k, n, size := header(b)
		s.mem.push(memRec{b: b[:size:size], k: k, n: n})
		b = b[size:]
	}
	for s.mem.bytes > s.opts.MemoryBytes && len(s.mem.recs) > 1 {
		s.dropMemLocked()
	}
}

// dropMemLocked drops the oldest records held in memory for overflow. If
// Run is delivering them, it drops its whole batch from memory and leaves
// the counting to Run, which knows whether they arrived.
func (s *Spool) dropMemLocked() {
	if fl := s.inflight; fl != nil && fl.mem && !fl.orphaned {
		for range fl.memRecs {
			s.mem.pop()
		}
		fl.memRecs, fl.orphaned = 0, true
		return
	}
	r := s.mem.pop()
	s.countDroppedLocked(tallyOf(r.k, r.n), true)
}

// countDroppedLocked counts n as dropped, and from memory if mem. The first
// drop from memory in an episode of disk failures is logged; the episode's
// total is logged when the disk takes writes again.
func (s *Spool) countDroppedLocked(n tally, mem bool) {
	s.stats.Dropped += uint64(n.points)
	s.stats.AnnotationsDropped += uint64(n.anns)
	if !mem {
		return
	}
	s.stats.DroppedMemory += uint64(n.points)
	s.disk.dropped = s.disk.dropped.plus(n)
	if !s.disk.dropLogged {
		s.disk.dropLogged = true
		s.log.Error("spool: memory full while the disk cannot be written; dropping the oldest entries held", "dir", s.dir, "points", n.points, "annotations", n.anns, "memory_bytes", s.opts.MemoryBytes, "dropped_total", s.stats.Dropped, "err", s.disk.last)
	}
}

// maxFlush bounds one write of records moved from memory to disk.
const maxFlush = 1 << 20

// flushLocked moves records held in memory to disk, oldest first, until
// none are left or a write fails. It moves none while Run is delivering
// the oldest from memory: those behind them must not go to disk ahead of
// them.
func (s *Spool) flushLocked() {
	if fl := s.inflight; fl != nil && fl.mem && !fl.orphaned {
		return
	}
	for len(s.mem.recs) > 0 {
		// As many records as make up to maxFlush bytes, and at most
		// MaxBytes, in one write: one record at least.
		limit := min(maxFlush, s.opts.MaxBytes)
		recs := s.mem.recs
		k, size := 1, len(recs[0].b)
		n := tallyOf(recs[0].k, recs[0].n)
		for k < len(recs) && size+len(recs[k].b) <= int(limit) {
			size += len(recs[k].b)
			n = n.plus(tallyOf(recs[k].k, recs[k].n))
			k++
		}
		b := recs[0].b
		if k > 1 {
			s.flushBuf = s.flushBuf[:0]
			for _, r := range recs[:k] {
				s.flushBuf = append(s.flushBuf, r.b...)
			}
			b = s.flushBuf
		}
		err := s.writeLocked(b, n)
		switch {
		case err == nil:
		case errors.Is(err, errTooLarge):
			// One record larger than the whole spool, which only a
			// tiny MaxBytes allows.
			s.countDroppedLocked(n, false)
			s.log.Error("spool: dropped a batch larger than the whole spool", "dir", s.dir, "points", n.points, "annotations", n.anns, "bytes", len(b), "max_bytes", s.opts.MaxBytes)
		default:
			s.diskFailedLocked(err)
			return
		}
		for range k {
			s.mem.pop()
		}
	}
	if cap(s.flushBuf) > maxFlush {
		s.flushBuf = nil
	}
}

// makeRoomLocked deletes the oldest segments until n more bytes fit in
// MaxBytes. It reports false if n alone is more than MaxBytes.
func (s *Spool) makeRoomLocked(n int64) (bool, error) {
	if n > s.opts.MaxBytes {
		return false, nil
	}
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
	return true, nil
}

// dropOldestLocked deletes segs[0] for overflow, counting and reporting
// the entries in it that were not delivered.
func (s *Spool) dropOldestLocked() {
	seg := s.segs[0]
	lost := seg.n.minus(s.curN)
	if fl := s.inflight; fl != nil && !fl.mem && fl.seq == seg.seq && !fl.orphaned {
		// Run is delivering these; it counts them once it knows
		// whether they arrived.
		lost = lost.minus(fl.pending)
		fl.orphaned = true
	}
	s.countDroppedLocked(lost, false)
	if !lost.zero() {
		s.log.Error("spool full: dropped the oldest entries", "dir", s.dir, "points", lost.points, "annotations", lost.anns, "dropped_total", s.stats.Dropped, "max_bytes", s.opts.MaxBytes)
	}
	s.advanceLocked()
}

// rotateLocked starts a new head segment.
func (s *Spool) rotateLocked() error {
	seq := s.segs[len(s.segs)-1].seq + 1
	f, err := os.OpenFile(s.segPath(seq), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
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
	s.closeHeadLocked()
	s.head = f
	s.segs = append(s.segs, &segment{seq: seq})
	return nil
}

// closeHeadLocked closes the head segment's file, cutting off first what a
// failed write may have left after its records.
func (s *Spool) closeHeadLocked() {
	if s.disk.torn {
		s.cutLocked(s.segs[len(s.segs)-1])
	}
	if err := s.head.Close(); err != nil {
		s.log.Error("spool: close segment", "file", s.head.Name(), "err", err)
	}
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
	p := s.pendingLocked()
	st.Points, st.Annotations, st.Bytes = p.points, p.anns, s.bytes
	st.Buffered, st.BufferedAnnotations, st.BufferedBytes = s.mem.n.points, s.mem.n.anns, s.mem.bytes
	st.DiskErrors, st.DiskFailing, st.LastDiskError = s.disk.errs, s.disk.failing, s.disk.last
	return st
}

// Close stops Run and the pass-through calls in flight (whose entries are
// spooled), waits for the Appends in flight, writes what memory holds to
// disk if it takes it (dropping, counting and logging the rest) and closes
// the files. The spooled entries stay on disk for the next Open. Close
// waits for the downstream only as long as it takes to return once its
// context is cancelled.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel, done := s.runCancel, s.runDone
	s.mu.Unlock()
	s.stopPass()
	if cancel != nil {
		cancel()
		<-done
	}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.mu.Lock()
	s.flushLocked()
	if n := s.mem.n; !n.zero() {
		s.log.Error("spool: closing with entries in memory that the disk would not take; dropping them", "dir", s.dir, "points", n.points, "annotations", n.anns, "err", s.disk.last)
		s.mem = memory{}
		s.stats.Dropped += uint64(n.points)
		s.stats.DroppedMemory += uint64(n.points)
		s.stats.AnnotationsDropped += uint64(n.anns)
	}
	if s.disk.torn {
		s.cutLocked(s.segs[len(s.segs)-1])
	}
	s.mu.Unlock()
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
