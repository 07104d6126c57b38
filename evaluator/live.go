package evaluator

import (
	"slices"
	"strings"
	"sync"

	"github.com/dmonitor/dmonitor/check"
)

// instanceKey names a rule instance's inputs: one host×check.
type instanceKey struct{ host, check string }

// live holds the latest result of every observer for every host×check: what
// the leader evaluates, without waiting on the TSDB.
//
// Each instance keeps a slice sorted by observer rather than a map: there
// are a handful of observers, and a Go map costs a bucket of eight results
// even for one, which at 10,000 checks is most of this table.
type live struct {
	mu      sync.Mutex
	results map[instanceKey][]check.Result
}

func newLive() *live {
	return &live{results: make(map[instanceKey][]check.Result)}
}

// put records r unless a newer result of the same observer is already known
// (results of one observer can arrive out of order after a catch-up).
func (l *live) put(r check.Result) {
	k := instanceKey{r.Host, r.Check}
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := l.results[k]
	i, found := slices.BinarySearchFunc(rs, r.Observer, func(x check.Result, obs string) int { return strings.Compare(x.Observer, obs) })
	switch {
	case !found:
		l.results[k] = slices.Insert(rs, i, r)
	case !rs[i].Start.After(r.Start):
		rs[i] = r
	}
}

// latest returns the latest result of each observer for k, sorted by
// observer name.
func (l *live) latest(k instanceKey) []check.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results[k])
}
