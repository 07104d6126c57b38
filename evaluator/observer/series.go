package observer

import (
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/tsdb"
)

// seriesLimit bounds the perfdata series each host×check writes: a plugin
// that prints a new label on every run (a PID, a timestamp) would
// otherwise grow the store, and this process, without end. The first max
// labels of a check are stored for good; later new ones are not stored,
// and are counted and logged once per check. The result itself, perfdata
// included, still reaches the leader and the other observers.
//
// A check's labels are a labelSet shared with every other check that
// admitted the same labels: checks of one kind print the same few (a tcp
// probe's "time"), so 100,000 checks hold a handful of sets and a pointer
// each, where a set of their own each cost 300 bytes (issue 12).
type seriesLimit struct {
	max  int
	hits prometheus.Counter
	log  *slog.Logger

	mu     sync.Mutex
	labels map[instanceKey]*labelSet
	sets   map[string]*labelSet // every set some check uses, by its key
	warned map[instanceKey]bool
}

// labelSet is an immutable sorted set of perfdata labels. Checks share it;
// one whose labels grow moves to another set, and a set no check uses any
// more is forgotten, so a runaway plugin leaves no trail of the sets it
// passed through.
type labelSet struct {
	// key is the labels joined by NUL, which a label never holds (tags are
	// sanitised to letters, digits and - _ . /); labels are substrings of
	// it, so a set does not keep alive the plugin output its labels were
	// cut from.
	key    string
	labels []string
	refs   int // checks using the set; guarded by seriesLimit.mu
}

func (ls *labelSet) has(label string) bool {
	if ls == nil {
		return false
	}
	_, ok := slices.BinarySearch(ls.labels, label)
	return ok
}

func (ls *labelSet) len() int {
	if ls == nil {
		return 0
	}
	return len(ls.labels)
}

func newSeriesLimit(max int, hits prometheus.Counter, log *slog.Logger) *seriesLimit {
	if max <= 0 {
		max = config.DefaultSeriesPerCheck
	}
	return &seriesLimit{max: max, hits: hits, log: log,
		labels: make(map[instanceKey]*labelSet), sets: make(map[string]*labelSet), warned: make(map[instanceKey]bool)}
}

// admit returns pts without the perfdata points of labels past the limit
// of host's check; it filters in place.
func (s *seriesLimit) admit(host, chk string, pts []tsdb.Point) []tsdb.Point {
	k := instanceKey{host, chk}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.labels[k]
	n := cur.len()
	out := pts[:0]
	var added, refused []string
	for _, p := range pts {
		if p.Metric == MetricCheckPerf {
			label := p.Tags["label"]
			// added is searched linearly: a run brings few new labels,
			// at most max.
			if !cur.has(label) && !slices.Contains(added, label) {
				if n >= s.max {
					refused = append(refused, label)
					continue
				}
				added = append(added, label)
				n++
			}
		}
		out = append(out, p)
	}
	if len(added) > 0 {
		s.grow(k, cur, added)
	}
	if len(refused) > 0 {
		s.hits.Add(float64(len(refused)))
		if !s.warned[k] {
			s.warned[k] = true
			s.log.Warn("perfdata series limit reached: new labels of this check are not stored (limits.series_per_check)",
				"host", host, "check", chk, "limit", s.max, "refused", refused[0])
		}
	}
	return out
}

// grow moves k from the set cur (nil for none) to the set of cur's labels
// and added. s.mu is held.
func (s *seriesLimit) grow(k instanceKey, cur *labelSet, added []string) {
	labels := make([]string, 0, cur.len()+len(added))
	if cur != nil {
		labels = append(labels, cur.labels...)
	}
	labels = append(labels, added...)
	slices.Sort(labels)
	// Not strings.Join: for one label it returns that label, cut from
	// the result.
	var b strings.Builder
	for i, l := range labels {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(l)
	}
	key := b.String()
	next := s.sets[key]
	if next == nil {
		next = &labelSet{key: key, labels: labels}
		// Point the labels into key, off the results' strings.
		off := 0
		for i, l := range labels {
			labels[i] = key[off : off+len(l)]
			off += len(l) + 1
		}
		s.sets[key] = next
	}
	next.refs++
	s.labels[k] = next
	if cur != nil {
		if cur.refs--; cur.refs == 0 {
			delete(s.sets, cur.key)
		}
	}
}
