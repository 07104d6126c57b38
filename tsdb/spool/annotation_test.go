package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/tsdb"
)

func mustAnnotate(t testing.TB, s *Spool, a tsdb.Annotation) {
	t.Helper()
	if err := s.AppendAnnotation(context.Background(), a); err != nil {
		t.Fatalf("AppendAnnotation: %v", err)
	}
}

// sameAnnotation reports whether got is want as the spool gives it back:
// times equal, strings and custom fields the same.
func sameAnnotation(got, want tsdb.Annotation) bool {
	return got.Start.Equal(want.Start) && got.End.Equal(want.End) && got.TSUID == want.TSUID &&
		got.Description == want.Description && got.Notes == want.Notes && maps.Equal(got.Custom, want.Custom)
}

func TestAnnotationPassesThroughWhenHealthy(t *testing.T) {
	down := &fakeStore{}
	s := openSpool(t, "", down, Options{})
	mustAppend(t, s, pts(0, 5))
	mustAnnotate(t, s, ann(1))
	got, at := down.annotations()
	if len(got) != 1 || !sameAnnotation(got[0], ann(1)) || at[0] != 5 {
		t.Fatalf("stored %v after %v points, want annotation 1 after 5", got, at)
	}
	if st := s.Stats(); st.AnnotationsSpooled != 0 || st.Annotations != 0 || st.Bytes != 0 {
		t.Errorf("stats after passthrough: %+v, want nothing spooled", st)
	}
}

func TestAnnotationsReplayInOrderWithPoints(t *testing.T) {
	down := &fakeStore{down: true}
	// Small segments, so annotations fall at segment ends too.
	s := openSpool(t, "", down, fastRetry(Options{SegmentBytes: 2 << 10, ReplayBatch: 300}))
	// Annotation k is appended after points [0, 100k).
	const rounds, per = 30, 100
	for k := range rounds {
		mustAppend(t, s, pts(k*per, per/2))
		mustAppend(t, s, pts(k*per+per/2, per/2))
		mustAnnotate(t, s, ann(k))
	}
	if st := s.Stats(); st.Annotations != rounds || st.AnnotationsSpooled != rounds || st.Points != rounds*per {
		t.Fatalf("stats during the outage: %+v", st)
	}
	down.setDown(false)
	startRun(t, s)
	waitDelivered(t, s, down, rounds*per)
	checkValues(t, down.values(), seq(0, rounds*per))
	got, at := down.annotations()
	checkValues(t, annIDs(got), seq(0, rounds))
	for k := range rounds {
		// Delivered after the points appended before it and before
		// those appended after it.
		if at[k] != (k+1)*per {
			t.Fatalf("annotation %d delivered after %d points, want %d", k, at[k], (k+1)*per)
		}
		if !sameAnnotation(got[k], ann(k)) {
			t.Fatalf("annotation %d came back as %+v, want %+v", k, got[k], ann(k))
		}
	}
	if st := s.Stats(); st.AnnotationsReplayed != rounds || st.Annotations != 0 || st.Replayed != rounds*per {
		t.Errorf("stats after replay: %+v", st)
	}
}

func TestAnnotationOutageSpoolsOnlyOnUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		spools bool
	}{
		// The store refused it: returned, as it would be without a spool.
		{"invalid", fmt.Errorf("opentsdb annotation: end before start: %w", tsdb.ErrInvalid), false},
		// The store is down: spooled, and the caller told nothing.
		{"unavailable", errDown, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down := &fakeStore{annJudge: func(tsdb.Annotation) error { return tc.err }}
			s := openSpool(t, "", down, Options{})
			err := s.AppendAnnotation(context.Background(), ann(1))
			if tc.spools {
				if err != nil || s.Stats().Annotations != 1 {
					t.Fatalf("AppendAnnotation: %v, %d spooled; want nil and 1", err, s.Stats().Annotations)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("AppendAnnotation: %v, want %v", err, tc.err)
			}
			if st := s.Stats(); st.Annotations != 0 || st.Bytes != 0 {
				t.Fatalf("a refused annotation was spooled: %+v", st)
			}
		})
	}
}

func TestSpooledAnnotationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	down := &fakeStore{down: true}
	s, err := Open(dir, down, fastRetry(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, pts(0, 10))
	moment := ann(7)
	moment.End, moment.Custom, moment.Notes = time.Time{}, nil, "paged ops"
	mustAnnotate(t, s, moment)
	mustAppend(t, s, pts(10, 10))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	down.setDown(false)
	s = openSpool(t, dir, down, fastRetry(Options{}))
	if st := s.Stats(); st.Points != 20 || st.Annotations != 1 {
		t.Fatalf("after reopening: %+v, want 20 points and 1 annotation", st)
	}
	startRun(t, s)
	waitDelivered(t, s, down, 20)
	checkValues(t, down.values(), seq(0, 20))
	got, at := down.annotations()
	if len(got) != 1 || !sameAnnotation(got[0], moment) || at[0] != 10 {
		t.Fatalf("delivered %+v after %v points, want %+v after 10", got, at, moment)
	}
}

func TestReplayDropsRefusedAnnotation(t *testing.T) {
	down := &fakeStore{down: true}
	sink := &logSink{}
	s := openSpool(t, "", down, fastRetry(Options{Logger: slog.New(sink)}))
	mustAnnotate(t, s, ann(1))
	mustAppend(t, s, pts(0, 10))
	mustAnnotate(t, s, ann(2))
	down.setDown(false)
	down.mu.Lock()
	down.annJudge = func(a tsdb.Annotation) error {
		if a.Description == ann(1).Description {
			return fmt.Errorf("opentsdb annotation: 400: %w", tsdb.ErrInvalid)
		}
		return nil
	}
	down.mu.Unlock()
	startRun(t, s)
	waitDelivered(t, s, down, 10)
	got, _ := down.annotations()
	checkValues(t, annIDs(got), []int{2})
	if st := s.Stats(); st.AnnotationsRejected != 1 || st.AnnotationsReplayed != 1 || st.Replayed != 10 {
		t.Errorf("stats: %+v, want 1 annotation rejected, 1 replayed and 10 points", st)
	}
	if _, n := sink.sum(slog.LevelError, "refused a spooled annotation", ""); n != 1 {
		t.Errorf("%d error logs about the refused annotation, want 1", n)
	}
}

// pointsOnly is a downstream that takes points and not annotations.
type pointsOnly struct{ Appender }

func TestAnnotationWithoutAnnotator(t *testing.T) {
	s := openSpool(t, "", pointsOnly{&fakeStore{}}, Options{})
	err := s.AppendAnnotation(context.Background(), ann(1))
	if !errors.Is(err, ErrNoAnnotations) {
		t.Fatalf("AppendAnnotation into a points-only downstream: %v, want ErrNoAnnotations", err)
	}
}

func TestOldSegmentsReadBack(t *testing.T) {
	// testdata/v1 is a spool written before annotations were spooled:
	// 150 points (values 0-149) in three segments.
	dir := t.TempDir()
	entries, err := os.ReadDir("testdata/v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		writeFile(t, filepath.Join(dir, e.Name()), readFile(t, filepath.Join("testdata/v1", e.Name())))
	}
	sink := &logSink{}
	down := &fakeStore{}
	s := openSpool(t, dir, down, fastRetry(Options{Logger: slog.New(sink)}))
	if st := s.Stats(); st.Points != 150 || st.Annotations != 0 {
		t.Fatalf("old spool read as %+v, want 150 points", st)
	}
	if _, n := sink.sum(slog.LevelWarn, "damaged", ""); n != 0 {
		t.Fatalf("%d warnings about damage in an old spool", n)
	}
	startRun(t, s)
	waitDelivered(t, s, down, 150)
	checkValues(t, down.values(), seq(0, 150))
}

// hangStore is a downstream that does not answer: each call blocks until
// its context is done. Its error does not wrap the context's, as a
// client's might not. Each call is announced on calls.
type hangStore struct {
	calls chan string
}

func (h *hangStore) Append(ctx context.Context, _ []tsdb.Point) error {
	h.calls <- "append"
	<-ctx.Done()
	return fmt.Errorf("post /api/put: %v", ctx.Err())
}

func (h *hangStore) PutAnnotation(ctx context.Context, _ tsdb.Annotation) error {
	h.calls <- "annotation"
	<-ctx.Done()
	return fmt.Errorf("put /api/annotation: %v", ctx.Err())
}

// goDone runs f in a goroutine and returns a channel that receives its
// error.
func goDone(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// awaitDone waits for the error from done.
func awaitDone(t *testing.T, what string, done <-chan error) error {
	t.Helper()
	var err error
	await.Until(t, what, func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	return err
}

func TestPassThroughIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		append func(s *Spool) error
	}{
		{"points", func(s *Spool) error { return s.Append(context.Background(), pts(0, 10)) }},
		{"annotation", func(s *Spool) error { return s.AppendAnnotation(context.Background(), ann(0)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &hangStore{calls: make(chan string, 10)}
			s := openSpool(t, "", h, Options{PassTimeout: 10 * time.Millisecond})
			// The store never answers: the call gives up after
			// PassTimeout and spools, without an error for the caller.
			if err := awaitDone(t, "the pass-through to give up", goDone(func() error { return tc.append(s) })); err != nil {
				t.Fatalf("append into a store that does not answer: %v, want nil (spooled)", err)
			}
			if st := s.Stats(); st.Points+st.Annotations == 0 {
				t.Fatalf("nothing spooled after the timeout: %+v", st)
			}
			// Later calls go to the spool without asking the store.
			for range 3 {
				if err := tc.append(s); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(h.calls); n != 1 {
				t.Fatalf("the store was called %d times, want once", n)
			}
		})
	}
}

func TestPassThroughTimeoutRedeliversOnce(t *testing.T) {
	// The store stores the first batch but answers too late; the spool
	// takes the batch for lost and delivers it again, after which
	// everything arrives in order.
	down := &fakeStore{}
	first := true
	down.judge = func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if first {
			first = false
			return ps, fmt.Errorf("post: %w", context.DeadlineExceeded)
		}
		return ps, nil
	}
	s := openSpool(t, "", down, fastRetry(Options{}))
	mustAppend(t, s, pts(0, 10))
	mustAppend(t, s, pts(10, 10))
	startRun(t, s)
	waitDelivered(t, s, down, 30)
	checkValues(t, down.values(), append(seq(0, 10), seq(0, 20)...))
}

func TestCloseIsBounded(t *testing.T) {
	t.Run("replay in flight", func(t *testing.T) {
		dir := t.TempDir()
		down := &fakeStore{down: true}
		s, err := Open(dir, down, Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, pts(0, 10))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Replay into a store that never answers, with a Timeout far
		// longer than any test.
		h := &hangStore{calls: make(chan string, 1)}
		s, err = Open(dir, h, Options{Timeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		run := goDone(func() error { return s.Run(context.Background()) })
		<-h.calls
		if err := awaitDone(t, "Close to return", goDone(s.Close)); err != nil {
			t.Fatal(err)
		}
		if err := awaitDone(t, "Run to return", run); err != nil {
			t.Fatal(err)
		}
		s = openSpool(t, dir, down, Options{})
		if p := s.Stats().Points; p != 10 {
			t.Fatalf("%d points spooled after Close, want the 10 in flight", p)
		}
	})
	t.Run("pass-through in flight", func(t *testing.T) {
		dir := t.TempDir()
		h := &hangStore{calls: make(chan string, 1)}
		s, err := Open(dir, h, Options{PassTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		appended := goDone(func() error { return s.Append(context.Background(), pts(0, 10)) })
		<-h.calls
		if err := awaitDone(t, "Close to return", goDone(s.Close)); err != nil {
			t.Fatal(err)
		}
		// The Append cut short spooled its points.
		if err := awaitDone(t, "Append to return", appended); err != nil {
			t.Fatalf("Append cut short by Close: %v, want nil (spooled)", err)
		}
		down := &fakeStore{}
		s = openSpool(t, dir, down, fastRetry(Options{}))
		startRun(t, s)
		waitDelivered(t, s, down, 10)
		checkValues(t, down.values(), seq(0, 10))
	})
}

func TestAnnotationRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    tsdb.Annotation
	}{
		// An alert transition as the leader writes it.
		{"transition", ann(3)},
		// A span, with notes, in another zone: it comes back in UTC.
		{"span", tsdb.Annotation{
			Start: time.Date(2024, 3, 1, 12, 0, 0, 500, time.FixedZone("CET", 3600)),
			End:   time.Date(2024, 3, 1, 13, 0, 0, 0, time.UTC),
			TSUID: "0000010000010000020000030000", Description: "maintenance", Notes: "kernel update",
		}},
		// Global, and empty but for its start; strings repeating.
		{"global", tsdb.Annotation{Start: base, Description: "x", Notes: "x", Custom: map[string]string{"x": "x", "": ""}}},
		// Zero times stay zero.
		{"zero", tsdb.Annotation{}},
		// Strings outside OpenTSDB's set are kept as they are.
		{"unicode", tsdb.Annotation{Start: base, Description: "ünïcode 🙂", Custom: map[string]string{"k v": "ü"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf, err := newEncoder().appendAnnotationRecord(nil, tc.a)
			if err != nil {
				t.Fatal(err)
			}
			f, err := createTemp(t, buf)
			if err != nil {
				t.Fatal(err)
			}
			r := newRecordReader(f, 0, int64(len(buf)), nil)
			k, n, payload, err := r.next()
			if err != nil || k != kindAnnotation || n != 1 {
				t.Fatalf("read record: kind %d, %d entries, %v", k, n, err)
			}
			got, err := decodeAnnotation(payload)
			if err != nil {
				t.Fatal(err)
			}
			if !sameAnnotation(got, tc.a) || got.Start.IsZero() != tc.a.Start.IsZero() || got.End.IsZero() != tc.a.End.IsZero() {
				t.Fatalf("got %+v, want %+v", got, tc.a)
			}
		})
	}
}

func TestDecodeAnnotationRejectsGarbage(t *testing.T) {
	good, err := newEncoder().appendAnnotationRecord(nil, ann(1))
	if err != nil {
		t.Fatal(err)
	}
	payload := good[headerSize:]
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		// Cut inside the custom fields.
		{"cut", payload[:len(payload)-3]},
		// Bytes after the annotation.
		{"long", append(slices.Clone(payload), 0)},
		// An end flag other than 0 or 1.
		{"end flag", []byte{2, 0, 7, 0, 0, 0, 0, 0}},
		// Nanoseconds past a second.
		{"nanos", []byte{2, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0}},
		// More custom fields than bytes.
		{"custom count", []byte{2, 0, 0, 0, 0, 1, 1, 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeAnnotation(tc.b); err == nil {
				t.Fatal("garbage decoded without an error")
			}
		})
	}
}

func TestDamagedAnnotationIsCutOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		// damage changes the segment, whose last record, an
		// annotation, starts at last.
		damage func(t *testing.T, path string, last int64)
	}{
		// Cut in the middle of the annotation.
		{"cut", func(t *testing.T, path string, last int64) {
			truncate(t, path, last+headerSize+3)
		}},
		// A bit flipped in its payload: the checksum finds it.
		{"flipped byte", func(t *testing.T, path string, last int64) {
			b := readFile(t, path)
			b[len(b)-2] ^= 0x04
			writeFile(t, path, b)
		}},
		// A kind no version writes.
		{"unknown kind", func(t *testing.T, path string, last int64) {
			b := readFile(t, path)
			b[last+7] = 9
			writeFile(t, path, b)
		}},
		// The kind flipped to points: the count does not fit.
		{"kind flipped", func(t *testing.T, path string, last int64) {
			b := readFile(t, path)
			b[last+7] = 0
			writeFile(t, path, b)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			down := &fakeStore{down: true}
			s, err := Open(dir, down, fastRetry(Options{}))
			if err != nil {
				t.Fatal(err)
			}
			mustAppend(t, s, pts(0, 10))
			mustAnnotate(t, s, ann(1))
			mustAppend(t, s, pts(10, 10))
			last := s.Stats().Bytes
			mustAnnotate(t, s, ann(2))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			tc.damage(t, files[0], last)

			sink := &logSink{}
			down.setDown(false)
			s = openSpool(t, dir, down, fastRetry(Options{Logger: slog.New(sink)}))
			if st := s.Stats(); st.Points != 20 || st.Annotations != 1 || st.Bytes != last {
				t.Fatalf("after reopening: %+v, want 20 points and 1 annotation in %d bytes", st, last)
			}
			if _, n := sink.sum(slog.LevelWarn, "damaged record", ""); n != 1 {
				t.Errorf("%d warnings about the damage, want 1", n)
			}
			mustAnnotate(t, s, ann(3))
			startRun(t, s)
			waitDelivered(t, s, down, 20)
			got, at := down.annotations()
			checkValues(t, annIDs(got), []int{1, 3})
			checkValues(t, at, []int{10, 20})
		})
	}
}

// FuzzSegment reads arbitrary bytes as a segment file: every record the
// reader accepts must be of a known kind and decode or fail cleanly, and
// a damaged one must be reported as damage, never as a record.
func FuzzSegment(f *testing.F) {
	enc := newEncoder()
	buf, _ := enc.appendRecords(nil, pts(0, 3))
	buf, _ = enc.appendAnnotationRecord(buf, ann(1))
	buf, _ = enc.appendRecords(buf, pts(3, 1))
	f.Add(buf)
	one, _ := enc.appendAnnotationRecord(nil, tsdb.Annotation{Start: base})
	f.Add(one)
	f.Add(buf[:len(buf)-5])
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := createTemp(t, b)
		if err != nil {
			t.Fatal(err)
		}
		r := newRecordReader(file, 0, int64(len(b)), nil)
		for {
			k, n, payload, err := r.next()
			if errors.Is(err, io.EOF) || errors.Is(err, errDamaged) {
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			switch k {
			case kindPoints:
				got, err := decodePayload(nil, payload, n)
				if err == nil && len(got) != n {
					t.Fatalf("decoded %d points of %d", len(got), n)
				}
			case kindAnnotation:
				a, err := decodeAnnotation(payload)
				if err != nil {
					continue
				}
				// What decodes encodes back to the same annotation.
				checkReencodes(t, a)
			default:
				t.Fatalf("reader accepted a record of kind %d", k)
			}
		}
	})
}

// FuzzDecodeAnnotation decodes arbitrary bytes as an annotation record's
// payload, as a record that passed its checksum but was written by a bug
// would be: it must fail cleanly or give an annotation that encodes back
// to itself.
func FuzzDecodeAnnotation(f *testing.F) {
	for _, a := range []tsdb.Annotation{ann(1), {}, {Start: base, End: base.Add(time.Hour), Notes: "n"}} {
		rec, err := newEncoder().appendAnnotationRecord(nil, a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec[headerSize:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, err := decodeAnnotation(b); err == nil {
			checkReencodes(t, a)
		}
	})
}

// checkReencodes fails t unless a, encoded as a record, decodes back to a.
func checkReencodes(t *testing.T, a tsdb.Annotation) {
	t.Helper()
	rec, err := newEncoder().appendAnnotationRecord(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeAnnotation(rec[headerSize:])
	if err != nil || !sameAnnotation(back, a) {
		t.Fatalf("re-encoded %+v decodes as %+v, %v", a, back, err)
	}
}
