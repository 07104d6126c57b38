package observer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/tsdb"
)

// hungStore is a store that takes nothing until released: a TSDB that
// accepted the connection and never answers.
type hungStore struct {
	release chan struct{}
	mu      sync.Mutex
	calls   int
	got     []string // metric of each point, then "note:" + each annotation, in arrival order
}

func newHungStore() *hungStore { return &hungStore{release: make(chan struct{})} }

func (s *hungStore) Append(ctx context.Context, pts []tsdb.Point) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range pts {
		s.got = append(s.got, p.Metric)
	}
	return nil
}

func (s *hungStore) PutAnnotation(ctx context.Context, a tsdb.Annotation) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, "note:"+a.Description)
	return nil
}

// count is how many points and annotations the store has taken.
func (s *hungStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *hungStore) inFlight() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls > 0
}

func point(metric string) []tsdb.Point {
	return []tsdb.Point{{Metric: metric, Tags: map[string]string{"host": "a"}, Time: time.Unix(1, 0), Value: 1}}
}

// A store that hangs never holds up Write or Annotate: the queue grows to
// its bound, then the oldest points go, counted.
func TestWriterNeverBlocks(t *testing.T) {
	store := newHungStore()
	reg := prometheus.NewRegistry()
	w := NewWriter(store, store, WriterOptions{MaxQueuedPoints: 100, Registerer: reg})
	done := make(chan struct{})
	go func() { defer close(done); w.Run() }()

	w.Write(point("first"))
	await.Until(t, "the writer is in the store", store.inFlight)
	for range 1000 {
		w.Write(point("x")) // would hang here if Write waited on the store
		w.Annotate(tsdb.Annotation{Description: "transition"})
	}
	if got := testutil.ToFloat64(w.dropped.WithLabelValues("queue_full")); got != 900 {
		t.Errorf("dropped for a full queue = %v, want 900 (1000 written behind a hung store, 100 kept)", got)
	}
	if n, err := testutil.GatherAndCount(reg, "dmonitor_writer_queue_points"); err != nil || n != 1 {
		t.Errorf("queue gauge: %d, %v", n, err)
	}

	// Shutdown with the store still hung ends at its deadline.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.Close(ctx)
	<-done
	if got := testutil.ToFloat64(w.dropped.WithLabelValues("shutdown")); got != 100 {
		t.Errorf("dropped at shutdown = %v, want the 100 still queued", got)
	}
	w.Write(point("late")) // after Close: counted, not a panic
}

// Close without a deadline writes everything queued, each annotation after
// the points queued before it.
func TestWriterFlushesInOrder(t *testing.T) {
	store := newHungStore()
	w := NewWriter(store, store, WriterOptions{})
	done := make(chan struct{})
	go func() { defer close(done); w.Run() }()
	w.Write(point("a"))
	await.Until(t, "the writer is in the store", store.inFlight)
	w.Write(point("b"))
	w.Annotate(tsdb.Annotation{Description: "b changed"})
	w.Write(point("c"))
	close(store.release)
	w.Close(context.Background())
	<-done
	want := []string{"a", "b", "c", "note:b changed"}
	if len(store.got) != len(want) {
		t.Fatalf("store got %q, want %q", store.got, want)
	}
	for i := range want {
		if store.got[i] != want[i] {
			t.Fatalf("store got %q, want %q", store.got, want)
		}
	}
}

// OpenTSDB keeps one global annotation per start second: the transitions
// of one second end up in one annotation that lists them all (up to 50,
// counting the rest), written once for what one flush holds; a later
// transition of the same second rewrites it with all of them.
func TestWriterMergesAnnotationsOfOneSecond(t *testing.T) {
	store := newHungStore()
	close(store.release)
	w := NewWriter(store, store, WriterOptions{})
	t0 := time.Unix(1000, 0)
	for i, d := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 1100 * time.Millisecond} {
		w.Annotate(tsdb.Annotation{Start: t0.Add(d), Description: fmt.Sprint("t", i)})
	}
	var burst []string
	for i := range 60 {
		w.Annotate(tsdb.Annotation{Start: t0.Add(5 * time.Second), Description: fmt.Sprint("b", i)})
		if i < 50 {
			burst = append(burst, fmt.Sprint("b", i))
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); w.Run() }() // all queued: one flush
	await.Until(t, "the first flush", func() bool { return store.count() >= 3 })
	w.Annotate(tsdb.Annotation{Start: t0.Add(200 * time.Millisecond), Description: "late"})
	w.Close(context.Background())
	<-done
	want := []string{"note:3 alert transitions: t0; t1; t2", "note:t3",
		"note:60 alert transitions: " + strings.Join(burst, "; ") + "; and 10 more",
		"note:4 alert transitions: t0; t1; t2; late"}
	if fmt.Sprint(store.got) != fmt.Sprint(want) {
		t.Errorf("annotations written %q,\nwant %q (one per second and flush, the last of each second standing for all of it)", store.got, want)
	}
}
