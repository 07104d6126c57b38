package embedded

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/tmpfstest"
	"github.com/dmonitor/dmonitor/tsdb"
)

func TestMaxSeries(t *testing.T) {
	dir := t.TempDir()
	opts := Options{MaxSeries: 3}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustAppend(t, s, series("m", tags("host=a"), sv{0, 1}), series("m", tags("host=b"), sv{0, 2}))

	// One place left: c takes it, d and e are refused, a is stored.
	batch := [][]tsdb.Point{
		series("m", tags("host=a"), sv{10, 1}),
		series("m", tags("host=c"), sv{10, 3}),
		series("m", tags("host=d"), sv{10, 4}, sv{20, 4}),
		series("m", tags("host=e"), sv{10, 5}),
	}
	var all []tsdb.Point
	for _, b := range batch {
		all = append(all, b...)
	}
	if n := s.CountNew(all); n != 3 {
		t.Errorf("CountNew = %d, want 3 (c, d, e)", n)
	}
	err = s.Append(ctx, all)
	var lerr *LimitError
	if !errors.As(err, &lerr) || !errors.Is(err, tsdb.ErrLimit) || !errors.Is(err, tsdb.ErrInvalid) {
		t.Fatalf("err = %v, want a *LimitError wrapping tsdb.ErrLimit", err)
	}
	if want := "series limit 3 reached: refused 2 new series (3 points), first m{host=d}"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if got := fmt.Sprint(lerr.Unstored()); got != fmt.Sprint(append(batch[2], batch[3]...)) {
		t.Errorf("Unstored = %v, want the points of d and e", got)
	}
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(100)})
	if len(out) != 3 {
		t.Fatalf("%d series stored, want a, b, c", len(out))
	}
	checkSVs(t, "a", out[0], sv{0, 1}, sv{10, 1})
	checkSVs(t, "c", out[2], sv{10, 3})
	if st := s.Stats(); st.LimitRefused != 3 || st.Series != 3 || s.Series() != 3 {
		t.Errorf("stats %+v, Series() %d: want 3 refused, 3 series", st, s.Series())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart the cache is empty: the store finds a, b and c in
	// the engine, so they are not new, and d still is.
	s = openStore(t, dir, opts)
	if n := s.CountNew(all); n != 2 {
		t.Errorf("after a restart CountNew = %d, want 2 (d, e)", n)
	}
	mustAppend(t, s, series("m", tags("host=b"), sv{30, 2}))
	if err := s.Append(ctx, series("m", tags("host=d"), sv{30, 4})); !errors.Is(err, tsdb.ErrLimit) {
		t.Errorf("after a restart, a new series: err = %v, want tsdb.ErrLimit", err)
	}
}

// TestMaxSeriesWhileHeld applies the limit to points held in memory on a
// full disk: new series held count, and past the limit are refused.
func TestMaxSeriesWhileHeld(t *testing.T) {
	dir := tmpfstest.Mount(t, "8m")
	s := openStore(t, dir, Options{MinFreeBytes: 1 << 20, MaxSeries: 2})
	ctx := context.Background()
	mustAppend(t, s, series("m", tags("host=a"), sv{0, 1}))
	freeDisk := tmpfstest.Fill(t, dir)
	s.space.expire()
	if err := s.Append(ctx, append(series("m", tags("host=a"), sv{10, 1}), series("m", tags("host=b"), sv{10, 2})...)); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if n := s.CountNew(series("m", tags("host=b"), sv{20, 2})); n != 0 {
		t.Errorf("CountNew of a series held in memory = %d, want 0", n)
	}
	err := s.Append(ctx, append(series("m", tags("host=b"), sv{20, 2}), series("m", tags("host=c"), sv{20, 3})...))
	if !errors.Is(err, tsdb.ErrLimit) || !strings.Contains(err.Error(), "m{host=c}") {
		t.Fatalf("err = %v, want tsdb.ErrLimit naming m{host=c}", err)
	}
	if st := s.Stats(); st.Buffered != 3 {
		t.Errorf("stats %+v, want 3 points held", st)
	}
	freeDisk()
	await.Until(t, "the held points written", func() bool { return s.Stats().Buffered == 0 })
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(100)})
	if len(out) != 2 {
		t.Fatalf("%d series, want a and b", len(out))
	}
	checkSVs(t, "a", out[0], sv{0, 1}, sv{10, 1})
	checkSVs(t, "b", out[1], sv{10, 2}, sv{20, 2})
}
