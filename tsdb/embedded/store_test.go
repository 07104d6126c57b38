package embedded

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

func TestAppendRefusesInvalidPoints(t *testing.T) {
	good := tsdb.Point{Metric: "cpu", Tags: tags("host=a"), Time: at(0), Value: 1}
	for _, tc := range []struct {
		name     string
		bad      tsdb.Point
		mentions []string // what the error must name
	}{
		{"empty metric", tsdb.Point{Tags: tags("host=a"), Time: at(1), Value: 1}, []string{"metric name is empty"}},
		{"metric with a space", tsdb.Point{Metric: "cpu load", Tags: tags("host=a"), Time: at(1)}, []string{`cpu load`, "metric name"}},
		{"no tags", tsdb.Point{Metric: "cpu", Time: at(1), Value: 1}, []string{"cpu{}", "no tags"}},
		{"empty tag key", tsdb.Point{Metric: "cpu", Tags: tags("=a"), Time: at(1)}, []string{"tag key is empty"}},
		{"empty tag value", tsdb.Point{Metric: "cpu", Tags: tags("host="), Time: at(1)}, []string{"cpu{host=}", `tag "host" value is empty`}},
		{"tag value with a colon", tsdb.Point{Metric: "cpu", Tags: tags("host=a:1"), Time: at(1)}, []string{"host=a:1", `':'`}},
		{"tag key __name__", tsdb.Point{Metric: "cpu", Tags: tags("__name__=x"), Time: at(1)}, []string{"reserved"}},
		{"NaN", tsdb.Point{Metric: "cpu", Tags: tags("host=b"), Time: at(1), Value: math.NaN()}, []string{"cpu{host=b}", "NaN"}},
		{"+Inf", tsdb.Point{Metric: "cpu", Tags: tags("host=b"), Time: at(1), Value: math.Inf(1)}, []string{"cpu{host=b}", "+Inf"}},
		{"-Inf", tsdb.Point{Metric: "cpu", Tags: tags("host=b"), Time: at(1), Value: math.Inf(-1)}, []string{"-Inf"}},
		{"no timestamp", tsdb.Point{Metric: "cpu", Tags: tags("host=b"), Value: 1}, []string{"no timestamp"}},
		{"before 1970", tsdb.Point{Metric: "cpu", Tags: tags("host=b"), Time: time.Unix(-10, 0), Value: 1}, []string{"1970"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{})
			err := s.Append(context.Background(), []tsdb.Point{good, tc.bad})
			if !errors.Is(err, tsdb.ErrInvalid) {
				t.Fatalf("err = %v, want one wrapping tsdb.ErrInvalid", err)
			}
			for _, m := range append(tc.mentions, dir, "point 1") {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			// The valid point of the refused batch was not stored either.
			if out := mustQuery(t, s, tsdb.Query{Metric: "cpu", Start: at(0), End: at(10)}); len(out) != 0 {
				t.Errorf("after a refused batch the store holds %+v", out)
			}
		})
	}
}

func TestAppendAcceptsOpenTSDBNames(t *testing.T) {
	s := openStore(t, "", Options{})
	// Every character class OpenTSDB allows, Unicode letters included.
	p := tsdb.Point{Metric: "dmonitor.check-status_x/y", Tags: tags("host=Zürich-01.example_org/a", "Ωmega=ok"), Time: at(0), Value: 2}
	mustAppend(t, s, []tsdb.Point{p})
	got := only(t, mustQuery(t, s, tsdb.Query{Metric: p.Metric, Start: at(0), End: at(0)}))
	if got.Tags["host"] != "Zürich-01.example_org/a" || got.Tags["Ωmega"] != "ok" {
		t.Errorf("tags = %v", got.Tags)
	}
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s,
		series("m", tags("host=a"), sv{0, 1}, sv{10, 2}),
		series("m", tags("host=b"), sv{5, 3}),
	)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Append(context.Background(), series("m", tags("host=a"), sv{20, 3})); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: err = %v, want ErrClosed", err)
	}

	s = openStore(t, dir, Options{})
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(100)})
	if len(out) != 2 {
		t.Fatalf("after reopening: %d series, want 2", len(out))
	}
	checkSVs(t, "a", out[0], sv{0, 1}, sv{10, 2})
	checkSVs(t, "b", out[1], sv{5, 3})
	// And the reopened store takes new points for the old series.
	mustAppend(t, s, series("m", tags("host=a"), sv{20, 4}))
	checkSVs(t, "a after append", mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(100)})[0],
		sv{0, 1}, sv{10, 2}, sv{20, 4})
}

func TestOpenLockedDir(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, Options{})
	if s, err := Open(dir, Options{}); err == nil {
		s.Close()
		t.Fatal("a second Open of the same directory succeeded")
	} else if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
}

func TestOutOfOrder(t *testing.T) {
	s := openStore(t, "", Options{OutOfOrderWindow: 24 * time.Hour})
	hour := int64(3600)
	mustAppend(t, s, series("m", tags("host=a"), sv{10 * hour, 10}))
	// A spool replaying three hours late, for this and a new series.
	mustAppend(t, s,
		series("m", tags("host=a"), sv{7 * hour, 7}, sv{8 * hour, 8}),
		series("m", tags("host=b"), sv{7 * hour, 70}),
	)
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(11 * hour)})
	if len(out) != 2 {
		t.Fatalf("got %d series, want 2", len(out))
	}
	checkSVs(t, "a", out[0], sv{7 * hour, 7}, sv{8 * hour, 8}, sv{10 * hour, 10})
	checkSVs(t, "b", out[1], sv{7 * hour, 70})

	// Beyond the window: refused, naming the window, and the batch's
	// other point is not stored.
	err := s.Append(context.Background(), []tsdb.Point{
		{Metric: "m", Tags: tags("host=c"), Time: at(9 * hour), Value: 1},
		{Metric: "m", Tags: tags("host=a"), Time: at(10*hour - 25*hour), Value: 1},
	})
	if !errors.Is(err, tsdb.ErrInvalid) || !strings.Contains(err.Error(), "out-of-order window (24h0m0s") ||
		!strings.Contains(err.Error(), "m{host=a}") {
		t.Fatalf("err = %v, want tsdb.ErrInvalid naming the window and the point", err)
	}
	if out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(11 * hour),
		Filters: []tsdb.Filter{{Type: tsdb.LiteralOr, Tag: "host", Expr: "c"}}}); len(out) != 0 {
		t.Errorf("the refused batch's valid point was stored: %+v", out)
	}

	// A different value for a timestamp already stored is refused too.
	err = s.Append(context.Background(), series("m", tags("host=a"), sv{10 * hour, 11}))
	if !errors.Is(err, tsdb.ErrInvalid) || !strings.Contains(err.Error(), "another value") {
		t.Errorf("overwrite: err = %v, want tsdb.ErrInvalid", err)
	}
	// The same value again (a replayed spool) is accepted.
	mustAppend(t, s, series("m", tags("host=a"), sv{10 * hour, 10}))
}

// TestRetention writes 24 hours of data, has the engine compact it into
// blocks, and checks the blocks older than the retention are gone, while
// the same data under the default retention is all there.
func TestRetention(t *testing.T) {
	count := func(retention time.Duration) (int, []sv) {
		s := openStore(t, "", Options{Retention: retention})
		var pts []sv
		for m := int64(0); m < 24*60; m += 10 {
			pts = append(pts, sv{m * 60, float64(m)})
		}
		mustAppend(t, s, series("m", tags("host=a"), pts...))
		if err := s.db.Compact(context.Background()); err != nil {
			t.Fatalf("Compact: %v", err)
		}
		got := svsOf(t, only(t, mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(24 * 3600)})))
		return len(pts), got
	}
	total, kept := count(4 * time.Hour)
	if len(kept) == 0 || kept[0].sec < 12*3600 {
		t.Errorf("with 4h retention the oldest sample left is at %v, want everything before 12h gone", kept[:1])
	}
	if last := kept[len(kept)-1]; last.sec != (24*60-10)*60 {
		t.Errorf("with 4h retention the newest sample is %v, want the one at 23h50m", last)
	}
	if _, all := count(0); len(all) != total {
		t.Errorf("with the default retention %d of %d samples are left", len(all), total)
	}
}

func TestConcurrentAppendAndQuery(t *testing.T) {
	s := openStore(t, "", Options{})
	const writers, batches, perBatch = 4, 20, 50
	var wg sync.WaitGroup
	errc := make(chan error, writers+1)
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				pts := make([]tsdb.Point, perBatch)
				for i := range pts {
					// Writers share series (host) so the cache is contended.
					pts[i] = tsdb.Point{Metric: "m", Tags: map[string]string{"host": fmt.Sprint(i), "w": fmt.Sprint(w)},
						Time: at(int64(b)), Value: float64(b)}
				}
				if err := s.Append(context.Background(), pts); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := s.Query(context.Background(), tsdb.Query{Metric: "m", Start: at(0), End: at(batches), Aggregator: "sum"}); err != nil {
				errc <- err
				return
			}
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	out := mustQuery(t, s, tsdb.Query{Metric: "m", Start: at(0), End: at(batches)})
	if len(out) != writers*perBatch {
		t.Fatalf("%d series, want %d", len(out), writers*perBatch)
	}
	for _, ser := range out {
		if len(ser.Samples) != batches {
			t.Errorf("series %v has %d samples, want %d", ser.Tags, len(ser.Samples), batches)
		}
	}
}
