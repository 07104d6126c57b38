package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of DispatcherOptions.
const (
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultQueueSize      = 10000
)

// ErrUnknownReceiver is wrapped by Send's error for a receiver name that the
// Dispatcher was not built with.
var ErrUnknownReceiver = errors.New("unknown receiver")

// ErrQueueFull is wrapped by Send's error when the receiver's queue holds
// QueueSize notifications already; the notification is not queued.
var ErrQueueFull = errors.New("notification queue full")

// ErrRunning is returned by Run when the Dispatcher is already running.
var ErrRunning = errors.New("dispatcher already running")

// DispatcherOptions tune delivery. Zero values take the defaults.
type DispatcherOptions struct {
	// InitialBackoff is the wait after the first retryable failure; each
	// further failure of the same notification doubles it, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// QueueSize bounds each receiver's queue, so a receiver that is down
	// for days cannot take all memory.
	QueueSize int
}

// ReceiverStats counts what happened to one receiver's notifications since
// the Dispatcher was built.
type ReceiverStats struct {
	Sent       uint64 // delivered
	Failed     uint64 // dropped after a failure that was not worth retrying
	Retried    uint64 // failed attempts that were retried
	Overflowed uint64 // refused by Send because the queue was full
	Queued     int    // waiting now, including one being attempted
}

// Dispatcher owns the delivery of notifications: one queue per receiver,
// each delivered strictly in order by its own goroutine, a retryable failure
// retried with exponential backoff before anything behind it is tried.
// Receivers are independent: one that is down delays nobody else.
//
// The queues are in memory: what is still queued when the process stops is
// lost (and logged).
type Dispatcher struct {
	logger *slog.Logger
	opts   DispatcherOptions
	queues map[string]*queue

	mu      sync.Mutex
	running bool
}

// queue is one receiver's pending notifications and counters.
type queue struct {
	name     string
	notifier Notifier
	wake     chan struct{} // capacity 1: "the queue may have grown"

	mu    sync.Mutex
	items []Notification
	stats ReceiverStats
}

// NewDispatcher returns a Dispatcher delivering to receivers, by name. A nil
// logger discards the log.
func NewDispatcher(receivers map[string]Notifier, logger *slog.Logger, opts DispatcherOptions) *Dispatcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = DefaultInitialBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.InitialBackoff)
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	d := &Dispatcher{logger: logger, opts: opts, queues: make(map[string]*queue, len(receivers))}
	for name, n := range receivers {
		d.queues[name] = &queue{name: name, notifier: n, wake: make(chan struct{}, 1)}
	}
	return d
}

// Send queues n for the receiver named receiver and returns at once. It
// fails, queueing nothing, for an unknown receiver (ErrUnknownReceiver) and
// when that receiver's queue is full (ErrQueueFull, also logged and counted).
// Notifications queued before Run starts are delivered once it does.
func (d *Dispatcher) Send(receiver string, n Notification) error {
	q, ok := d.queues[receiver]
	if !ok {
		return fmt.Errorf("send notification %s: %w %q", n.ID, ErrUnknownReceiver, receiver)
	}
	q.mu.Lock()
	if len(q.items) >= d.opts.QueueSize {
		q.stats.Overflowed++
		q.mu.Unlock()
		d.logger.Error("notification queue full, notification dropped",
			"receiver", receiver, "id", n.ID, "rule", n.Rule, "status", n.Status, "queue_size", d.opts.QueueSize)
		return fmt.Errorf("send notification %s to receiver %q: %w (%d)", n.ID, receiver, ErrQueueFull, d.opts.QueueSize)
	}
	q.items = append(q.items, n)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// Run delivers queued notifications until ctx is done, then returns once all
// of its goroutines have stopped. An attempt in flight is given ctx, so it is
// cancelled too; its notification stays queued. Run returns ErrRunning if
// another Run is in progress, and nil otherwise.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.running {
		d.mu.Unlock()
		return ErrRunning
	}
	d.running = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running = false
		d.mu.Unlock()
	}()

	var wg sync.WaitGroup
	for _, q := range d.queues {
		wg.Go(func() { d.deliver(ctx, q) })
	}
	wg.Wait()

	for _, q := range d.queues {
		q.mu.Lock()
		left := len(q.items)
		q.mu.Unlock()
		if left > 0 {
			d.logger.Warn("dispatcher stopped with undelivered notifications", "receiver", q.name, "queued", left)
		}
	}
	return nil
}

// Stats returns a snapshot of every receiver's counters, by receiver name.
func (d *Dispatcher) Stats() map[string]ReceiverStats {
	out := make(map[string]ReceiverStats, len(d.queues))
	for name, q := range d.queues {
		q.mu.Lock()
		s := q.stats
		s.Queued = len(q.items)
		q.mu.Unlock()
		out[name] = s
	}
	return out
}

// deliver is the one goroutine of q: it attempts the head of the queue until
// it is delivered or found undeliverable, and only then moves on, so a
// receiver sees its notifications in the order they were sent.
func (d *Dispatcher) deliver(ctx context.Context, q *queue) {
	backoff := d.opts.InitialBackoff
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	attempt := 0
	for {
		n, ok := q.head()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
				continue
			}
		}
		attempt++
		retry, err := q.notifier.Notify(ctx, &n)
		switch {
		case err == nil:
			// Delivered even if ctx ended meanwhile: count it, or it would
			// be sent again.
			q.pop(func(s *ReceiverStats) { s.Sent++ })
			d.logger.Debug("notification sent", "receiver", q.name, "id", n.ID, "rule", n.Rule, "status", n.Status, "attempts", attempt)
			backoff, attempt = d.opts.InitialBackoff, 0
		case ctx.Err() != nil:
			// Shutting down; the failure is most likely the cancellation
			// itself, so it says nothing about the receiver.
			return
		case retry:
			q.count(func(s *ReceiverStats) { s.Retried++ })
			d.logger.Warn("notification failed, will retry",
				"receiver", q.name, "id", n.ID, "rule", n.Rule, "status", n.Status,
				"attempt", attempt, "backoff", backoff, "err", err)
			if timer == nil {
				timer = time.NewTimer(backoff)
			} else {
				timer.Reset(backoff)
			}
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			backoff = min(2*backoff, d.opts.MaxBackoff)
		default:
			q.pop(func(s *ReceiverStats) { s.Failed++ })
			d.logger.Error("notification failed permanently, dropped",
				"receiver", q.name, "id", n.ID, "rule", n.Rule, "status", n.Status,
				"attempt", attempt, "err", err)
			backoff, attempt = d.opts.InitialBackoff, 0
		}
	}
}

// head returns a copy of the oldest queued notification.
func (q *queue) head() (Notification, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return Notification{}, false
	}
	return q.items[0], true
}

// pop removes the oldest queued notification and updates the counters, in
// one step, so Stats never shows it both queued and sent.
func (q *queue) pop(update func(*ReceiverStats)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items[0] = Notification{} // let the maps be collected
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // start the next backlog on a fresh array
	}
	update(&q.stats)
}

func (q *queue) count(update func(*ReceiverStats)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	update(&q.stats)
}
