package evaluator

import (
	"sort"
	"sync"

	"github.com/dmonitor/dmonitor/check"
)

// instanceKey names a rule instance's inputs: one host×check.
type instanceKey struct{ host, check string }

// live holds the latest result of every observer for every host×check: what
// the leader evaluates, without waiting on the TSDB.
type live struct {
	mu      sync.Mutex
	results map[instanceKey]map[string]check.Result // observer → latest result
}

func newLive() *live {
	return &live{results: make(map[instanceKey]map[string]check.Result)}
}

// put records r unless a newer result of the same observer is already known
// (results of one observer can arrive out of order after a catch-up).
func (l *live) put(r check.Result) {
	k := instanceKey{r.Host, r.Check}
	l.mu.Lock()
	defer l.mu.Unlock()
	byObs := l.results[k]
	if byObs == nil {
		byObs = make(map[string]check.Result, 1)
		l.results[k] = byObs
	}
	if old, ok := byObs[r.Observer]; ok && old.Start.After(r.Start) {
		return
	}
	byObs[r.Observer] = r
}

// latest returns the latest result of each observer for k, sorted by
// observer name.
func (l *live) latest(k instanceKey) []check.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	byObs := l.results[k]
	out := make([]check.Result, 0, len(byObs))
	for _, r := range byObs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Observer < out[j].Observer })
	return out
}
