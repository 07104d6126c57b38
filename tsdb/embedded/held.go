package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/dmonitor/dmonitor/tsdb"
)

// drainBatch is how many held points one engine transaction writes when
// the keeper catches up: a few milliseconds of work, so an Append that
// needs the buffer meanwhile waits no longer than that.
const drainBatch = 10000

// heldSeries is a series with points held in memory.
type heldSeries struct {
	key  string // see appendSeriesKey
	lset labels.Labels
	n    int  // its points in the buffer
	new  bool // not in the engine when first held: counts towards MaxSeries
}

type heldPoint struct {
	ser *heldSeries
	t   int64 // milliseconds
	v   float64
}

// memBuffer holds points Append took while the disk was short of space or
// the engine not open, oldest first, at most max of them.
type memBuffer struct {
	max int

	mu     sync.Mutex
	pts    []heldPoint // pts[head:] are held
	head   int
	series map[string]*heldSeries
	fresh  int  // series in the buffer with new set
	lossy  bool // dropped points in this episode (logged once)
	// why is why points are held, for Stats; nil when none are.
	why error

	n       atomic.Int64 // len(pts) - head, read without mu
	dropped atomic.Uint64
}

func (b *memBuffer) len() int { return int(b.n.Load()) }

// push holds one point, dropping the oldest past max; it reports whether
// it dropped one. b.mu is held.
func (b *memBuffer) push(ser *heldSeries, t int64, v float64) bool {
	dropped := false
	if len(b.pts)-b.head >= b.max {
		b.pop(1)
		b.dropped.Add(1)
		dropped = true
	}
	if b.head > 0 && b.head >= len(b.pts)/2 && len(b.pts) == cap(b.pts) {
		// Slide down instead of growing: the slice stays near max.
		n := copy(b.pts, b.pts[b.head:])
		clear(b.pts[n:])
		b.pts, b.head = b.pts[:n], 0
	}
	b.pts = append(b.pts, heldPoint{ser: ser, t: t, v: v})
	ser.n++
	b.n.Store(int64(len(b.pts) - b.head))
	return dropped
}

// pop releases the k oldest points. b.mu is held.
func (b *memBuffer) pop(k int) {
	for i := b.head; i < b.head+k; i++ {
		ser := b.pts[i].ser
		b.pts[i] = heldPoint{}
		if ser.n--; ser.n == 0 {
			delete(b.series, ser.key)
			if ser.new {
				b.fresh--
			}
		}
	}
	b.head += k
	if b.head == len(b.pts) {
		b.pts, b.head = b.pts[:0], 0
	}
	b.n.Store(int64(len(b.pts) - b.head))
}

// seriesFor returns the buffer's entry for a series, creating it. b.mu is
// held.
func (b *memBuffer) seriesFor(key []byte, lset labels.Labels, isNew bool) *heldSeries {
	if ser, ok := b.series[string(key)]; ok {
		return ser
	}
	if b.series == nil {
		b.series = map[string]*heldSeries{}
	}
	ser := &heldSeries{key: string(key), lset: lset, new: isNew}
	b.series[ser.key] = ser
	if isNew {
		b.fresh++
	}
	return ser
}

// hold puts the points of a resolved batch in the buffer, except those
// whose series admit refuses (see Store.admit), which it returns. why says
// why they are not written now. s.mu is held for reading.
func (s *Store) hold(ctx context.Context, sc *appendScratch, points []tsdb.Point, why error) *LimitError {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	lerr := s.admit(ctx, sc, points)
	b := &s.buf
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.why == nil {
		s.log.Warn("embedded tsdb: holding points in memory until they can be written", "dir", s.dir,
			"max_points", b.max, "reason", why)
	}
	b.why = why
	lost := 0
	for i := range points {
		e := &sc.ents[sc.slot[i]]
		if e.refused {
			continue
		}
		ser := b.seriesFor(sc.keys[e.keyStart:e.keyEnd], e.lset, e.isNew)
		if b.push(ser, points[i].Time.UnixMilli(), points[i].Value) {
			lost++
		}
	}
	if lost > 0 && !b.lossy {
		b.lossy = true
		s.log.Error("embedded tsdb: memory buffer full; dropping the oldest held points until the disk has room", "dir", s.dir,
			"max_points", b.max, "reason", why)
	}
	return lerr
}

// drain writes held points to the engine, oldest first, in transactions of
// drainBatch, while there is room. Points the engine refuses now (older
// than the out-of-order window by the time they are written, another value
// already stored for the time, or a new series past MaxSeries) are dropped
// and counted.
func (s *Store) drain(ctx context.Context) {
	for s.buf.len() > 0 && ctx.Err() == nil {
		if !s.drainOnce(ctx) {
			return
		}
	}
}

// drainOnce writes one transaction of held points and reports whether it
// did.
func (s *Store) drainOnce(ctx context.Context) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.db == nil || s.failed.Load() {
		return false
	}
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	b := &s.buf
	b.mu.Lock()
	defer b.mu.Unlock()
	k := min(len(b.pts)-b.head, drainBatch)
	if k == 0 {
		return false
	}
	if !s.space.room(int64(k) * bytesPerPoint) {
		return false
	}
	pts := b.pts[b.head : b.head+k]
	refused, err := s.writeHeld(ctx, pts)
	if err != nil {
		s.engineFailed(err)
		return false
	}
	b.pop(k)
	if refused > 0 {
		b.dropped.Add(uint64(refused))
		s.log.Error("embedded tsdb: the engine refused held points when they were written late; dropped", "dir", s.dir, "points", refused)
	}
	if b.len() == 0 {
		s.log.Info("embedded tsdb: every held point is written", "dir", s.dir, "dropped_total", b.dropped.Load())
		b.why, b.lossy = nil, false
	}
	return true
}

// writeHeld appends pts to the engine in one transaction, skipping those
// it refuses, and returns how many it skipped; an error is the engine's
// failure to write, and nothing was stored. appendMu is held.
func (s *Store) writeHeld(ctx context.Context, pts []heldPoint) (int, error) {
	app := s.db.AppenderV2(ctx)
	var look *headLookup
	defer func() { look.close() }()
	refs := make(map[*heldSeries]storage.SeriesRef)
	s.cacheMu.RLock()
	for _, p := range pts {
		if _, ok := refs[p.ser]; !ok {
			e, _ := s.cache.get([]byte(p.ser.key))
			refs[p.ser] = e.ref
		}
	}
	s.cacheMu.RUnlock()
	refused := 0
	for _, p := range pts {
		ref := refs[p.ser]
		if ref == 0 && s.maxSeries > 0 && s.db.Head().NumSeries() >= uint64(s.maxSeries) {
			if look == nil {
				look = newHeadLookup(ctx, s.db)
			}
			if ref = look.ref(p.ser.lset); ref == 0 {
				s.limitRefused.Add(1)
				refused++
				continue
			}
		}
		got, err := app.Append(ref, p.ser.lset, 0, p.t, p.v, nil, nil, storage.AOptions{})
		if err != nil {
			if pointRefusal(err) {
				refused++
				continue
			}
			return 0, errors.Join(fmt.Errorf("embedded tsdb %s: append held point: %w", s.dir, err), app.Rollback())
		}
		refs[p.ser] = got
	}
	if err := app.Commit(); err != nil {
		return 0, fmt.Errorf("embedded tsdb %s: commit %d held points: %w", s.dir, len(pts), err)
	}
	s.cacheMu.Lock()
	for ser, ref := range refs {
		if ref != 0 {
			s.cache.set([]byte(ser.key), seriesEntry{ref: ref, lset: ser.lset})
		}
	}
	s.cacheMu.Unlock()
	return refused, nil
}

// pointRefusal says whether err is the engine refusing a sample for its
// time or value, rather than failing.
func pointRefusal(err error) bool {
	return errors.Is(err, storage.ErrTooOldSample) || errors.Is(err, storage.ErrOutOfBounds) ||
		errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrDuplicateSampleForTimestamp)
}

// Stats is what a Store reports about its health, for gauges and alerts.
type Stats struct {
	// Series is the number of series in the engine's memory (see
	// Store.Series).
	Series int
	// Buffered is the number of points held in memory, taken by Append
	// but not yet written to the engine.
	Buffered int
	// Dropped counts the points Append returned nil for that were then
	// lost: the oldest held points past Options.MemoryPoints, and held
	// points the engine refused when they were finally written.
	Dropped uint64
	// LimitRefused counts the points refused for a new series past
	// Options.MaxSeries, by Append or when held points were written.
	LimitRefused uint64
	// DiskFull says the free space was below Options.MinFreeBytes at the
	// last check, or the engine's last write failed.
	DiskFull bool
	// DiskErr is why points are being held in memory (the free space, the
	// engine's write error, or why the engine is not open); nil when the
	// store writes straight to the engine.
	DiskErr error
	// FreeBytes is the free space at the last check.
	FreeBytes uint64
	// Open says the engine is open; while it is not, queries fail with an
	// error wrapping tsdb.ErrUnavailable.
	Open bool
}

// Stats returns the store's counters and state.
func (s *Store) Stats() Stats {
	st := Stats{
		Buffered:     s.buf.len(),
		Dropped:      s.buf.dropped.Load(),
		LimitRefused: s.limitRefused.Load(),
		FreeBytes:    s.space.lastFree(),
	}
	// Ask the file system (a statfs is cheap enough for a gauge), leaving
	// the append path's budget alone.
	if free, err := freeBytes(s.dir); err == nil {
		st.FreeBytes = free
	}
	st.DiskFull = st.FreeBytes < s.reserve || s.failed.Load()
	if e := s.notOpen.Load(); e != nil && errors.Is(*e, errNoRoom) {
		st.DiskFull = true
	}
	s.mu.RLock()
	if s.db != nil {
		st.Open = true
		st.Series = int(s.db.Head().NumSeries())
	}
	s.mu.RUnlock()
	s.buf.mu.Lock()
	st.DiskErr = s.buf.why
	s.buf.mu.Unlock()
	if e := s.notOpen.Load(); e != nil && st.DiskErr == nil {
		st.DiskErr = *e
	}
	return st
}
