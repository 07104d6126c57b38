package statuspage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/tsdb"
)

// Querier reads the TSDB; tsdb.Store satisfies it (and rules.Querier is
// the same method).
type Querier interface {
	Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error)
}

var _ Querier = tsdb.Store(nil)

// target names a host×check as the TSDB tags it: sanitized.
type target struct{ host, check string }

func tagged(host, check string) target {
	return target{tsdb.SanitizeTag(host), tsdb.SanitizeTag(check)}
}

// alertPoint is one stored alert transition: the rule's state from At on.
type alertPoint struct {
	rule  string
	at    time.Time
	state int
}

// history is what the graphs of one window are drawn from, read with one
// query per metric for every target at once.
type history struct {
	start, end time.Time
	step       time.Duration
	buckets    int
	// status holds, per target and observer, each bucket's worst status
	// (the downsampled max), -1 where there is none.
	status map[target]map[string][]int8
	// duration holds, per target, each bucket's plugin run time in
	// seconds (the slowest observer's average), NaN-free: has says which
	// buckets have one.
	duration map[target][]float64
	has      map[target][]bool
	alerts   map[target][]alertPoint
	// err is the first failed query, shown instead of the graphs it
	// spoils; the others still draw.
	err error
}

// window is the range of one graph: how far back, in how many buckets.
type window struct {
	span    time.Duration
	buckets int
}

// step is the width of one bucket, at least a second (the TSDB's
// precision is a millisecond, but no check runs more often).
func (w window) step() time.Duration {
	return max((w.span / time.Duration(w.buckets)).Truncate(time.Second), time.Second)
}

// readHistory reads the history of w ending at now: the status of every
// observer, the plugins' run time and the alert transitions, of the one
// target only (filter) or of all. The three queries run at once, so a
// remote OpenTSDB costs one round trip, not three.
func readHistory(ctx context.Context, q Querier, now time.Time, w window, only *target) *history {
	step := w.step()
	end := now.Truncate(step).Add(step)
	start := end.Add(-time.Duration(w.buckets) * step)
	h := &history{
		start: start, end: end, step: step, buckets: w.buckets,
		status:   make(map[target]map[string][]int8),
		duration: make(map[target][]float64),
		has:      make(map[target][]bool),
		alerts:   make(map[target][]alertPoint),
	}
	var filters []tsdb.Filter
	if only != nil {
		filters = []tsdb.Filter{
			{Type: tsdb.LiteralOr, Tag: "host", Expr: only.host},
			{Type: tsdb.LiteralOr, Tag: "check", Expr: only.check},
		}
	}
	// End is inclusive in the store; the last bucket ends at end.
	base := tsdb.Query{Filters: filters, Start: start, End: end.Add(-time.Millisecond), Aggregator: "none"}

	var status, duration, alerts []tsdb.Series
	var errs [3]error
	var wg sync.WaitGroup
	wg.Go(func() {
		sq := base
		sq.Metric = observer.MetricCheckStatus
		sq.Downsample = &tsdb.Downsample{Interval: step, Aggregator: "max"}
		status, errs[0] = q.Query(ctx, sq)
	})
	wg.Go(func() {
		// One series per target: the slowest observer's average run time
		// in each bucket. The group-by filters keep host and check apart.
		dq := base
		dq.Metric = observer.MetricCheckDuration
		dq.Filters = []tsdb.Filter{
			{Type: tsdb.Wildcard, Tag: "host", Expr: "*", GroupBy: true},
			{Type: tsdb.Wildcard, Tag: "check", Expr: "*", GroupBy: true},
		}
		if only != nil {
			dq.Filters[0].Type, dq.Filters[0].Expr = tsdb.LiteralOr, only.host
			dq.Filters[1].Type, dq.Filters[1].Expr = tsdb.LiteralOr, only.check
		}
		dq.Aggregator = "max"
		dq.Downsample = &tsdb.Downsample{Interval: step, Aggregator: "avg"}
		duration, errs[1] = q.Query(ctx, dq)
	})
	wg.Go(func() {
		// Transitions are few (one point per change of state): read them
		// as they are.
		aq := base
		aq.Metric = observer.MetricAlertState
		alerts, errs[2] = q.Query(ctx, aq)
	})
	wg.Wait()
	h.err = errors.Join(errs[:]...)

	for _, s := range status {
		t := target{s.Tags["host"], s.Tags["check"]}
		obs := s.Tags["observer"]
		byObs := h.status[t]
		if byObs == nil {
			byObs = make(map[string][]int8)
			h.status[t] = byObs
		}
		b := byObs[obs]
		if b == nil {
			b = make([]int8, w.buckets)
			for i := range b {
				b[i] = -1
			}
			byObs[obs] = b
		}
		for _, p := range s.Samples {
			if i, ok := h.bucket(p.Time); ok {
				b[i] = max(b[i], int8(min(max(p.Value, 0), 3)))
			}
		}
	}
	for _, s := range duration {
		t := target{s.Tags["host"], s.Tags["check"]}
		d, has := h.duration[t], h.has[t]
		if d == nil {
			d, has = make([]float64, w.buckets), make([]bool, w.buckets)
			h.duration[t], h.has[t] = d, has
		}
		for _, p := range s.Samples {
			if i, ok := h.bucket(p.Time); ok {
				d[i], has[i] = max(d[i], p.Value), true
			}
		}
	}
	for _, s := range alerts {
		t := target{s.Tags["host"], s.Tags["check"]}
		for _, p := range s.Samples {
			h.alerts[t] = append(h.alerts[t], alertPoint{rule: s.Tags["rule"], at: p.Time, state: int(p.Value)})
		}
	}
	return h
}

// bucket returns the index of the bucket t falls in.
func (h *history) bucket(t time.Time) (int, bool) {
	if t.Before(h.start) || !t.Before(h.end) {
		return 0, false
	}
	return int(t.Sub(h.start) / h.step), true
}

// historyCache keeps each window's history for a few seconds, so that
// the page's refreshes, and several people looking at once, cost the TSDB
// one set of queries per window and TTL, not one per request.
type historyCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[cacheKey]cached
}

type cacheKey struct {
	w    window
	only target // zero for every target
}

type cached struct {
	at time.Time
	h  *history
}

// get returns the history of w (of only, when set) as of now, read again
// when what is cached is older than the TTL. Two requests that miss at
// once both read: simpler than making one wait, and rare.
func (c *historyCache) get(ctx context.Context, q Querier, now time.Time, w window, only *target) *history {
	k := cacheKey{w: w}
	if only != nil {
		k.only = *only
	}
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl && !now.Before(e.at) {
		return e.h
	}
	h := readHistory(ctx, q, now, w, only)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[cacheKey]cached)
	}
	// Drop what has expired, so check pages looked at once do not
	// accumulate.
	for k, e := range c.m {
		if now.Sub(e.at) >= c.ttl {
			delete(c.m, k)
		}
	}
	c.m[k] = cached{at: now, h: h}
	return h
}

// String describes the window for a page: "3h0m0s" reads badly.
func (w window) String() string {
	switch d := w.span; {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return w.span.String()
}
