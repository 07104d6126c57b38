package observer

import (
	"slices"
	"strings"
	"sync"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/rules"
)

// instanceKey names a target: one host×check, the inputs of its rule
// instances.
type instanceKey struct{ host, check string }

// observed is one observer's latest result for a target, and the statuses
// of its runs before it, newest first (what streak reads).
type observed struct {
	result  check.Result
	history []check.Status
}

// live holds the latest result of every observer for every host×check: what
// the leader evaluates, without waiting on the TSDB.
//
// Each target keeps a slice sorted by observer rather than a map: there are
// a handful of observers, and a Go map costs a bucket of eight entries even
// for one, which at 10,000 checks is most of this table.
type live struct {
	mu      sync.Mutex
	results map[instanceKey][]observed
}

func newLive() *live {
	return &live{results: make(map[instanceKey][]observed)}
}

// put records r unless the same or a newer result of the same observer is
// already known: results of one observer can arrive out of order after a
// catch-up, and twice when they come back from the other observers. It
// reports whether r was new, and the status it replaced (zero if none).
func (l *live) put(r check.Result) (isNew bool, prev check.Status, hadPrev bool) {
	k := instanceKey{r.Host, r.Check}
	l.mu.Lock()
	defer l.mu.Unlock()
	os := l.results[k]
	i, found := slices.BinarySearchFunc(os, r.Observer, func(x observed, obs string) int { return strings.Compare(x.result.Observer, obs) })
	switch {
	case !found:
		l.results[k] = slices.Insert(os, i, observed{result: r})
		return true, 0, false
	case os[i].result.Start.Before(r.Start):
		o := &os[i]
		prev = o.result.Status
		if len(o.history) < rules.MaxHistory {
			o.history = append(o.history, 0)
		}
		copy(o.history[1:], o.history)
		o.history[0] = prev
		o.result = r
		return true, prev, true
	}
	return false, 0, false
}

// latest returns the latest result of each observer for k, sorted by
// observer name, and each one's earlier statuses.
func (l *live) latest(k instanceKey) ([]check.Result, [][]check.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	os := l.results[k]
	rs := make([]check.Result, len(os))
	hs := make([][]check.Status, len(os))
	for i, o := range os {
		rs[i], hs[i] = o.result, slices.Clone(o.history)
	}
	return rs, hs
}
