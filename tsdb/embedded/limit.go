package embedded

import (
	"context"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	promtsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/dmonitor/dmonitor/tsdb"
)

// LimitError is returned by Append when Options.MaxSeries refused the
// points of some new series and the rest of the batch was stored (or held,
// see Store.Append). It wraps tsdb.ErrLimit, and its Unstored method
// reports the refused points as tsdb/spool's Partial interface expects: a
// spool drops them, since they would be refused again.
type LimitError struct {
	Dir    string
	Limit  int          // Options.MaxSeries
	Series int          // distinct new series refused
	Points []tsdb.Point // the refused points, in batch order
}

var _ interface {
	error
	Unstored() []tsdb.Point
} = (*LimitError)(nil)

// Error names the limit, how many series and points it refused and the
// first refused series.
func (e *LimitError) Error() string {
	p := e.Points[0]
	return fmt.Sprintf("embedded tsdb %s: series limit %d reached: refused %d new series (%d points), first %s{%s}",
		e.Dir, e.Limit, e.Series, len(e.Points), p.Metric, tagString(p.Tags))
}

// Unwrap returns tsdb.ErrLimit.
func (e *LimitError) Unwrap() error { return tsdb.ErrLimit }

// Unstored returns the refused points.
func (e *LimitError) Unstored() []tsdb.Point { return e.Points }

// headLookup finds series in the engine's head by their labels, through an
// appender it never commits (the engine's only public lookup by labels
// that does not build postings lists).
type headLookup struct {
	app storage.AppenderV2
	get storage.GetRef
}

func newHeadLookup(ctx context.Context, db *promtsdb.DB) *headLookup {
	app := db.Head().AppenderV2(ctx)
	g, _ := app.(storage.GetRef)
	return &headLookup{app: app, get: g}
}

// ref is the head's reference for lset, 0 if the head has no such series.
func (l *headLookup) ref(lset labels.Labels) storage.SeriesRef {
	if l.get == nil {
		return 0
	}
	ref, _ := l.get.GetRef(lset, lset.Hash())
	return ref
}

func (l *headLookup) close() {
	if l != nil {
		_ = l.app.Rollback() // nothing was appended
	}
}

// admit applies Options.MaxSeries to a resolved batch: the series of sc not
// in the cache are looked up in the head (when the head is open), those it
// does not hold are new, and new series past the limit are marked refused.
// New series held in memory count as held. It returns the LimitError for
// the refused points, nil if none. appendMu is held, so concurrent batches
// cannot both take the last places; admit takes buf.mu.
func (s *Store) admit(ctx context.Context, sc *appendScratch, points []tsdb.Point) *LimitError {
	if s.maxSeries <= 0 {
		return nil
	}
	s.buf.mu.Lock()
	defer s.buf.mu.Unlock()
	unknown := 0
	for i := range sc.ents {
		if sc.ents[i].ref == 0 {
			unknown++
		}
	}
	if unknown == 0 {
		return nil
	}
	held := s.buf.fresh
	if s.db != nil {
		held += int(s.db.Head().NumSeries())
	}
	if held+unknown <= s.maxSeries {
		// Room for all of them, new or not; which are new matters only to
		// the buffer's count.
		if s.db == nil {
			for i := range sc.ents {
				sc.ents[i].isNew = sc.ents[i].ref == 0
			}
			return nil
		}
	}
	var look *headLookup
	if s.db != nil {
		look = newHeadLookup(ctx, s.db)
		defer look.close()
	}
	var lerr *LimitError
	for i := range sc.ents {
		e := &sc.ents[i]
		if e.ref != 0 {
			continue
		}
		if look != nil {
			if ref := look.ref(e.lset); ref != 0 {
				// In the head but not in the cache: not new. The engine
				// finds it by its labels; the cache learns it on commit.
				continue
			}
		}
		if _, ok := s.buf.series[string(sc.keys[e.keyStart:e.keyEnd])]; ok {
			continue // held in memory already, counted in base
		}
		e.isNew = true
		if held < s.maxSeries {
			held++
			continue
		}
		e.refused = true
		if lerr == nil {
			lerr = &LimitError{Dir: s.dir, Limit: s.maxSeries}
		}
		lerr.Series++
	}
	if lerr == nil {
		return nil
	}
	for i := range points {
		if sc.ents[sc.slot[i]].refused {
			lerr.Points = append(lerr.Points, points[i])
		}
	}
	return lerr
}

// CountNew returns how many distinct series among points the store does
// not hold yet, neither in the engine nor in memory: how many an Append of
// them would create. Points that Append would refuse as invalid are not
// counted. It costs a map lookup per point of a known series and a label
// build and head lookup per other series. While the engine is not open,
// every series the store has not written or held since Open counts as new.
func (s *Store) CountNew(points []tsdb.Point) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0
	}
	var (
		key  []byte
		kvs  []tagPair
		seen map[string]bool
		look *headLookup
		sb   labels.ScratchBuilder
		n    int
	)
	defer func() { look.close() }()
	for i := range points {
		p := &points[i]
		key, kvs = appendSeriesKey(key[:0], kvs[:0], p)
		s.cacheMu.RLock()
		_, cached := s.cache.get(key)
		s.cacheMu.RUnlock()
		if cached || seen[string(key)] {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[string(key)] = true
		if checkSeries(p) != "" {
			continue
		}
		s.buf.mu.Lock()
		_, held := s.buf.series[string(key)]
		s.buf.mu.Unlock()
		if held {
			continue
		}
		if s.db != nil {
			if look == nil {
				look = newHeadLookup(context.Background(), s.db)
			}
			sb.Reset()
			sb.Add(nameLabel, p.Metric)
			for _, kv := range kvs {
				sb.Add(kv.k, kv.v)
			}
			sb.Sort()
			if look.ref(sb.Labels()) != 0 {
				continue
			}
		}
		n++
	}
	return n
}

// Series returns the number of series in the engine's memory (its head
// block: the series written in the last few hours, including some no longer
// written to, until the engine's next compaction lets them go), 0 while the
// engine is not open. MaxSeries is checked against this number plus the new
// series held in memory.
func (s *Store) Series() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return 0
	}
	return int(s.db.Head().NumSeries())
}
