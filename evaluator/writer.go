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

// writer batches datapoints into the store. It never delays a point to
// fill a batch: it appends whatever has queued up while the previous append
// ran, so batches grow only under load. A point handed to write is appended
// before run returns, unless the store refuses it.
type writer struct {
	store    Appender
	in       chan []tsdb.Point
	maxBatch int
	log      *slog.Logger
	metrics  *metrics
}

func newWriter(store Appender, log *slog.Logger, m *metrics) *writer {
	return &writer{store: store, in: make(chan []tsdb.Point, 1024), maxBatch: 5000, log: log, metrics: m}
}

// write queues points; it blocks while the queue is full, so a slow store
// slows the checks down rather than losing their results.
func (w *writer) write(points []tsdb.Point) { w.in <- points }

// run appends queued points until in is closed and drained. The store gets
// its own context: shutdown must flush, not abandon, what is queued.
func (w *writer) run() {
	batch := make([]tsdb.Point, 0, w.maxBatch)
	for pts := range w.in {
		batch = append(batch[:0], pts...)
	drain:
		for len(batch) < w.maxBatch {
			select {
			case more, ok := <-w.in:
				if !ok {
					break drain
				}
				batch = append(batch, more...)
			default:
				break drain
			}
		}
		w.append(batch)
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
