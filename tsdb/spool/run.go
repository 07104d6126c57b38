package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Run replays the spool into the downstream until ctx is done or the spool
// is closed, and then returns nil. While the downstream is unavailable it
// retries the oldest batch with a backoff between Options.RetryMin and
// RetryMax; a batch the downstream refuses as invalid is dropped, counted in
// Stats.Rejected and logged, because it can never succeed. Only one Run may
// run at a time; Run after Close returns ErrClosed.
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
		if fl := s.inflight; fl != nil && fl.orphaned && fl.pending > 0 {
			// Overflow left these to this Run; the next one starts at
			// the cursor, past them.
			s.stats.Dropped += uint64(fl.pending)
			s.log.Error("spool full: dropped the oldest points", "dir", s.dir, "points", fl.pending, "dropped_total", s.stats.Dropped, "max_bytes", s.opts.MaxBytes)
		}
		s.inflight = nil
		s.runCancel, s.runDone = nil, nil
		s.mu.Unlock()
		close(done)
	}()
	r.run(ctx)
	return nil
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
	sent    uint64 // points delivered since the spool was last empty
}

// batch is what Run is delivering: consecutive records of one segment.
// In combined mode all is sent in one call; after an ErrInvalid refusal
// of a batch of several records, perRecord sends them one at a time, so
// only the records holding the refused points are dropped.
type batch struct {
	seq       uint64
	recs      []rec
	all       []tsdb.Point
	perRecord bool
}

// rec is a record being delivered: its points still to send, how many it
// held, and the offset just past it, where the cursor goes once it is done.
type rec struct {
	pts []tsdb.Point
	n   int64
	end int64
}

func (r *replayer) run(ctx context.Context) {
	s := r.s
	for ctx.Err() == nil {
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

// next reads the batch at the cursor, or returns nil if the spool is
// empty. It reads without holding the lock (records below a segment's
// size never change) and then claims the batch only if the cursor has not
// moved meanwhile, which overflow may do.
func (r *replayer) next() (*batch, error) {
	s := r.s
	for {
		s.mu.Lock()
		for len(s.segs) > 1 && s.cur.off == s.segs[0].size {
			s.advanceLocked()
		}
		seg := s.segs[0]
		if s.cur.off == seg.size {
			r.emptiedLocked()
			s.mu.Unlock()
			return nil, nil
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
			lost := seg.points - s.curPoints
			s.stats.Corrupted += uint64(lost)
			s.log.Error("spool: damaged record; dropping the rest of its segment", "file", s.segPath(at.seq), "points", lost, "err", err)
			s.cur.off, s.curPoints = seg.size, seg.points
			if err := s.saveCursorLocked(); err != nil {
				s.log.Error("spool: cannot save the replay position", "err", err)
			}
			s.mu.Unlock()
			continue
		}
		var n int64
		for _, rc := range b.recs {
			n += rc.n
		}
		s.inflight = &inflight{seq: at.seq, pending: n}
		s.mu.Unlock()
		return b, nil
	}
}

// emptiedLocked runs when every spooled point is delivered: it empties the
// head segment for reuse and reports the end of the replay.
func (r *replayer) emptiedLocked() {
	s := r.s
	if r.sent > 0 {
		s.log.Info("spool replayed", "dir", s.dir, "points", r.sent)
		r.sent = 0
	}
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
	s.bytes -= seg.size
	seg.size, seg.points = 0, 0
	s.cur.off, s.curPoints = 0, 0
	if err := s.saveCursorLocked(); err != nil {
		s.log.Error("spool: cannot save the replay position", "err", err)
	}
}

// read decodes records of segment at.seq from at.off up to limit, until
// ReplayBatch points. It returns the records read before any damage with
// the error; a nil batch if the first record is damaged.
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
		n, payload, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rerr = fmt.Errorf("read %s: %w", r.file.Name(), err)
			break
		}
		start := len(b.all)
		b.all, err = decodePayload(b.all, payload, n)
		if err != nil {
			b.all = b.all[:start]
			rerr = fmt.Errorf("read %s: offset %d: %w: %w", r.file.Name(), rr.off, err, errDamaged)
			break
		}
		b.recs = append(b.recs, rec{pts: b.all[start:len(b.all):len(b.all)], n: int64(n), end: rr.off})
	}
	if len(b.recs) == 0 {
		return nil, rerr
	}
	return b, nil
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
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	err := s.down.Append(cctx, pts)
	cancel()
	if err != nil && ctx.Err() != nil {
		return false // stopping; the batch stays for the next Run
	}
	k := len(b.recs)
	if b.perRecord {
		k = 1
	}
	var partial Partial
	isPartial := err != nil && errors.As(err, &partial)

	switch {
	case err == nil:
		r.commit(k, len(pts), 0)
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
				var n int64
				for _, rc := range b.recs {
					n += rc.n
				}
				b.recs = []rec{{pts: left, n: n, end: b.recs[len(b.recs)-1].end}}
				b.all = left
			}
		}
		if r.orphanLost(err) {
			return true
		}
		if !r.failing {
			s.log.Warn("tsdb unavailable; replay paused", "dir", s.dir, "points", s.Stats().Points, "err", err)
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

	case !b.perRecord && len(b.recs) > 1:
		// Some record holds a point the store refuses; find it.
		b.perRecord = true
		return true

	default:
		s.log.Error("tsdb refused spooled points as invalid; dropping them", "dir", s.dir, "points", len(pts), "err", err)
		r.commit(k, 0, len(pts))
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

func (r *replayer) countDelivered(n int) {
	r.s.mu.Lock()
	r.s.stats.Replayed += uint64(n)
	r.s.mu.Unlock()
	r.sent += uint64(n)
}

// commit marks the first k records of the batch done, with delivered
// points taken and rejected points refused, and saves the cursor past
// them unless overflow already moved it.
func (r *replayer) commit(k, delivered, rejected int) {
	s, b := r.s, r.batch
	var n int64
	for _, rc := range b.recs[:k] {
		n += rc.n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.inflight
	fl.pending -= n
	if !fl.orphaned {
		s.cur.off = b.recs[k-1].end
		s.curPoints += n
		if err := s.saveCursorLocked(); err != nil {
			s.log.Error("spool: cannot save the replay position; a restart may deliver points twice", "err", err)
		}
	}
	s.stats.Replayed += uint64(delivered)
	s.stats.Rejected += uint64(rejected)
	r.sent += uint64(delivered)
	b.recs = b.recs[k:]
	if len(b.recs) == 0 {
		s.inflight = nil
		r.batch = nil
	}
}

// orphanLost handles a failed attempt at a batch whose segment overflow
// deleted meanwhile: rather than hold up newer points for it, it counts
// the batch as dropped. It reports whether it did.
func (r *replayer) orphanLost(err error) bool {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.inflight
	if !fl.orphaned {
		return false
	}
	s.stats.Dropped += uint64(fl.pending)
	s.log.Error("spool full: dropped the oldest points", "dir", s.dir, "points", fl.pending, "dropped_total", s.stats.Dropped, "max_bytes", s.opts.MaxBytes, "err", err)
	s.inflight = nil
	r.batch = nil
	return true
}
