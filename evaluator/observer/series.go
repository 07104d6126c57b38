package observer

import (
	"log/slog"
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
type seriesLimit struct {
	max  int
	hits prometheus.Counter
	log  *slog.Logger

	mu     sync.Mutex
	labels map[instanceKey]map[string]struct{}
	warned map[instanceKey]bool
}

func newSeriesLimit(max int, hits prometheus.Counter, log *slog.Logger) *seriesLimit {
	if max <= 0 {
		max = config.DefaultSeriesPerCheck
	}
	return &seriesLimit{max: max, hits: hits, log: log,
		labels: make(map[instanceKey]map[string]struct{}), warned: make(map[instanceKey]bool)}
}

// admit returns pts without the perfdata points of labels past the limit
// of host's check; it filters in place.
func (s *seriesLimit) admit(host, chk string, pts []tsdb.Point) []tsdb.Point {
	k := instanceKey{host, chk}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := s.labels[k]
	if seen == nil {
		seen = make(map[string]struct{})
		s.labels[k] = seen
	}
	out := pts[:0]
	var refused []string
	for _, p := range pts {
		if p.Metric == MetricCheckPerf {
			label := p.Tags["label"]
			if _, ok := seen[label]; !ok {
				if len(seen) >= s.max {
					refused = append(refused, label)
					continue
				}
				seen[label] = struct{}{}
			}
		}
		out = append(out, p)
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
