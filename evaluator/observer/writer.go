package observer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/tsdb"
)

// Appender is where results and alert history are written.
type Appender interface {
	Append(ctx context.Context, points []tsdb.Point) error
}

// Annotator stores annotations; alert transitions are written as such
// when the store offers it.
type Annotator interface {
	PutAnnotation(ctx context.Context, a tsdb.Annotation) error
}

// Default bounds of a Writer's queue.
const (
	DefaultMaxQueuedPoints = 200_000
	maxQueuedNotes         = 10_000
	maxBatch               = 5000
	// storeTimeout bounds one call to the store. The OpenTSDB backend's
	// spool answers far sooner (it spools what the network does not take
	// at once); this only stops a store that hangs outright from holding
	// the queue for ever.
	storeTimeout = 30 * time.Second
)

// Writer hands datapoints and annotations to the store from a goroutine of
// its own, so that recording a result never waits on the store: Write and
// Annotate only queue. A slow or failing store makes the queue grow, up to
// a bound past which the oldest points are dropped, counted and logged:
// the store behind the writer (the spool of the OpenTSDB backend, the
// memory buffer of the embedded store on a full disk) is where points wait
// out an outage, not here. Batches are never delayed to fill up: each
// append takes whatever queued while the previous one ran.
type Writer struct {
	store     Appender
	annotator Annotator // nil: annotations are not written
	log       *slog.Logger
	maxPoints int

	mu       sync.Mutex
	points   []tsdb.Point
	notes    []tsdb.Annotation
	closed   bool
	dropping bool // an overflow episode is on: logged once, until the queue drains

	wake    chan struct{} // a token: something was queued
	stop    chan struct{} // closed by Close: write what is queued, then return
	abandon chan struct{} // closed when Close's deadline passes
	done    chan struct{} // closed when Run returns

	failed  prometheus.Counter
	dropped *prometheus.CounterVec

	// seconds holds the annotations written lately, by start second: see
	// merge. Only Run's goroutine uses it.
	seconds map[int64][]tsdb.Annotation
}

// WriterOptions configure a Writer. Zero values mean the defaults.
type WriterOptions struct {
	// MaxQueuedPoints bounds the points waiting for the store (default
	// DefaultMaxQueuedPoints, about 30 MiB).
	MaxQueuedPoints int
	Logger          *slog.Logger
	// Registerer takes the writer's metrics; nil skips them.
	Registerer prometheus.Registerer
}

// NewWriter returns a Writer into store, and of annotations into
// annotator (nil: they are not written). Run it, and Close it once nothing
// writes any more.
func NewWriter(store Appender, annotator Annotator, o WriterOptions) *Writer {
	w := &Writer{store: store, annotator: annotator, log: o.Logger, maxPoints: o.MaxQueuedPoints,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{}),
		seconds: make(map[int64][]tsdb.Annotation),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_tsdb_append_errors_total", Help: "Batches the TSDB refused or failed to take.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmonitor_writer_dropped_points_total",
			Help: "Datapoints dropped before reaching the TSDB: the writer's queue was full (queue_full), or shutdown's flush deadline passed (shutdown).",
		}, []string{"reason"}),
	}
	if w.maxPoints <= 0 {
		w.maxPoints = DefaultMaxQueuedPoints
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if o.Registerer != nil {
		queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "dmonitor_writer_queue_points", Help: "Datapoints queued for the TSDB by the writer.",
		}, func() float64 { w.mu.Lock(); defer w.mu.Unlock(); return float64(len(w.points)) })
		o.Registerer.MustRegister(w.failed, w.dropped, queued)
	}
	return w
}

// Write queues points for the store. It never blocks.
func (w *Writer) Write(points []tsdb.Point) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.dropped.WithLabelValues("shutdown").Add(float64(len(points)))
		return
	}
	if over := len(w.points) + len(points) - w.maxPoints; over > 0 {
		w.overflow(over)
	}
	w.points = append(w.points, points...)
	w.mu.Unlock()
	w.signal()
}

// overflow drops the n oldest queued points (or all of them, and the
// newest of those being written beyond), under mu.
func (w *Writer) overflow(n int) {
	n = min(n, len(w.points))
	w.points = w.points[:copy(w.points, w.points[n:])]
	w.dropped.WithLabelValues("queue_full").Add(float64(n))
	if !w.dropping {
		w.dropping = true
		w.log.Error("tsdb writer queue full: dropping the oldest datapoints; the store takes them slower than checks produce them",
			"queued", w.maxPoints, "dropped", n)
	}
}

// Annotate queues an annotation, if the store takes them. It never blocks.
func (w *Writer) Annotate(a tsdb.Annotation) {
	if w.annotator == nil {
		return
	}
	w.mu.Lock()
	if w.closed || len(w.notes) >= maxQueuedNotes {
		w.mu.Unlock()
		w.log.Error("alert annotation dropped: the writer is stopping or its queue is full", "description", a.Description)
		return
	}
	w.notes = append(w.notes, a)
	w.mu.Unlock()
	w.signal()
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes what is queued until Close, then what is still queued, and
// returns. Store calls get a context of their own: shutdown flushes, it
// does not abandon, until Close's deadline passes.
func (w *Writer) Run() {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.abandon:
			cancel()
		case <-w.done:
		}
	}()
	for {
		select {
		case <-w.wake:
			w.flush(ctx)
		case <-w.stop:
			w.flush(ctx)
			return
		}
	}
}

// flush writes everything queued, in batches, each batch's annotations
// after its points so an annotation never precedes the state points of
// its transition.
func (w *Writer) flush(ctx context.Context) {
	for {
		w.mu.Lock()
		n := min(len(w.points), maxBatch)
		if len(w.notes) > 0 {
			// The annotations were queued after some of these points:
			// write them all first.
			n = len(w.points)
		}
		batch := make([]tsdb.Point, n)
		copy(batch, w.points)
		w.points = w.points[:copy(w.points, w.points[n:])]
		notes := w.notes
		w.notes = nil
		if len(w.points) < w.maxPoints/2 {
			w.dropping = false
		}
		w.mu.Unlock()
		if len(batch) == 0 && len(notes) == 0 {
			return
		}
		if ctx.Err() != nil {
			w.mu.Lock()
			lost := len(batch) + len(w.points)
			w.points = nil
			w.mu.Unlock()
			w.dropped.WithLabelValues("shutdown").Add(float64(lost))
			w.log.Error("shutdown flush deadline passed: datapoints and annotations not written", "points", lost, "annotations", len(notes))
			return
		}
		for b := range chunks(batch, maxBatch) {
			w.append(ctx, b)
		}
		for _, a := range w.merge(notes) {
			w.putAnnotation(ctx, a)
		}
	}
}

func chunks(s []tsdb.Point, n int) func(func([]tsdb.Point) bool) {
	return func(yield func([]tsdb.Point) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// mergeWindow is how far back, in seconds, merge remembers what it wrote.
const mergeWindow = 10

// TransitionsKey is the custom field of an annotation that stands for
// several alert transitions in the same second: how many.
const TransitionsKey = "transitions"

// maxListed bounds the transitions one merged annotation lists by name;
// it counts them all.
const maxListed = 50

// merge returns the annotations to write for notes: each global one
// (no TSUID) merged with those written before in the same second, once per
// second: OpenTSDB keeps one global annotation per start second, so a
// second one would replace the first. The one written instead lists them
// (up to maxListed), and says how many in its custom field TransitionsKey.
// A burst of n transitions in one second is one write, not n growing ones.
func (w *Writer) merge(notes []tsdb.Annotation) []tsdb.Annotation {
	var out []tsdb.Annotation
	var touched []int64
	for _, a := range notes {
		if a.TSUID != "" {
			out = append(out, a)
			continue
		}
		sec := a.Start.Unix()
		if !slices.Contains(touched, sec) {
			touched = append(touched, sec)
		}
		w.seconds[sec] = append(w.seconds[sec], a)
	}
	for _, sec := range touched {
		for k := range w.seconds {
			if k < sec-mergeWindow {
				delete(w.seconds, k)
			}
		}
		same := w.seconds[sec]
		if len(same) == 1 {
			out = append(out, same[0])
			continue
		}
		descs, notes := make([]string, 0, min(len(same), maxListed)), make([]string, 0, min(len(same), maxListed))
		for _, s := range same[:min(len(same), maxListed)] {
			descs = append(descs, s.Description)
			if s.Notes != "" {
				notes = append(notes, s.Notes)
			}
		}
		if more := len(same) - len(descs); more > 0 {
			descs = append(descs, fmt.Sprintf("and %d more", more))
		}
		out = append(out, tsdb.Annotation{
			Start:       time.Unix(sec, 0),
			Description: fmt.Sprintf("%d alert transitions: %s", len(same), strings.Join(descs, "; ")),
			Notes:       strings.Join(notes, "\n"),
			Custom:      map[string]string{TransitionsKey: strconv.Itoa(len(same))},
		})
	}
	return out
}

func (w *Writer) putAnnotation(ctx context.Context, a tsdb.Annotation) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := w.annotator.PutAnnotation(ctx, a); err != nil {
		w.log.Error("write alert annotation", "description", a.Description, "err", err)
	}
}

func (w *Writer) append(ctx context.Context, batch []tsdb.Point) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := w.store.Append(ctx, batch); err != nil {
		w.failed.Inc()
		w.log.Error("tsdb append failed", "points", len(batch), "err", err)
	}
}

// Close stops the writing once everything queued is written, and waits
// for Run to return; when ctx ends first, the store call in flight is
// cancelled and what is still queued is dropped, counted and logged, so
// shutdown always ends. Nothing written after Close is kept.
func (w *Writer) Close(ctx context.Context) {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	select {
	case <-w.done:
	case <-ctx.Done():
		close(w.abandon)
		<-w.done
	}
}
