package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/tsdb"
)

// base is the time of point 0: a fixed past time, so nothing depends on
// the clock.
var base = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

// pt is point i of the test data: its value is i, so a sequence of
// delivered points can be checked for order, gaps and duplicates by
// value.
func pt(i int) tsdb.Point {
	return tsdb.Point{
		Metric: "dmonitor.check.status",
		Tags:   map[string]string{"host": fmt.Sprintf("host%02d.example.org", i%10), "check": "http", "observer": "eu-1"},
		Time:   base.Add(time.Duration(i) * time.Second),
		Value:  float64(i),
	}
}

// pts returns points [from, from+n).
func pts(from, n int) []tsdb.Point {
	out := make([]tsdb.Point, n)
	for i := range out {
		out[i] = pt(from + i)
	}
	return out
}

// fakeStore is a downstream that can be switched unavailable and records
// what it stored, points and annotations. judge, if set, decides each
// Append instead: which points are stored and the error returned; annJudge
// the same for each PutAnnotation.
type fakeStore struct {
	mu       sync.Mutex
	down     bool
	judge    func(pts []tsdb.Point) (stored []tsdb.Point, err error)
	annJudge func(a tsdb.Annotation) error
	got      []tsdb.Point
	calls    int
	anns     []tsdb.Annotation
	annAt    []int // for each of anns, the number of points stored before it
}

var _ Annotator = (*fakeStore)(nil)

func (f *fakeStore) PutAnnotation(ctx context.Context, a tsdb.Annotation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	var err error
	switch {
	case f.annJudge != nil:
		err = f.annJudge(a)
	case f.down:
		err = errDown
	}
	if err == nil {
		f.anns = append(f.anns, a)
		f.annAt = append(f.annAt, len(f.got))
	}
	return err
}

// annotations returns the annotations stored so far and, for each, the
// number of points stored before it.
func (f *fakeStore) annotations() ([]tsdb.Annotation, []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.anns), slices.Clone(f.annAt)
}

// ann is annotation i of the test data: its description says i.
func ann(i int) tsdb.Annotation {
	return tsdb.Annotation{
		Start:       base.Add(time.Duration(i) * time.Second),
		TSUID:       "000001000001000001",
		Description: fmt.Sprintf("alert %d firing", i),
		Custom:      map[string]string{"rule": "http down", "n": fmt.Sprint(i)},
	}
}

// annIDs returns the numbers of the annotations as ann made them.
func annIDs(as []tsdb.Annotation) []int {
	out := make([]int, len(as))
	for i, a := range as {
		fmt.Sscanf(a.Description, "alert %d", &out[i])
	}
	return out
}

var errDown = fmt.Errorf("connect 127.0.0.1:4242: connection refused: %w", tsdb.ErrUnavailable)

func (f *fakeStore) Append(ctx context.Context, points []tsdb.Point) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.judge != nil {
		stored, err := f.judge(points)
		f.got = append(f.got, stored...)
		return err
	}
	if f.down {
		return errDown
	}
	// Copy: the caller may reuse its slice.
	f.got = append(f.got, points...)
	return nil
}

func (f *fakeStore) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeStore) setJudge(j func([]tsdb.Point) ([]tsdb.Point, error)) {
	f.mu.Lock()
	f.judge = j
	f.mu.Unlock()
}

// values returns the values of the points stored so far.
func (f *fakeStore) values() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return valuesOf(f.got)
}

func valuesOf(ps []tsdb.Point) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = int(p.Value)
	}
	return out
}

// seq returns [from, to).
func seq(from, to int) []int {
	out := make([]int, 0, max(to-from, 0))
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// partialErr is a downstream error for a batch stored in part.
type partialErr struct {
	unstored []tsdb.Point
	cause    error
}

func (e *partialErr) Error() string {
	return fmt.Sprintf("%d points not stored: %v", len(e.unstored), e.cause)
}
func (e *partialErr) Unwrap() error          { return e.cause }
func (e *partialErr) Unstored() []tsdb.Point { return e.unstored }

var _ Partial = (*partialErr)(nil)

// fastRetry are options for tests: replay retries within milliseconds.
func fastRetry(o Options) Options {
	o.RetryMin, o.RetryMax = time.Millisecond, 5*time.Millisecond
	return o
}

// openSpool opens a spool in dir (a new temporary one if "") in front of
// down and closes it when the test ends.
func openSpool(t testing.TB, dir string, down Appender, opts Options) *Spool {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(dir, down, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// startRun runs s.Run until the test ends, and checks that it returned.
func startRun(t testing.TB, s *Spool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// mustAppend appends and fails the test on an error.
func mustAppend(t testing.TB, s *Spool, ps []tsdb.Point) {
	t.Helper()
	if err := s.Append(context.Background(), ps); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

// waitDelivered waits until the spool is empty, on disk and in memory,
// and down holds n points.
func waitDelivered(t testing.TB, s *Spool, down *fakeStore, n int) {
	t.Helper()
	await.Until(t, fmt.Sprintf("%d points delivered", n), func() bool {
		st := s.Stats()
		return st.Points == 0 && st.Buffered == 0 && st.Annotations == 0 && st.BufferedAnnotations == 0 && len(down.values()) >= n
	})
}

// checkValues fails the test unless got is want.
func checkValues(t testing.TB, got, want []int) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("delivered %d points, want %d; first difference at %d: got %d, want %d", len(got), len(want), i, got[i], want[i])
		}
	}
	t.Fatalf("delivered %d points, want %d (last delivered %v)", len(got), len(want), got[max(len(got)-3, 0):])
}

// logSink is a slog.Handler keeping the records, for tests that check
// what is reported.
type logSink struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logSink) WithGroup(string) slog.Handler      { return l }

// sum adds the integer attribute key of the records at level whose
// message contains msg, and counts them.
func (l *logSink) sum(level slog.Level, msg, key string) (total int64, records int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Level != level || !strings.Contains(r.Message, msg) {
			continue
		}
		records++
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				total += a.Value.Int64()
			}
			return true
		})
	}
	return total, records
}

// sameFloat reports whether a and b are the same value, NaN included.
func sameFloat(a, b float64) bool {
	return a == b || math.IsNaN(a) && math.IsNaN(b)
}

var errTest = errors.New("test")
