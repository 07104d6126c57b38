package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Run replays the spool into the downstream until ctx is done or the spool
// is closed, and then returns nil. While the downstream is unavailable it
// retries the oldest batch with a backoff between Options.RetryMin and
// RetryMax; a batch the downstream refuses as invalid is dropped, counted in
// Stats.Rejected (AnnotationsRejected) and logged, because it can never
// succeed. Entries held in memory while the disk cannot take them are
// written to disk as soon as it does (Run tries again before each batch),
// or delivered from memory once everything on disk is. Only one Run may run
// at a time; Run after Close returns ErrClosed.
func (s *Spool) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.runCancel != nil {
		s.mu.Unlock()
		return fmt.Errorf("spool %s: Run is already running", s.dir)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.runCancel, s.runDone = cancel, done
	s.mu.Unlock()

	r := &replayer{s: s}
	defer func() {
		cancel()
		r.closeFile()
		s.mu.Lock()
		if fl := s.inflight; fl != nil && fl.orphaned && !fl.pending.zero() {
			// Overflow left these to this Run; the next one starts at
			// the cursor, or memory's oldest, past them.
			s.droppedInflightLocked(fl, nil)
		}
		s.inflight = nil
		s.runCancel, s.runDone = nil, nil
		s.mu.Unlock()
		close(done)
	}()
	r.run(ctx)
	return nil
}

// droppedInflightLocked counts the entries of an orphaned batch that were
// not delivered as dropped, and logs them.
func (s *Spool) droppedInflightLocked(fl *inflight, cause error) {
	s.countDroppedLocked(fl.pending, fl.mem)
	where := "max_bytes"
	limit := s.opts.MaxBytes
	if fl.mem {
		where, limit = "memory_bytes", s.opts.MemoryBytes
	}
	s.log.Error("spool full: dropped the oldest entries", "dir", s.dir, "points", fl.pending.points, "annotations", fl.pending.anns, "dropped_total", s.stats.Dropped, where, limit, "err", cause)
}

// replayer is Run's state. Only Run's goroutine touches it.
type replayer struct {
	s       *Spool
	file    *os.File // segment fileSeq, for reading
	fileSeq uint64
	br      *bufio.Reader
	batch   *batch
	failing bool // the last attempt found the downstream unavailable
	backoff time.Duration
	sent    tally // entries delivered since the spool was last empty
}

// batch is what Run is delivering: consecutive records of one segment, or
// (mem) the oldest records held in memory. It holds points, or one
// annotation (ann). In combined mode all is sent in one call; after an
// ErrInvalid refusal of a batch of several records, perRecord sends them
// one at a time, so only the records holding the refused points are
// dropped.
type batch struct {
	seq       uint64
	mem       bool
	recs      []rec
	all       []tsdb.Point
	ann       *tsdb.Annotation
	perRecord bool
}

// rec is a record being delivered: its points still to send, how many
// entries it held, and the offset just past it, where the cursor goes once
// it is done (for a record on disk).
type rec struct {
	pts []tsdb.Point
	n   tally
	end int64
}

func (r *replayer) run(ctx context.Context) {
	s := r.s
	for ctx.Err() == nil {
		// Memory first goes to disk, whenever it takes it: a process
		// killed loses what is in memory, not what is on disk.
		s.mu.Lock()
		if len(s.mem.recs) > 0 {
			s.flushLocked()
		}
		s.mu.Unlock()
		if r.batch == nil {
			b, err := r.next()
			if err != nil {
				s.log.Error("spool: cannot read for replay", "dir", s.dir, "err", err)
				r.wait(ctx, r.nextBackoff())
				continue
			}
			if b == nil {
				select {
				case <-ctx.Done():
				case <-s.wake:
				}
				continue
			}
			r.batch = b
		}
		if !r.deliver(ctx) && ctx.Err() == nil {
			r.wait(ctx, r.nextBackoff())
		}
	}
}

func (r *replayer) nextBackoff() time.Duration {
	o := r.s.opts
	if r.backoff == 0 {
		r.backoff = o.RetryMin
	} else {
		r.backoff = min(2*r.backoff, o.RetryMax)
	}
	return r.backoff
}

func (r *replayer) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (r *replayer) closeFile() {
	if r.file != nil {
		r.file.Close()
		r.file = nil
	}
}

// next reads the batch at the cursor, or from memory once the disk holds
// nothing more, or returns nil if the spool is empty. It reads from disk
// without holding the lock (records below a segment's size never change)
// and then claims the batch only if the cursor has not moved meanwhile,
// which overflow may do.
func (r *replayer) next() (*batch, error) {
	s := r.s
	for {
		s.mu.Lock()
		for len(s.segs) > 1 && s.cur.off == s.segs[0].size {
			s.advanceLocked()
		}
		seg := s.segs[0]
		if s.cur.off == seg.size {
			// Everything on disk is delivered: empty the head, which
			// also frees the space for what memory holds.
			r.drainedLocked()
			if len(s.mem.recs) == 0 {
				r.emptiedLocked()
				s.mu.Unlock()
				return nil, nil
			}
			held := len(s.mem.recs)
			if s.flushLocked(); len(s.mem.recs) < held {
				s.mu.Unlock()
				continue
			}
			b, recs := r.claimMemLocked()
			s.mu.Unlock()
			if err := b.decode(recs); err != nil {
				r.lostMem(len(recs), err)
				continue
			}
			return b, nil
		}
		at, limit := s.cur, seg.size
		s.mu.Unlock()

		b, err := r.read(at, limit)
		if err != nil && !errors.Is(err, errDamaged) {
			return nil, err
		}

		s.mu.Lock()
		if s.cur != at {
			s.mu.Unlock()
			continue
		}
		if b == nil {
			// Damage at the cursor. Records are checked at Open, so
			// this is the disk failing under a running spool; what
			// follows in the segment cannot be read as records.
			lost := seg.n.minus(s.curN)
			s.stats.Corrupted += uint64(lost.points)
			s.stats.AnnotationsDropped += uint64(lost.anns)
			s.log.Error("spool: damaged record; dropping the rest of its segment", "file", s.segPath(at.seq), "points", lost.points, "annotations", lost.anns, "err", err)
			s.cur.off, s.curN = seg.size, seg.n
			if err := s.saveCursorLocked(); err != nil {
				s.log.Error("spool: cannot save the replay position", "err", err)
			}
			s.mu.Unlock()
			continue
		}
		var n tally
		for _, rc := range b.recs {
			n = n.plus(rc.n)
		}
		s.inflight = &inflight{seq: at.seq, pending: n}
		s.mu.Unlock()
		return b, nil
	}
}

// claimMemLocked claims the oldest records held in memory as the next
// batch: one annotation, or points up to ReplayBatch. It returns the batch
// to decode them into and the records, whose bytes never change.
func (r *replayer) claimMemLocked() (*batch, []memRec) {
	s := r.s
	recs := s.mem.recs
	k, points := 1, recs[0].n
	if recs[0].k == kindPoints {
		for k < len(recs) && recs[k].k == kindPoints && points < s.opts.ReplayBatch {
			points += recs[k].n
			k++
		}
	}
	var n tally
	for _, mr := range recs[:k] {
		n = n.plus(tallyOf(mr.k, mr.n))
	}
	s.inflight = &inflight{mem: true, memRecs: k, pending: n}
	return &batch{mem: true}, slices.Clone(recs[:k])
}

// decode decodes records held in memory into b.
func (b *batch) decode(recs []memRec) error {
	for _, mr := range recs {
		payload := mr.b[headerSize:]
		if mr.k == kindAnnotation {
			a, err := decodeAnnotation(payload)
			if err != nil {
				return err
			}
			b.ann = &a
			b.recs = append(b.recs, rec{n: tally{anns: 1}})
			continue
		}
		start := len(b.all)
		var err error
		if b.all, err = decodePayload(b.all, payload, mr.n); err != nil {
			return err
		}
		b.recs = append(b.recs, rec{pts: b.all[start:len(b.all):len(b.all)], n: tally{points: int64(mr.n)}})
	}
	return nil
}

// lostMem gives up k records claimed from memory that do not decode, which
// only a bug can cause: rather than stop the replay on them, they are
// counted as corrupted and dropped.
func (r *replayer) lostMem(k int, err error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.inflight
	s.inflight = nil
	if fl.orphaned {
		s.droppedInflightLocked(fl, err)
		return
	}
	for range k {
		s.mem.pop()
	}
	s.stats.Corrupted += uint64(fl.pending.points)
	s.stats.AnnotationsDropped += uint64(fl.pending.anns)
	s.log.Error("spool: entries held in memory do not decode; dropping them", "dir", s.dir, "points", fl.pending.points, "annotations", fl.pending.anns, "err", err)
}

// drainedLocked empties the head segment for reuse once everything on disk
// is delivered.
func (r *replayer) drainedLocked() {
	s := r.s
	seg := s.segs[0]
	if seg.size == 0 {
		return
	}
	// Truncate before moving the cursor to 0: a crash in between leaves
	// the cursor past the end, which Open reads as all delivered.
	if err := s.head.Truncate(0); err != nil {
		s.log.Error("spool: cannot empty the head segment", "file", s.head.Name(), "err", err)
		return
	}
	s.disk.torn = false
	s.bytes -= seg.size
	seg.size, seg.n = 0, tally{}
	s.cur.off, s.curN = 0, tally{}
	if err := s.saveCursorLocked(); err != nil {
		s.log.Error("spool: cannot save the replay position", "err", err)
	}
}

// emptiedLocked runs when every spooled entry is delivered, and reports the
// end of the replay.
func (r *replayer) emptiedLocked() {
	if !r.sent.zero() {
		r.s.log.Info("spool replayed", "dir", r.s.dir, "points", r.sent.points, "annotations", r.sent.anns)
		r.sent = tally{}
	}
}

// read decodes records of segment at.seq from at.off up to limit: one
// annotation, or points records until ReplayBatch points or an
// annotation. It returns the records read before any damage with the
// error; a nil batch if the first record is damaged.
func (r *replayer) read(at position, limit int64) (*batch, error) {
	s := r.s
	if r.file == nil || r.fileSeq != at.seq {
		r.closeFile()
		f, err := os.Open(s.segPath(at.seq))
		if err != nil {
			return nil, err
		}
		r.file, r.fileSeq = f, at.seq
	}
	rr := newRecordReader(r.file, at.off, limit, r.br)
	r.br = rr.br
	b := &batch{seq: at.seq}
	var rerr error
	for len(b.all) < s.opts.ReplayBatch {
		k, n, payload, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rerr = fmt.Errorf("read %s: %w", r.file.Name(), err)
			break
		}
		if k == kindAnnotation {
			if len(b.recs) > 0 {
				break // the next batch's; read again from the cursor
			}
			a, err := decodeAnnotation(payload)
			if err != nil {
				rerr = fmt.Errorf("read %s: offset %d: %w: %w", r.file.Name(), rr.off, err, errDamaged)
				break
			}
			b.ann = &a
			b.recs = append(b.recs, rec{n: tally{anns: 1}, end: rr.off})
			break
		}
		start := len(b.all)
		b.all, err = decodePayload(b.all, payload, n)
		if err != nil {
			b.all = b.all[:start]
			rerr = fmt.Errorf("read %s: offset %d: %w: %w", r.file.Name(), rr.off, err, errDamaged)
			break
		}
		b.recs = append(b.recs, rec{pts: b.all[start:len(b.all):len(b.all)], n: tally{points: int64(n)}, end: rr.off})
	}
	if len(b.recs) == 0 {
		return nil, rerr
	}
	return b, nil
}

// call makes one delivery call downstream for what the batch sends now.
func (r *replayer) call(ctx context.Context, pts []tsdb.Point) error {
	s, b := r.s, r.batch
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if b.ann != nil {
		if s.ann == nil {
			return fmt.Errorf("%T: %w", s.down, ErrNoAnnotations)
		}
		return s.ann.PutAnnotation(cctx, *b.ann)
	}
	return s.down.Append(cctx, pts)
}

// deliver sends the batch, or its first record in perRecord mode, and
// reports whether the downstream answered (took it, or refused it for
// good); false means wait and retry.
func (r *replayer) deliver(ctx context.Context) bool {
	s, b := r.s, r.batch
	pts := b.all
	if b.perRecord {
		pts = b.recs[0].pts
	}
	err := r.call(ctx, pts)
	if err != nil && ctx.Err() != nil {
		return false // stopping; the batch stays for the next Run
	}
	k := len(b.recs)
	if b.perRecord {
		k = 1
	}
	entries := len(pts)
	if b.ann != nil {
		entries = 1
	}
	var partial Partial
	isPartial := err != nil && b.ann == nil && errors.As(err, &partial)

	switch {
	case err == nil:
		r.commit(k, entries, 0)
		r.recovered()
		return true

	case retryable(err):
		if isPartial {
			// Send only what is left next time; in combined mode the
			// rest of the batch becomes one record.
			left := partial.Unstored()
			if len(left) == 0 {
				r.commit(k, len(pts), 0)
				return true
			}
			r.countDelivered(len(pts) - len(left))
			if b.perRecord {
				b.recs[0].pts = left
			} else {
				var n tally
				for _, rc := range b.recs {
					n = n.plus(rc.n)
				}
				b.recs = []rec{{pts: left, n: n, end: b.recs[len(b.recs)-1].end}}
				b.all = left
			}
		}
		if r.orphanLost(err) {
			return true
		}
		if b.mem && !isPartial {
			// Let the batch go back to memory while waiting, so a disk
			// that takes writes again gets it and what follows it.
			r.release()
		}
		if !r.failing {
			st := s.Stats()
			s.log.Warn("tsdb unavailable; replay paused", "dir", s.dir, "points", st.Points+st.Buffered, "annotations", st.Annotations+st.BufferedAnnotations, "err", err)
			r.failing = true
		} else {
			s.log.Debug("tsdb still unavailable", "dir", s.dir, "err", err)
		}
		return false

	case isPartial:
		refused := partial.Unstored()
		s.log.Error("tsdb refused spooled points as invalid; dropping them", "dir", s.dir, "points", len(refused), "err", err)
		r.commit(k, len(pts)-len(refused), len(refused))
		r.recovered()
		return true

	case b.ann == nil && !b.perRecord && len(b.recs) > 1:
		// Some record holds a point the store refuses; find it.
		b.perRecord = true
		return true

	default:
		if b.ann != nil {
			s.log.Error("tsdb refused a spooled annotation; dropping it", "dir", s.dir, "tsuid", b.ann.TSUID, "start", b.ann.Start, "description", b.ann.Description, "err", err)
		} else {
			s.log.Error("tsdb refused spooled points as invalid; dropping them", "dir", s.dir, "points", len(pts), "err", err)
		}
		r.commit(k, 0, entries)
		r.recovered()
		return true
	}
}

// recovered notes a downstream answer after an outage.
func (r *replayer) recovered() {
	if r.failing {
		r.s.log.Info("tsdb available again; replaying the spool", "dir", r.s.dir)
		r.failing = false
	}
	r.backoff = 0
}

// release gives up a batch claimed from memory without delivering it: its
// records stay where they are, the oldest held.
func (r *replayer) release() {
	s := r.s
	s.mu.Lock()
	s.inflight = nil
	s.mu.Unlock()
	r.batch = nil
}

func (r *replayer) countDelivered(n int) {
	r.s.mu.Lock()
	r.s.stats.Replayed += uint64(n)
	r.s.mu.Unlock()
	r.sent.points += int64(n)
}

// commit marks the first k records of the batch done, with delivered
// entries taken and rejected entries refused, and moves past them: the
// cursor, saved, for records on disk, unless overflow already moved it;
// memory's oldest records, unless overflow already let them go.
func (r *replayer) commit(k, delivered, rejected int) {
	s, b := r.s, r.batch
	var n tally
	for _, rc := range b.recs[:k] {
		n = n.plus(rc.n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.inflight
	fl.pending = fl.pending.minus(n)
	switch {
	case fl.orphaned:
	case fl.mem:
		for range k {
			s.mem.pop()
		}
		fl.memRecs -= k
	default:
		s.cur.off = b.recs[k-1].end
		s.curN = s.curN.plus(n)
		if err := s.saveCursorLocked(); err != nil {
			s.log.Error("spool: cannot save the replay position; a restart may deliver entries twice", "err", err)
		}
	}
	if b.ann != nil {
		s.stats.AnnotationsReplayed += uint64(delivered)
		s.stats.AnnotationsRejected += uint64(rejected)
		r.sent.anns += int64(delivered)
	} else {
		s.stats.Replayed += uint64(delivered)
		s.stats.Rejected += uint64(rejected)
		r.sent.points += int64(delivered)
	}
	b.recs = b.recs[k:]
	if len(b.recs) == 0 {
		s.inflight = nil
		r.batch = nil
	}
}

// orphanLost handles a failed attempt at a batch that overflow dropped
// meanwhile: rather than hold up newer entries for it, it counts the batch
// as dropped. It reports whether it did.
func (r *replayer) orphanLost(err error) bool {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.inflight
	if !fl.orphaned {
		return false
	}
	s.droppedInflightLocked(fl, err)
	s.inflight = nil
	r.batch = nil
	return true
}
