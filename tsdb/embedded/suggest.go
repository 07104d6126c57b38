package embedded

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/storage"

	"github.com/dmonitor/dmonitor/tsdb"
)

var _ tsdb.Suggester = (*Store)(nil)

// Suggest returns up to max names of kind (tsdb.SuggestMetrics,
// tsdb.SuggestTagKeys or tsdb.SuggestTagValues) that start with prefix,
// sorted, as the engine's index knows them: every name of a series the
// store still holds. max <= 0 means no limit. An unknown kind wraps
// tsdb.ErrInvalid.
func (s *Store) Suggest(ctx context.Context, kind, prefix string, max int) ([]string, error) {
	switch kind {
	case tsdb.SuggestMetrics, tsdb.SuggestTagKeys, tsdb.SuggestTagValues:
	default:
		return nil, fmt.Errorf("embedded tsdb %s: suggest: unknown kind %q: %w", s.dir, kind, tsdb.ErrInvalid)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: suggest: %w", s.dir, err)
	}
	names, err := s.suggest(ctx, kind)
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: suggest %s %q: %w", s.dir, kind, prefix, err)
	}
	// The names may be the engine's own memory: filter into a new slice.
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out, nil
}

// suggest lists every name of kind, unsorted and possibly repeated.
func (s *Store) suggest(ctx context.Context, kind string) ([]string, error) {
	qr, err := s.db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	defer qr.Close()
	hints := &storage.LabelHints{}
	if kind == tsdb.SuggestMetrics {
		vs, _, err := qr.LabelValues(ctx, nameLabel, hints)
		return vs, err
	}
	keys, _, err := qr.LabelNames(ctx, hints)
	if err != nil {
		return nil, err
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == nameLabel })
	if kind == tsdb.SuggestTagKeys {
		return keys, nil
	}
	var vals []string
	for _, k := range keys {
		vs, _, err := qr.LabelValues(ctx, k, hints)
		if err != nil {
			return nil, err
		}
		vals = append(vals, vs...)
	}
	return vals, nil
}
