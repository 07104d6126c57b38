package observer

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/rules"
)

// instanceKey names a target: one host×check, the inputs of its rule
// instances.
type instanceKey struct{ host, check string }

// observed is one observer's latest result for a target, and the statuses
// of its runs before it (what streak reads). It is a check.Result without
// what the table knows otherwise (the target is its key, the observer's
// name and domain are shared by all its results) and with its history
// packed: 112 bytes a target where a Result and a slice of statuses took
// 192, and 128 more once the history had filled (issue 12).
type observed struct {
	who      *observerName
	raw      string
	output   string
	perf     []check.Perf
	start    time.Time
	duration time.Duration
	status   int32
	exitCode int32
	// history holds the statuses before this one, newest in the lowest
	// two bits; historyLen of them count.
	history    uint32
	historyLen uint8
}

// history's two bits a status hold rules.MaxHistory statuses.
var _ [32 - 2*rules.MaxHistory]struct{}

// observerName is an observer's name and failure domain.
type observerName struct{ name, domain string }

// pushHistory makes st the newest earlier status. A status outside 0..3
// is kept as UNKNOWN, as the plugin API reads it.
func (o *observed) pushHistory(st check.Status) {
	if st < check.OK || st > check.Unknown {
		st = check.Unknown
	}
	o.history = o.history<<2 | uint32(st)
	o.historyLen = min(o.historyLen+1, rules.MaxHistory)
}

// appendStatuses appends the earlier statuses to dst, newest first.
func (o *observed) appendStatuses(dst []check.Status) []check.Status {
	for i := range int(o.historyLen) {
		dst = append(dst, check.Status(o.history>>(2*i)&3))
	}
	return dst
}

// result returns the check.Result o keeps for target k.
func (o *observed) result(k instanceKey) check.Result {
	return check.Result{
		Host: k.host, Check: k.check, Observer: o.who.name, Domain: o.who.domain,
		Status: check.Status(o.status), Raw: o.raw, ExitCode: int(o.exitCode),
		Output: o.output, Perf: o.perf, Start: o.start, Duration: o.duration,
	}
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
	names   map[observerName]*observerName
}

func newLive() *live {
	return &live{results: make(map[instanceKey][]observed), names: make(map[observerName]*observerName)}
}

// observe returns what the table keeps of r. l.mu is held.
func (l *live) observe(r *check.Result) observed {
	n := observerName{r.Observer, r.Domain}
	who := l.names[n]
	if who == nil {
		who = &n
		l.names[n] = who
	}
	raw := r.Raw
	// Results from the other observers come decoded, each word a string of
	// its own: keep the constant instead.
	for _, w := range [...]string{"OK", "WARNING", "CRITICAL", "UNKNOWN", check.RawFail, check.RawTimeout} {
		if raw == w {
			raw = w
			break
		}
	}
	return observed{
		who: who, raw: raw, output: r.Output, perf: r.Perf, start: r.Start, duration: r.Duration,
		status: int32(r.Status), exitCode: int32(r.ExitCode),
	}
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
	i, found := slices.BinarySearchFunc(os, r.Observer, func(x observed, obs string) int { return strings.Compare(x.who.name, obs) })
	switch {
	case !found:
		l.results[k] = slices.Insert(os, i, l.observe(&r))
		return true, 0, false
	case os[i].start.Before(r.Start):
		o := &os[i]
		prev = check.Status(o.status)
		o.pushHistory(prev)
		h, n := o.history, o.historyLen
		*o = l.observe(&r)
		o.history, o.historyLen = h, n
		return true, prev, true
	}
	return false, 0, false
}

// appendLatest appends the latest result of each observer for k to rs,
// sorted by observer name, and each one's earlier statuses, newest first,
// to hs. The statuses go into the slices hs holds past its length, left
// there by an earlier call: a caller that passes the same hs[:0] for
// instance after instance allocates nothing once they are large enough,
// and must keep no reference to what an earlier call returned.
func (l *live) appendLatest(rs []check.Result, hs [][]check.Status, k instanceKey) ([]check.Result, [][]check.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	os := l.results[k]
	for i := range os {
		o := &os[i]
		rs = append(rs, o.result(k))
		n := len(hs)
		hs = slices.Grow(hs, 1)[:n+1]
		hs[n] = o.appendStatuses(hs[n][:0])
	}
	return rs, hs
}

// count returns how many observers' results latest would return for k.
func (l *live) count(k instanceKey) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.results[k])
}
