package evaluator

import (
	"context"
	"log/slog"
	"time"

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

// writer batches datapoints into the store. It never delays a point to
// fill a batch: it appends whatever has queued up while the previous append
// ran, so batches grow only under load. A point handed to write is appended
// before run returns, unless the store refuses it. Annotations go through
// the same queue, so a slow remote store never blocks the leader.
type writer struct {
	store     Appender
	annotator Annotator // nil: annotations are not written
	in        chan item
	maxBatch  int
	log       *slog.Logger
	metrics   *metrics
}

// item is one thing to write: points, or an annotation.
type item struct {
	points     []tsdb.Point
	annotation *tsdb.Annotation
}

func newWriter(store Appender, annotator Annotator, log *slog.Logger, m *metrics) *writer {
	return &writer{store: store, annotator: annotator, in: make(chan item, 1024), maxBatch: 5000, log: log, metrics: m}
}

// write queues points; it blocks while the queue is full, so a slow store
// slows the checks down rather than losing their results.
func (w *writer) write(points []tsdb.Point) { w.in <- item{points: points} }

// annotate queues an annotation, if the store takes them.
func (w *writer) annotate(a tsdb.Annotation) {
	if w.annotator != nil {
		w.in <- item{annotation: &a}
	}
}

// run appends queued points until in is closed and drained. The store gets
// its own context: shutdown must flush, not abandon, what is queued.
func (w *writer) run() {
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

func (w *writer) add(batch []tsdb.Point, notes []tsdb.Annotation, it item) ([]tsdb.Point, []tsdb.Annotation) {
	if it.annotation != nil {
		return batch, append(notes, *it.annotation)
	}
	return append(batch, it.points...), notes
}

func (w *writer) putAnnotation(a tsdb.Annotation) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.annotator.PutAnnotation(ctx, a); err != nil {
		w.log.Error("write alert annotation", "description", a.Description, "err", err)
	}
}

func (w *writer) append(batch []tsdb.Point) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.store.Append(ctx, batch); err != nil {
		w.metrics.appendErrors.Inc()
		w.log.Error("tsdb append failed", "points", len(batch), "err", err)
		return
	}
	w.metrics.pointsWritten.Add(float64(len(batch)))
}
