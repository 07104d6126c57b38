package observer

import (
	"context"
	"log/slog"
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

// Writer batches datapoints into the store. It never delays a point to
// fill a batch: it appends whatever has queued up while the previous append
// ran, so batches grow only under load. A point handed to write is appended
// before run returns, unless the store refuses it. Annotations go through
// the same queue, so a slow remote store never blocks the leader.
type Writer struct {
	store     Appender
	annotator Annotator // nil: annotations are not written
	in        chan item
	maxBatch  int
	log       *slog.Logger
	written   prometheus.Counter
	failed    prometheus.Counter
	done      chan struct{}
}

// item is one thing to write: points, or an annotation.
type item struct {
	points     []tsdb.Point
	annotation *tsdb.Annotation
}

// NewWriter returns a Writer into store, and of annotations into
// annotator (nil: they are not written). reg takes its metrics; nil skips
// them. Run it, and Close it once nothing writes any more.
func NewWriter(store Appender, annotator Annotator, log *slog.Logger, reg prometheus.Registerer) *Writer {
	w := &Writer{store: store, annotator: annotator, in: make(chan item, 1024), maxBatch: 5000, log: log,
		done: make(chan struct{}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_tsdb_points_written_total", Help: "Datapoints appended to the TSDB.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dmonitor_tsdb_append_errors_total", Help: "Batches the TSDB refused or failed to take.",
		}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if reg != nil {
		reg.MustRegister(w.written, w.failed)
	}
	return w
}

// Write queues points; it blocks while the queue is full, so a slow store
// slows the checks down rather than losing their results.
func (w *Writer) Write(points []tsdb.Point) { w.in <- item{points: points} }

// Annotate queues an annotation, if the store takes them.
func (w *Writer) Annotate(a tsdb.Annotation) {
	if w.annotator != nil {
		w.in <- item{annotation: &a}
	}
}

// Run appends queued points until Close, then appends what is still
// queued and returns. The store gets its own context: shutdown must flush,
// not abandon, what is queued.
func (w *Writer) Run() {
	defer close(w.done)
	batch := make([]tsdb.Point, 0, w.maxBatch)
	var notes []tsdb.Annotation
	for it := range w.in {
		batch, notes = w.add(batch[:0], notes[:0], it)
	drain:
		for len(batch) < w.maxBatch {
			select {
			case more, ok := <-w.in:
				if !ok {
					break drain
				}
				batch, notes = w.add(batch, notes, more)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			w.append(batch)
		}
		// After the points, so an annotation never precedes the state
		// points of its transition.
		for _, a := range notes {
			w.putAnnotation(a)
		}
	}
}

func (w *Writer) add(batch []tsdb.Point, notes []tsdb.Annotation, it item) ([]tsdb.Point, []tsdb.Annotation) {
	if it.annotation != nil {
		return batch, append(notes, *it.annotation)
	}
	return append(batch, it.points...), notes
}

func (w *Writer) putAnnotation(a tsdb.Annotation) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.annotator.PutAnnotation(ctx, a); err != nil {
		w.log.Error("write alert annotation", "description", a.Description, "err", err)
	}
}

func (w *Writer) append(batch []tsdb.Point) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.store.Append(ctx, batch); err != nil {
		w.failed.Inc()
		w.log.Error("tsdb append failed", "points", len(batch), "err", err)
		return
	}
	w.written.Add(float64(len(batch)))
}

// Close ends the writing once everything queued is written, and waits for
// Run to return. Nothing may Write or Annotate after it.
func (w *Writer) Close() {
	close(w.in)
	<-w.done
}
