package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/prometheus/storage"

	"github.com/dmonitor/dmonitor/tsdb"
)

// tsuidBytes is how many bytes of the hash a TSUID keeps: 96 bits make a
// collision among even millions of series vanishingly unlikely, and the
// 24 hex digits stay short enough for a URL.
const tsuidBytes = 12

// TSUID returns the identifier the embedded store gives the series of
// metric and tags, in place of the UIDs a real OpenTSDB assigns: upper-case
// hex of a hash of the metric and the tags sorted by key. It depends on
// nothing but its arguments, so it is the same in every process and after
// every restart, and annotations keyed by it stay attached to their series.
func TSUID(metric string, tags map[string]string) string {
	key, _ := appendSeriesKey(nil, nil, &tsdb.Point{Metric: metric, Tags: tags})
	sum := sha256.Sum256(key)
	return strings.ToUpper(hex.EncodeToString(sum[:tsuidBytes]))
}

// TSUID is the package's TSUID, as a method so that consumers holding only
// a tsdb.Store can find it through an interface.
func (s *Store) TSUID(metric string, tags map[string]string) string {
	return TSUID(metric, tags)
}

// ListSeries returns the tags of every series of metric that matches
// filters and may have data in [start, end], read from the engine's index
// without decoding any sample. A series is listed when a block or the head
// holding it overlaps the range, so a series whose samples all lie just
// outside may be listed too. GroupBy is ignored.
func (s *Store) ListSeries(ctx context.Context, metric string, filters []tsdb.Filter, start, end time.Time) ([]map[string]string, error) {
	ms, _, err := compileMatchers(metric, filters)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: list series %q: %w", s.dir, metric, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: list series: %w", s.dir, err)
	}
	mint, maxt := ceilMillis(start), end.UnixMilli()
	qr, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: list series %q: %w", s.dir, metric, err)
	}
	defer qr.Close()
	set := qr.Select(ctx, false, &storage.SelectHints{Start: mint, End: maxt, Func: "series"}, ms...)
	var out []map[string]string
	for set.Next() {
		out = append(out, tagsOf(set.At().Labels()))
	}
	if err := set.Err(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: list series %q: %w", s.dir, metric, err)
	}
	return out, nil
}
