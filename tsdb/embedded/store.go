// Package embedded is dmonitor's time-series store on local disk, built on
// the Prometheus TSDB engine, with OpenTSDB's data model and query
// semantics: a metric name becomes the label __name__ and every tag a label
// of the same name.
//
// Durability: Append returns nil only after the engine has written the
// points to its write-ahead log with write(2), so they survive the process
// being killed (kill -9) and are read back by the next Open. The log is not
// fsynced per batch, so a power loss or kernel crash can lose the most
// recent batches; that is out of scope.
//
// The exception is a full disk. The store keeps Options.MinFreeBytes free
// on the data directory's file system and, below that or when the engine
// fails to write, holds appended points in memory (at most
// Options.MemoryPoints, the oldest dropped past that) and writes them once
// there is room again. Append then returns nil for points that are only in
// memory: they are lost if the process stops before the disk has room, and
// queries do not see them until they are written. Stats reports it. This
// trades a few minutes of durability for the daemon going on checking and
// alerting, and it keeps the engine from ever writing into a full disk,
// which is what destroys its log (see openEngine) and, for its head chunks,
// panics the process.
package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/fileutil"
	bolt "go.etcd.io/bbolt"

	"github.com/dmonitor/dmonitor/tsdb"
)

var _ tsdb.Store = (*Store)(nil)

// nameLabel is the engine label holding the metric name (Prometheus's
// __name__, whose constant in model/labels is deprecated).
const nameLabel = "__name__"

// ErrClosed is returned by calls on a Store after Close.
var ErrClosed = errors.New("store closed")

// Default option values.
const (
	DefaultRetention        = 30 * 24 * time.Hour
	DefaultOutOfOrderWindow = 7 * 24 * time.Hour
	// DefaultMinFreeBytes is what the engine may need to write on its own
	// after the store stops handing it points: its head compaction writes
	// a block of the last two hours (about 1.5 bytes a sample: 2 MB for
	// 1000 series at 10 s) and a log checkpoint, its head chunk writer
	// flushes up to 4 MiB at once, and merging blocks writes as much as
	// the blocks merged (for 1000 series at 10 s, 10 MB for the largest,
	// 3 days). 64 MiB covers a store of about 5000 series at 10 s with
	// room to spare; a larger one wants about three times its largest
	// block.
	DefaultMinFreeBytes = 64 << 20
	// DefaultMemoryPoints holds 10 minutes of 300 checks writing a point
	// every second, or 3000 checks every 10 s, in about 5 MB (24 bytes a
	// point and the labels of each series once).
	DefaultMemoryPoints = 200_000
	// DefaultMaxSeries is far more than a monitor writes (a series per
	// check, target and metric) and, at about 0.8 KiB a series of heap
	// (see Options.MaxSeries), 800 MB: the limit is there to stop a runaway
	// writer (a tag holding a timestamp or a request ID) before it takes
	// the machine's memory, not to size the store.
	DefaultMaxSeries = 1_000_000
)

// maxCachedSeries bounds the series-reference cache. Past it the cache is
// emptied and refills from the engine (one label build per series), which
// keeps memory bounded under series churn at the price of a slower batch.
const maxCachedSeries = 1 << 20

// maxPooledKeyBytes is the largest key buffer kept for the next Append,
// enough for batches of tens of thousands of points.
const maxPooledKeyBytes = 4 << 20

// Options configure a Store. Zero values mean the defaults.
type Options struct {
	// Retention is how long data is kept (default 30 days). The engine
	// measures it from the newest persisted block and deletes whole blocks
	// (2 hours up to Retention/10 each), so data lives somewhat longer.
	Retention time.Duration
	// OutOfOrderWindow is how far behind the newest stored sample an
	// appended point may be (default 7 days).
	OutOfOrderWindow time.Duration
	// MinFreeBytes is the space left free on the data directory's file
	// system (default DefaultMinFreeBytes; negative for none). Below it
	// Append holds points in memory instead of writing them, so the engine
	// has the room its compactions need and never writes into a full disk.
	MinFreeBytes int64
	// MemoryPoints bounds the points held in memory while the disk is
	// short of space or the engine cannot be opened (default
	// DefaultMemoryPoints; 24 bytes a point plus each series' labels once).
	// Past it the oldest are dropped, counted in Stats.Dropped.
	MemoryPoints int
	// MaxSeries bounds the series the store holds (default
	// DefaultMaxSeries; negative for no limit): once the engine's head and
	// the memory buffer hold MaxSeries series, points of other series are
	// refused with a *LimitError. Each series costs about 0.8 KiB of heap
	// with dmonitor's labels (measured by BenchmarkSeriesMemory: the
	// engine's series, postings and first chunk, and this store's cache
	// entry), which the collector lets grow to twice that between cycles
	// unless a memory limit is set.
	MaxSeries int
	// Logger receives the store's and the engine's logs; nil discards them.
	// The engine's info lines (its write-ahead log replayed at every
	// start, blocks compacted) come at debug level: they are routine.
	Logger *slog.Logger

	// samplesPerChunk overrides the engine's samples a chunk (see
	// engineOptions) for benchmarks that compare values; 0 for the default.
	samplesPerChunk int
}

// Store is a tsdb.Store on the Prometheus TSDB engine. It is safe for
// concurrent use.
type Store struct {
	dir       string
	opts      Options // with the defaults filled in
	reserve   uint64
	maxSeries int
	oooWindow time.Duration
	log       *slog.Logger
	engineLog *slog.Logger
	lock      fileutil.Releaser // the directory's lock, held from Open to Close
	space     *diskGuard

	// mu is held for reading by every call and for writing by Close and by
	// the keeper when it opens or closes the engine, so no call reaches a
	// closed engine.
	mu     sync.RWMutex
	closed bool
	db     *promtsdb.DB // nil while the engine is not open (see Open)
	ann    *bolt.DB     // annotations, see annotations.go; nil until opened

	// failed is set when the engine failed to write; the keeper closes it
	// and opens it again (see engineFailed).
	failed   atomic.Bool
	writeErr atomic.Pointer[error] // the engine's last write error
	notOpen  atomic.Pointer[error] // why the engine is not open, nil when it is

	buf          memBuffer // see held.go
	limitRefused atomic.Uint64

	kick chan struct{} // wakes the keeper (see run)
	// compacted is when the keeper last compacted, and compactFailed
	// whether that failed; the keeper's own.
	compacted     time.Time
	compactFailed bool
	stop          context.CancelFunc
	done          chan struct{} // closed when the keeper returns

	// cacheMu guards cache: the engine's reference and labels of every
	// series written, see seriesCache.
	cacheMu sync.RWMutex
	cache   seriesCache

	// appendMu serialises the engine's appenders (see appendAll), and the
	// series limit's count. Locks are taken in the order mu, appendMu,
	// buf.mu, cacheMu.
	appendMu sync.Mutex

	scratch sync.Pool // *appendScratch, reused across Append calls
}

// Open opens or creates the store in dir. The store takes a lock file in
// dir: a second Open of the same dir, in this process or another, fails
// until the first is closed.
//
// Open succeeds on a full disk, so the daemon starts and goes on checking
// and alerting. The engine opens only with the reserve free (its log's
// replay writes chunks, and fails fatally if it cannot), and, when its
// write-ahead log is damaged (a write torn by an earlier full disk or
// crash), with room to repair it: a repair that runs out of space loses
// the whole segment (see openEngine). Otherwise, or when the engine fails
// to open for want of space, Open returns the store with the engine not
// yet open: Append holds points in memory, queries and
// annotation calls fail with an error wrapping tsdb.ErrUnavailable, and a
// goroutine that Close stops opens the engine once there is room, then
// writes the held points. Opening in the background rather than failing
// keeps checks and alerts going; opening the engine read-only would not
// do, since points must be written later and the repair is what needs
// room. Any other failure to open is returned.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.OutOfOrderWindow <= 0 {
		opts.OutOfOrderWindow = DefaultOutOfOrderWindow
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	if opts.MemoryPoints <= 0 {
		opts.MemoryPoints = DefaultMemoryPoints
	}
	if opts.MaxSeries == 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lockPath := filepath.Join(dir, "lock")
	lock, _, err := fileutil.Flock(lockPath)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: lock %s: %w", dir, lockPath, err)
	}
	s := &Store{
		dir: dir, opts: opts, reserve: uint64(max(opts.MinFreeBytes, 0)), maxSeries: max(opts.MaxSeries, 0),
		oooWindow: opts.OutOfOrderWindow, log: logger, engineLog: slog.New(quietInfo{logger.Handler()}), lock: lock,
		cache: newSeriesCache(), kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
	s.buf.max = opts.MemoryPoints
	s.space = newDiskGuard(dir, s.reserve)
	s.space.check(0)
	s.scratch.New = func() any { return new(appendScratch) }

	db, ann, err := s.openAll()
	switch {
	case err == nil:
		s.db, s.ann = db, ann
	case errors.Is(err, errNoRoom):
		s.notOpen.Store(&err)
		s.log.Error("embedded tsdb: disk too full to open the engine; holding points in memory until there is room", "dir", dir, "err", err)
	default:
		return nil, errors.Join(err, lock.Release())
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.run(ctx)
	return s, nil
}

// Close stops the keeper, writes the points held in memory if the disk has
// room, and closes the engine. Points still held are lost, and Close says
// how many. Calls after Close fail with ErrClosed; a second Close returns
// nil.
func (s *Store) Close() error {
	// The keeper first, without holding mu: a compaction it is running
	// goes on to its end (the engine offers no way to cut it short but
	// closing it, which must not happen under it), and calls meanwhile
	// must not queue behind a Close waiting for mu.
	s.stop()
	<-s.done
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil
	}
	if s.buf.len() > 0 && !s.failed.Load() {
		s.space.expire()
		s.drain(context.Background())
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if n := s.buf.len(); n > 0 {
		s.buf.mu.Lock()
		why := s.buf.why
		s.buf.mu.Unlock()
		errs = append(errs, fmt.Errorf("embedded tsdb %s: close: %d points held in memory are lost: %w", s.dir, n, why))
	}
	if s.db != nil {
		if err := closeEngine(s.db); err != nil {
			errs = append(errs, fmt.Errorf("embedded tsdb %s: close: %w", s.dir, err))
		}
	}
	if s.ann != nil {
		if err := s.ann.Close(); err != nil {
			errs = append(errs, fmt.Errorf("embedded tsdb %s: close annotations: %w", s.dir, err))
		}
	}
	if err := s.lock.Release(); err != nil {
		errs = append(errs, fmt.Errorf("embedded tsdb %s: release lock: %w", s.dir, err))
	}
	return errors.Join(errs...)
}

// usable says why a call cannot use the engine now, nil if it can. s.mu is
// held.
func (s *Store) usable() error {
	if s.closed {
		return ErrClosed
	}
	if s.db == nil {
		why := errors.New("closed after a write error")
		if e := s.notOpen.Load(); e != nil {
			why = *e
		}
		return fmt.Errorf("engine not open: %w (%w)", tsdb.ErrUnavailable, why)
	}
	return nil
}

// forgetSeries empties the series cache: the engine is being reopened, and
// its references may then name other series. s.mu is held for writing.
func (s *Store) forgetSeries() {
	s.cacheMu.Lock()
	s.cache.clear()
	s.cacheMu.Unlock()
}

// appendScratch holds the buffers of one Append call.
type appendScratch struct {
	kvs   []tagPair // the tags of one point, sorted by key
	keys  []byte    // the series keys of all points, back to back
	ents  []batchEntry
	slot  []int32          // per point: its index in ents
	fresh map[string]int32 // series of this batch not in the cache: key -> index in ents
	sb    labels.ScratchBuilder
}

type tagPair struct{ k, v string }

// batchEntry is a series as one batch uses it: the cached entry (or a new
// one), where its key lies in appendScratch.keys, and whether the cache
// must learn it after the commit.
type batchEntry struct {
	seriesEntry
	keyStart, keyEnd int
	learn            bool
	isNew            bool // not in the engine nor in memory (see admit)
	refused          bool // by MaxSeries
}

func (sc *appendScratch) reset(n int) {
	sc.keys = sc.keys[:0]
	sc.ents = sc.ents[:0]
	sc.slot = sc.slot[:0]
	if cap(sc.slot) < n {
		sc.slot = make([]int32, 0, n)
	}
	clear(sc.fresh)
}

// Append writes points as one transaction: either all are stored or none,
// but for the points refused by the series limit.
// Every point is validated before anything is written, as OpenTSDB
// validates them: a non-empty metric and at least one tag, names and values
// of letters, digits and - _ . / only, a timestamp after the epoch and a
// finite value. A point the engine refuses (older than the out-of-order
// window, or a different value for a timestamp already stored) rolls back
// the whole batch. Such refusals wrap tsdb.ErrInvalid and name the point.
//
// Points of series the store does not hold, once it holds
// Options.MaxSeries series, are refused and the rest stored: the error is
// then a *LimitError, wrapping tsdb.ErrLimit and listing the refused
// points.
//
// When Append returns nil (or a *LimitError) the points survive a crash of
// this process (see the package doc), except while the disk is short of
// space or the engine is not open: then they are held in memory until they
// can be written (see Stats).
func (s *Store) Append(ctx context.Context, points []tsdb.Point) error {
	if len(points) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded tsdb %s: append: %w", s.dir, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("embedded tsdb %s: append: %w", s.dir, ErrClosed)
	}

	sc := s.scratch.Get().(*appendScratch)
	defer func() {
		// Keep the buffers of ordinary batches; let a huge one's go.
		if cap(sc.keys) <= maxPooledKeyBytes {
			s.scratch.Put(sc)
		}
	}()
	sc.reset(len(points))
	if err := s.resolve(sc, points); err != nil {
		return err
	}

	var why error
	switch {
	case s.db == nil:
		why = s.usable()
	case s.failed.Load():
		why = *s.writeErr.Load()
	case !s.space.room(int64(len(points)) * bytesPerPoint):
		why = fmt.Errorf("%d bytes free, below the reserve of %d", s.space.lastFree(), s.reserve)
	default:
		lerr, err := s.write(ctx, sc, points)
		if err == nil {
			if s.buf.len() > 0 {
				s.poke() // there is room: the keeper writes the held points
			}
			if lerr != nil {
				s.limitRefused.Add(uint64(len(lerr.Points)))
				return lerr
			}
			return nil
		}
		if errors.Is(err, tsdb.ErrInvalid) {
			return err
		}
		// The engine failed to write: nothing of the batch is stored.
		s.engineFailed(err)
		why = err
		for i := range sc.ents {
			sc.ents[i].refused, sc.ents[i].isNew = false, false
		}
	}
	if lerr := s.hold(ctx, sc, points, why); lerr != nil {
		s.limitRefused.Add(uint64(len(lerr.Points)))
		return lerr
	}
	s.poke()
	return nil
}

// write appends a resolved batch to the engine. It returns the limit's
// refusals (the rest was stored) or why nothing was stored: an error
// wrapping tsdb.ErrInvalid blames a point, any other the engine.
func (s *Store) write(ctx context.Context, sc *appendScratch, points []tsdb.Point) (*LimitError, error) {
	app := s.db.AppenderV2(ctx)
	lerr, i, err := s.appendAll(ctx, app, sc, points)
	if err != nil {
		rbErr := app.Rollback()
		return nil, errors.Join(s.engineRefusal(i, points, err), rbErr)
	}
	if err := app.Commit(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: commit %d points: %w", s.dir, len(points), err)
	}
	s.learn(sc)
	return lerr, nil
}

// appendAll applies the series limit to the batch and hands every point it
// admits to the engine's appender, returning the index of the point the
// engine refused.
//
// It holds appendMu: the engine (v0.315.0) races when two appenders create
// series at once while a query reads the index (its MemPostings repairs the
// order of a postings list in place, under the reader's feet:
// prometheus/prometheus#15317). One creator at a time assigns series IDs in
// index order, so no repair happens. Only this loop is serialized; the
// commit, which writes the WAL, is not.
func (s *Store) appendAll(ctx context.Context, app storage.AppenderV2, sc *appendScratch, points []tsdb.Point) (*LimitError, int, error) {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	lerr := s.admit(ctx, sc, points)
	for i := range points {
		p := &points[i]
		e := &sc.ents[sc.slot[i]]
		if e.refused {
			continue
		}
		ref, err := app.Append(e.ref, e.lset, 0, p.Time.UnixMilli(), p.Value, nil, nil, storage.AOptions{})
		if err != nil {
			return nil, i, err
		}
		if ref != e.ref {
			// A new series, or one the engine dropped from memory and
			// re-created: either way the cache must learn the reference.
			e.ref, e.learn = ref, true
		}
	}
	return lerr, 0, nil
}

// resolve validates every point and finds its series in the cache, or
// builds its labels, filling sc.ents and sc.slot.
func (s *Store) resolve(sc *appendScratch, points []tsdb.Point) error {
	s.cacheMu.RLock()
	defer s.cacheMu.RUnlock()
	for i := range points {
		p := &points[i]
		if reason := checkSample(p); reason != "" {
			return s.invalidPoint(i, points, reason, nil)
		}
		start := len(sc.keys)
		sc.keys, sc.kvs = appendSeriesKey(sc.keys, sc.kvs[:0], p)
		key := sc.keys[start:]
		// A cached key was validated when first seen; only a new series
		// needs its names checked.
		if e, ok := s.cache.get(key); ok {
			sc.slot = append(sc.slot, int32(len(sc.ents)))
			sc.ents = append(sc.ents, batchEntry{seriesEntry: e, keyStart: start, keyEnd: len(sc.keys)})
			continue
		}
		if j, ok := sc.fresh[string(key)]; ok {
			sc.slot = append(sc.slot, j)
			continue
		}
		if reason := checkSeries(p); reason != "" {
			return s.invalidPoint(i, points, reason, nil)
		}
		sc.sb.Reset()
		sc.sb.Add(nameLabel, p.Metric)
		for _, kv := range sc.kvs {
			sc.sb.Add(kv.k, kv.v)
		}
		// kvs is sorted, but "__name__" must take its place among them
		// ('_' sorts after the capital letters).
		sc.sb.Sort()
		j := int32(len(sc.ents))
		sc.ents = append(sc.ents, batchEntry{
			seriesEntry: seriesEntry{lset: sc.sb.Labels()},
			keyStart:    start, keyEnd: len(sc.keys), learn: true,
		})
		if sc.fresh == nil {
			sc.fresh = map[string]int32{}
		}
		sc.fresh[string(key)] = j
		sc.slot = append(sc.slot, j)
	}
	return nil
}

// learn records in the cache the series of a committed batch that it did
// not know, or knew under a reference the engine no longer uses.
func (s *Store) learn(sc *appendScratch) {
	n := 0
	for i := range sc.ents {
		if sc.ents[i].learn {
			n++
		}
	}
	if n == 0 {
		return
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.cache.len()+n > maxCachedSeries {
		s.cache.clear()
	}
	for i := range sc.ents {
		if e := &sc.ents[i]; e.learn && e.ref != 0 {
			s.cache.set(sc.keys[e.keyStart:e.keyEnd], e.seriesEntry)
		}
	}
}

// invalidPoint is the error refusing the batch because of points[i].
func (s *Store) invalidPoint(i int, points []tsdb.Point, reason string, cause error) error {
	p := &points[i]
	desc := p.Metric + "{" + tagString(p.Tags) + "}"
	if cause != nil {
		return fmt.Errorf("embedded tsdb %s: batch of %d points refused: point %d, %q at %s: %s: %w: %w",
			s.dir, len(points), i, desc, p.Time.UTC().Format(time.RFC3339Nano), reason, cause, tsdb.ErrInvalid)
	}
	return fmt.Errorf("embedded tsdb %s: batch of %d points refused: point %d, %q at %s: %s: %w",
		s.dir, len(points), i, desc, p.Time.UTC().Format(time.RFC3339Nano), reason, tsdb.ErrInvalid)
}

// engineRefusal explains an error of the engine's appender for points[i]:
// those that blame the point wrap tsdb.ErrInvalid, the rest blame the store.
func (s *Store) engineRefusal(i int, points []tsdb.Point, err error) error {
	switch {
	case errors.Is(err, storage.ErrTooOldSample), errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrOutOfOrderSample):
		newest := time.UnixMilli(s.db.Head().MaxTime()).UTC().Format(time.RFC3339Nano)
		return s.invalidPoint(i, points, fmt.Sprintf("older than the out-of-order window (%s before the newest sample, %s)", s.oooWindow, newest), err)
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return s.invalidPoint(i, points, "another value is stored for this timestamp", err)
	}
	return fmt.Errorf("embedded tsdb %s: append point %d of %d: %w", s.dir, i, len(points), err)
}

// appendSeriesKey appends to key the series key of p: the metric, then
// each tag sorted by key, every string preceded by its length, so that
// different series never share a key whatever bytes their names hold. A
// key found in the cache therefore names a series already validated. kvs
// is scratch space for the sorted tags and is returned for reuse.
func appendSeriesKey(key []byte, kvs []tagPair, p *tsdb.Point) ([]byte, []tagPair) {
	for k, v := range p.Tags {
		// Insertion sort: a point has a handful of tags.
		kvs = append(kvs, tagPair{k, v})
		for j := len(kvs) - 1; j > 0 && kvs[j].k < kvs[j-1].k; j-- {
			kvs[j], kvs[j-1] = kvs[j-1], kvs[j]
		}
	}
	key = binary.AppendUvarint(key, uint64(len(p.Metric)))
	key = append(key, p.Metric...)
	for _, kv := range kvs {
		key = binary.AppendUvarint(key, uint64(len(kv.k)))
		key = append(key, kv.k...)
		key = binary.AppendUvarint(key, uint64(len(kv.v)))
		key = append(key, kv.v...)
	}
	return key, kvs
}

// checkSeries says why p's metric or tags are not valid, or "".
func checkSeries(p *tsdb.Point) string {
	if r := checkName(p.Metric); r != "" {
		return "metric name " + r
	}
	if len(p.Tags) == 0 {
		return "no tags (at least one is required)"
	}
	for k, v := range p.Tags {
		if r := checkName(k); r != "" {
			return "tag key " + r
		}
		if k == nameLabel {
			return fmt.Sprintf("tag key %q is reserved for the metric name", k)
		}
		if r := checkName(v); r != "" {
			return fmt.Sprintf("tag %q value %s", k, r)
		}
	}
	return ""
}

// checkSample says why p's timestamp or value cannot be stored, or "".
func checkSample(p *tsdb.Point) string {
	switch {
	case p.Time.IsZero():
		return "no timestamp"
	case p.Time.UnixMilli() < 0:
		return "timestamp before 1970"
	case math.IsNaN(p.Value) || math.IsInf(p.Value, 0):
		return fmt.Sprintf("value %v is not a finite number", p.Value)
	}
	return ""
}

// allowedLow and allowedHigh are bit sets of the ASCII bytes OpenTSDB
// allows in names: bit c of allowedLow for c < 64 ("-./0-9"), bit c-64 of
// allowedHigh for the rest ("A-Z_a-z").
const (
	allowedLow  = 1<<'-' | 1<<'.' | 1<<'/' | (1<<10-1)<<'0'
	allowedHigh = (1<<26-1)<<('A'-64) | 1<<('_'-64) | (1<<26-1)<<('a'-64)
)

// checkName says why s is not a valid OpenTSDB metric name, tag key or tag
// value, or "". OpenTSDB allows ASCII letters and digits, - _ . / and any
// Unicode letter.
func checkName(s string) string {
	if s == "" {
		return "is empty"
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 64 && allowedLow&(1<<c) == 0 || c >= 64 && allowedHigh&(1<<(c-64)) == 0 {
				return fmt.Sprintf("%q has character %q (allowed: letters, digits, - _ . /)", s, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsLetter(r) {
			return fmt.Sprintf("%q has character %q (allowed: letters, digits, - _ . /)", s, r)
		}
		i += n
	}
	return ""
}

// quietInfo passes the engine's logs on with its info level lowered to
// debug. The Prometheus engine logs its routine at info: six lines of
// write-ahead log replay at every start, every compaction and block
// written, which for dmonitor are detail, not events. Its warnings and
// errors keep their level.
type quietInfo struct{ h slog.Handler }

func (q quietInfo) level(l slog.Level) slog.Level {
	if l >= slog.LevelInfo && l < slog.LevelWarn {
		return slog.LevelDebug
	}
	return l
}

func (q quietInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return q.h.Enabled(ctx, q.level(l))
}

func (q quietInfo) Handle(ctx context.Context, r slog.Record) error {
	r.Level = q.level(r.Level)
	return q.h.Handle(ctx, r)
}

func (q quietInfo) WithAttrs(as []slog.Attr) slog.Handler { return quietInfo{q.h.WithAttrs(as)} }
func (q quietInfo) WithGroup(name string) slog.Handler    { return quietInfo{q.h.WithGroup(name)} }
