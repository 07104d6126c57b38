package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/tsdb"
)

func TestPassthroughWhenHealthy(t *testing.T) {
	down := &fakeStore{}
	s := openSpool(t, "", down, Options{})
	// No Run: with a healthy downstream nothing waits for replay.
	for i := range 10 {
		mustAppend(t, s, pts(i*100, 100))
		checkValues(t, down.values(), seq(0, (i+1)*100))
	}
	if st := s.Stats(); st.Points != 0 || st.Bytes != 0 || st.Spooled != 0 {
		t.Errorf("stats after passthrough: %+v, want nothing spooled", st)
	}
}

func TestOutageSpoolsThenReplaysInOrderExactlyOnce(t *testing.T) {
	down := &fakeStore{down: true}
	// Small segments and replay batches, so replay crosses segments and
	// takes many calls.
	s := openSpool(t, "", down, fastRetry(Options{SegmentBytes: 4 << 10, ReplayBatch: 300}))
	startRun(t, s)

	const batches, per = 200, 25
	for i := range batches {
		// Append keeps succeeding: checks go on during the outage.
		mustAppend(t, s, pts(i*per, per))
	}
	if got := down.values(); len(got) != 0 {
		t.Fatalf("downstream stored %d points while unavailable", len(got))
	}
	st := s.Stats()
	if st.Points != batches*per || st.Spooled != batches*per {
		t.Fatalf("stats during the outage: %+v, want %d points spooled", st, batches*per)
	}
	if files, _ := filepath.Glob(filepath.Join(s.dir, "*.seg")); len(files) < 2 {
		t.Fatalf("%d segment files, want several", len(files))
	}

	down.setDown(false)
	waitDelivered(t, s, down, batches*per)
	// Appends after the replay pass straight through again, behind it.
	mustAppend(t, s, pts(batches*per, per))
	checkValues(t, down.values(), seq(0, (batches+1)*per))
	st = s.Stats()
	if st.Replayed != batches*per || st.Points != 0 || st.Dropped != 0 {
		t.Errorf("stats after replay: %+v", st)
	}
	if st.Bytes > 0 {
		t.Errorf("spool still holds %d bytes after replay", st.Bytes)
	}
}

func TestAppendQueuesBehindSpooledPoints(t *testing.T) {
	down := &fakeStore{down: true}
	s := openSpool(t, "", down, fastRetry(Options{}))
	mustAppend(t, s, pts(0, 10))
	// The downstream is back, but Run has not replayed yet: a new
	// Append must not overtake the spooled points.
	down.setDown(false)
	mustAppend(t, s, pts(10, 10))
	if got := down.values(); len(got) != 0 {
		t.Fatalf("points %v overtook the spool", got)
	}
	startRun(t, s)
	waitDelivered(t, s, down, 20)
	checkValues(t, down.values(), seq(0, 20))
}

func TestRestartKeepsSpooledPoints(t *testing.T) {
	dir := t.TempDir()
	down := &fakeStore{down: true}
	// One segment: only the saved cursor can tell what was delivered.
	opts := fastRetry(Options{ReplayBatch: 40})
	s, err := Open(dir, down, opts)
	if err != nil {
		t.Fatal(err)
	}
	const total = 2000
	for i := 0; i < total; i += 20 {
		mustAppend(t, s, pts(i, 20))
	}

	// Deliver part of it, then stop: the downstream fails after 10 calls.
	calls := 0
	down.setJudge(func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if calls++; calls > 10 {
			return nil, errDown
		}
		return ps, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	await.Until(t, "the downstream to fail", func() bool {
		down.mu.Lock()
		defer down.mu.Unlock()
		return calls > 10
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	replayed := int64(s.Stats().Replayed)
	if replayed != 10*40 {
		t.Fatalf("%d points replayed in 10 calls of 40", replayed)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	down.setJudge(nil)
	down.setDown(false)
	s = openSpool(t, dir, down, opts)
	if st := s.Stats(); st.Points != total-replayed {
		t.Fatalf("after reopening: %d points spooled, want %d", st.Points, total-replayed)
	}
	startRun(t, s)
	waitDelivered(t, s, down, total)
	// Exactly once: what was replayed before is not delivered again.
	checkValues(t, down.values(), seq(0, total))
}

func TestOpenRefusesADirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	openSpool(t, dir, &fakeStore{}, Options{})
	if s, err := Open(dir, &fakeStore{}, Options{}); err == nil {
		s.Close()
		t.Fatal("a second Open of a spool in use succeeded")
	}
}

func TestErrorsThatBlameTheData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		spools bool
	}{
		// The store refused the data: retrying cannot help.
		{"invalid", fmt.Errorf("opentsdb: 400 bad metric: %w", tsdb.ErrInvalid), false},
		// An error that does not say the store is unavailable blames
		// the data, by the tsdb contract.
		{"unclassified", errTest, false},
		// The store is down: spooled.
		{"unavailable", errDown, true},
		// The call ran out of time: nothing against the data.
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down := &fakeStore{judge: func([]tsdb.Point) ([]tsdb.Point, error) { return nil, tc.err }}
			s := openSpool(t, "", down, Options{})
			err := s.Append(context.Background(), pts(0, 10))
			if tc.spools {
				if err != nil {
					t.Fatalf("Append: %v, want nil (spooled)", err)
				}
				if p := s.Stats().Points; p != 10 {
					t.Fatalf("%d points spooled, want 10", p)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("Append: %v, want %v", err, tc.err)
			}
			if st := s.Stats(); st.Points != 0 || st.Bytes != 0 {
				t.Fatalf("refused points were spooled: %+v", st)
			}
		})
	}
}

func TestPartialFailureSpoolsOnlyUnstored(t *testing.T) {
	down := &fakeStore{}
	// The store keeps the first 4 points of the first call and is then
	// unavailable.
	first := true
	down.judge = func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if first {
			first = false
			return ps[:4], &partialErr{unstored: ps[4:], cause: errDown}
		}
		return nil, errDown
	}
	s := openSpool(t, "", down, fastRetry(Options{}))
	mustAppend(t, s, pts(0, 10))
	mustAppend(t, s, pts(10, 5))
	if st := s.Stats(); st.Points != 11 {
		t.Fatalf("%d points spooled, want the 6 unstored and the 5 after", st.Points)
	}
	down.setJudge(nil)
	startRun(t, s)
	waitDelivered(t, s, down, 15)
	checkValues(t, down.values(), seq(0, 15))
}

func TestPartialFailureInReplay(t *testing.T) {
	down := &fakeStore{down: true}
	s := openSpool(t, "", down, fastRetry(Options{}))
	mustAppend(t, s, pts(0, 10))
	mustAppend(t, s, pts(10, 10))
	// Replay's first call keeps 7 points; the retry must send only the
	// other 13.
	first := true
	down.setJudge(func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if first {
			first = false
			return ps[:7], &partialErr{unstored: ps[7:], cause: errDown}
		}
		return ps, nil
	})
	startRun(t, s)
	waitDelivered(t, s, down, 20)
	checkValues(t, down.values(), seq(0, 20))
	if r := s.Stats().Replayed; r != 20 {
		t.Errorf("Replayed = %d, want 20", r)
	}
}

func TestReplayDropsRefusedRecords(t *testing.T) {
	down := &fakeStore{down: true}
	sink := &logSink{}
	s := openSpool(t, "", down, fastRetry(Options{Logger: slog.New(sink)}))
	bad := pts(30, 10)
	bad[3].Metric = "bad metric"
	for i := range 6 {
		if i == 3 {
			mustAppend(t, s, bad)
			continue
		}
		mustAppend(t, s, pts(i*10, 10))
	}
	// The store refuses any call holding the bad point, and stores
	// nothing of it.
	down.setJudge(func(ps []tsdb.Point) ([]tsdb.Point, error) {
		for _, p := range ps {
			if p.Metric == "bad metric" {
				return nil, fmt.Errorf("opentsdb: 400 illegal character in metric: %w", tsdb.ErrInvalid)
			}
		}
		return ps, nil
	})
	startRun(t, s)
	waitDelivered(t, s, down, 50)
	// Only the Append holding the bad point is lost, as it would have
	// been without the spool.
	checkValues(t, down.values(), append(seq(0, 30), seq(40, 60)...))
	if st := s.Stats(); st.Rejected != 10 || st.Replayed != 50 {
		t.Errorf("stats: %+v, want 10 rejected and 50 replayed", st)
	}
	if n, _ := sink.sum(slog.LevelError, "refused", "points"); n != 10 {
		t.Errorf("error logs report %d refused points, want 10", n)
	}
}

func TestOverflowDropsOldestCountedAndReported(t *testing.T) {
	down := &fakeStore{down: true}
	sink := &logSink{}
	const maxBytes = 32 << 10
	s := openSpool(t, "", down, fastRetry(Options{MaxBytes: maxBytes, SegmentBytes: 4 << 10, Logger: slog.New(sink)}))
	const batches, per = 1000, 10
	for i := range batches {
		mustAppend(t, s, pts(i*per, per))
		if b := s.Stats().Bytes; b > maxBytes {
			t.Fatalf("spool holds %d bytes, over its limit of %d", b, maxBytes)
		}
	}
	st := s.Stats()
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", st)
	}
	if int64(st.Dropped)+st.Points != batches*per {
		t.Fatalf("%d dropped + %d spooled != %d appended", st.Dropped, st.Points, batches*per)
	}
	logged, records := sink.sum(slog.LevelError, "dropped the oldest", "points")
	if logged != int64(st.Dropped) {
		t.Errorf("error logs report %d dropped points in %d records, Stats %d", logged, records, st.Dropped)
	}

	down.setDown(false)
	startRun(t, s)
	waitDelivered(t, s, down, int(st.Points))
	// The count is exact: what arrives is everything after the first
	// Dropped points.
	checkValues(t, down.values(), seq(int(st.Dropped), batches*per))
}

// gateStore is a downstream whose calls block until the test answers
// them, so a test can act while a replay call is in flight.
type gateStore struct {
	fakeStore
	calls   chan []tsdb.Point
	answers chan error
}

func (g *gateStore) Append(ctx context.Context, ps []tsdb.Point) error {
	g.calls <- ps
	err := <-g.answers
	if err == nil {
		g.mu.Lock()
		g.got = append(g.got, ps...)
		g.mu.Unlock()
	}
	return err
}

func TestOverflowWhileReplayIsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer error
	}{
		// The batch arrives although its segment was dropped: it is
		// delivered, not counted as dropped.
		{"delivered", nil},
		// It fails: the spool does not keep newer points waiting for
		// it, and counts it as dropped.
		{"failed", errDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &gateStore{calls: make(chan []tsdb.Point), answers: make(chan error)}
			const maxBytes = 16 << 10
			s, err := Open(t.TempDir(), g, fastRetry(Options{MaxBytes: maxBytes, SegmentBytes: 2 << 10, ReplayBatch: 20}))
			if err != nil {
				t.Fatal(err)
			}
			// The first Append goes to the downstream: refuse it.
			go func() { <-g.calls; g.answers <- errDown }()
			mustAppend(t, s, pts(0, 10))
			ctx, cancel := context.WithCancel(context.Background())
			runDone := make(chan error)
			go func() { runDone <- s.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				// Answer a call in flight, so Run can return.
				select {
				case <-g.calls:
					g.answers <- errDown
				case <-runDone:
				}
				s.Close()
			})
			inFlight := <-g.calls
			n := 10
			for s.Stats().Dropped == 0 {
				mustAppend(t, s, pts(n, 10))
				n += 10
			}
			// Fill more, so the dropped segment is not the only one.
			for range 20 {
				mustAppend(t, s, pts(n, 10))
				n += 10
			}
			g.answers <- tc.answer
			// From here on, every call succeeds.
			go func() {
				for {
					select {
					case <-g.calls:
						g.answers <- nil
					case <-ctx.Done():
						return
					}
				}
			}()
			await.Until(t, "the spool to empty", func() bool { return s.Stats().Points == 0 })
			st := s.Stats()
			got := g.values()
			if int(st.Dropped)+len(got) != n {
				t.Fatalf("%d delivered + %d counted dropped != %d appended (in flight: %d points)", len(got), st.Dropped, n, len(inFlight))
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("delivered out of order or twice: %d after %d", got[i], got[i-1])
				}
			}
			if tc.answer == nil && (len(got) == 0 || got[0] != 0) {
				t.Fatalf("the batch in flight was not delivered first: %v", got[:min(len(got), 5)])
			}
		})
	}
}

func TestConcurrentAppendsWhileReplaying(t *testing.T) {
	down := &fakeStore{}
	// The downstream fails every third call, so spooling and replay
	// interleave with direct appends.
	calls := 0
	down.judge = func(ps []tsdb.Point) ([]tsdb.Point, error) {
		if calls++; calls%3 == 0 {
			return nil, errDown
		}
		return ps, nil
	}
	s := openSpool(t, "", down, fastRetry(Options{SegmentBytes: 8 << 10, ReplayBatch: 64}))
	startRun(t, s)
	const writers, batches, per = 4, 200, 5
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				// Writer w owns values w*1e6 + k, in order.
				ps := pts(w*1_000_000+b*per, per)
				if err := s.Append(context.Background(), ps); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitDelivered(t, s, down, writers*batches*per)
	byWriter := make([][]int, writers)
	for _, v := range down.values() {
		byWriter[v/1_000_000] = append(byWriter[v/1_000_000], v%1_000_000)
	}
	for _, got := range byWriter {
		// Each writer's points arrive in its order, each once.
		checkValues(t, got, seq(0, batches*per))
	}
}

func TestRunAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), &fakeStore{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if err := s.Append(context.Background(), pts(0, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
}

// segFiles returns the segment files of the spool in dir.
func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestSyncedSpoolRoundTrip(t *testing.T) {
	dir := t.TempDir()
	down := &fakeStore{down: true}
	opts := fastRetry(Options{Sync: true, SegmentBytes: 1 << 10})
	s, err := Open(dir, down, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustAppend(t, s, pts(i*10, 10))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	down.setDown(false)
	s = openSpool(t, dir, down, opts)
	startRun(t, s)
	waitDelivered(t, s, down, 200)
	checkValues(t, down.values(), seq(0, 200))
}
