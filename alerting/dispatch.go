package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
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

// ErrClosed is returned by Send and Run after Close.
var ErrClosed = errors.New("dispatcher closed")

// DispatcherOptions tune delivery. Zero values take the defaults.
type DispatcherOptions struct {
	// InitialBackoff is the wait after the first retryable failure; each
	// further failure of the same notification doubles it, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// QueueSize bounds each receiver's queue, so a receiver that is down
	// for days cannot take all memory. It is also how many ids of done
	// notifications each receiver remembers to drop duplicates.
	QueueSize int
	// Dir, when not empty, is the directory of the journals that make the
	// queues survive a restart; see OpenDispatcher. NewDispatcher keeps the
	// queues in memory only.
	Dir string
}

// ReceiverStats counts what happened to one receiver's notifications since
// the Dispatcher was built.
type ReceiverStats struct {
	Sent       uint64 // delivered
	Failed     uint64 // dropped after a failure that was not worth retrying
	Retried    uint64 // failed attempts that were retried
	Overflowed uint64 // refused by Send because the queue was full
	// Deduplicated counts Sends ignored because a notification with the
	// same id was queued or done (delivered, or dropped as undeliverable).
	Deduplicated uint64
	Queued       int // waiting now, including one being attempted
}

// Dispatcher owns the delivery of notifications: one queue per receiver,
// each delivered strictly in order by its own goroutine, a retryable failure
// retried with exponential backoff before anything behind it is tried.
// Receivers are independent: one that is down delays nobody else.
//
// A notification's id is its identity: Send ignores a notification whose id
// is queued already or was done lately (the last QueueSize per receiver), so
// a transition handed over twice is delivered once. Delivery is at least
// once: a notification whose delivery is not yet recorded when the process
// dies is delivered again after the restart.
//
// Built by NewDispatcher, the queues are in memory: what is still queued
// when the process stops is lost (and logged). Built by OpenDispatcher, they
// are journaled on disk and survive a restart, even kill -9.
type Dispatcher struct {
	logger *slog.Logger
	opts   DispatcherOptions
	queues map[string]*queue
	lock   *os.File // flock'ed on opts.Dir; nil in memory

	mu      sync.Mutex
	running bool
	closed  bool
}

// queue is one receiver's pending notifications and counters.
type queue struct {
	name     string
	notifier Notifier
	wake     chan struct{} // capacity 1: "the queue may have grown"
	remember int           // how many done ids to keep

	mu      sync.Mutex
	items   []entry
	queued  map[string]int      // ids in items, with their count
	done    map[string]struct{} // ids delivered or dropped lately
	doneLog []string            // the ids of done, oldest first
	seq     uint64              // of the last send record
	journal *journal            // nil: in memory only
	closed  bool
	stats   ReceiverStats
}

// NewDispatcher returns a Dispatcher delivering to receivers, by name, whose
// queues are in memory only, whatever opts.Dir says. A nil logger discards
// the log.
func NewDispatcher(receivers map[string]Notifier, logger *slog.Logger, opts DispatcherOptions) *Dispatcher {
	d := newDispatcher(receivers, logger, opts)
	if opts.Dir != "" {
		d.logger.Warn("NewDispatcher keeps notifications in memory only; DispatcherOptions.Dir needs OpenDispatcher", "dir", opts.Dir)
	}
	return d
}

func newDispatcher(receivers map[string]Notifier, logger *slog.Logger, opts DispatcherOptions) *Dispatcher {
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
		d.queues[name] = &queue{
			name: name, notifier: n, wake: make(chan struct{}, 1), remember: opts.QueueSize,
			queued: make(map[string]int), done: make(map[string]struct{}),
		}
	}
	return d
}

// OpenDispatcher returns a Dispatcher delivering to receivers, by name, like
// NewDispatcher. When opts.Dir is not empty, each receiver's queue is
// journaled in a file in it (created if missing), and what the journals hold
// is queued again: the notifications Sent but not done, in their order, with
// their original times, and the ids done lately, which Send ignores. A
// notification is in the journal once Send has returned: it survives the
// process being killed, though not a power loss. The journal is rewritten
// when most of it is done.
//
// The directory is locked (flock) until Close: a second Dispatcher on it,
// in this process or another, is refused. Journals of receivers that are
// not in receivers are left alone, and logged. Close the Dispatcher after
// Run has returned.
func OpenDispatcher(receivers map[string]Notifier, logger *slog.Logger, opts DispatcherOptions) (*Dispatcher, error) {
	d := newDispatcher(receivers, logger, opts)
	if opts.Dir == "" {
		return d, nil
	}
	if err := d.open(opts.Dir); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// lockName is the file in Dir that the Dispatcher holds a lock on.
const lockName = "dispatcher.lock"

func (d *Dispatcher) open(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("notification journal directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("notification journal lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("notification journal directory %s is in use by another dispatcher: %w", dir, err)
	}
	d.lock = lock

	known := make(map[string]bool, len(d.queues))
	for _, name := range slices.Sorted(maps.Keys(d.queues)) {
		q := d.queues[name]
		path := filepath.Join(dir, journalName(name))
		known[filepath.Base(path)] = true
		r, err := readJournal(path)
		if err != nil {
			return fmt.Errorf("receiver %q: %w", name, err)
		}
		if r.corrupt > 0 {
			d.logger.Error("notification journal has unreadable records, skipped", "receiver", name, "path", path, "records", r.corrupt)
		}
		if r.torn {
			d.logger.Warn("notification journal ends in a record cut short, ignored", "receiver", name, "path", path)
		}
		// Keep only what dedup remembers, so the rewritten file is small.
		if len(r.done) > q.remember {
			r.done = r.done[len(r.done)-q.remember:]
		}
		j, err := writeJournal(path, r.done, r.pending)
		if err != nil {
			return fmt.Errorf("receiver %q: %w", name, err)
		}
		q.mu.Lock()
		q.journal = j
		q.seq = r.lastSeq
		for _, id := range r.done {
			q.remember1(id)
		}
		for _, e := range r.pending {
			q.items = append(q.items, e)
			q.queued[e.n.ID]++
		}
		q.mu.Unlock()
		if len(r.pending) > 0 {
			d.logger.Info("undelivered notifications restored from the journal", "receiver", name, "queued", len(r.pending))
		}
	}
	stray, _ := filepath.Glob(filepath.Join(dir, "receiver-*.journal"))
	for _, p := range stray {
		if !known[filepath.Base(p)] {
			d.logger.Warn("notification journal of a receiver that is not configured, left alone", "path", p)
		}
	}
	return nil
}

// Close closes the journals and releases the directory. Send and Run fail
// with ErrClosed afterwards. Call it after Run has returned; a Dispatcher
// without a journal needs no Close.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for _, q := range d.queues {
		q.mu.Lock()
		q.closed = true
		errs = append(errs, q.journal.close())
		q.mu.Unlock()
	}
	if d.lock != nil {
		// Closing the file releases the flock.
		errs = append(errs, d.lock.Close())
	}
	return errors.Join(errs...)
}

// Send queues n for the receiver named receiver and returns at once; with a
// journal, once n is written to it. It fails, queueing nothing, for an
// unknown receiver (ErrUnknownReceiver), when that receiver's queue is full
// (ErrQueueFull, also logged and counted) and after Close (ErrClosed). It
// ignores n, returning nil, when a notification with n's id is queued or was
// done lately (counted as Deduplicated). When the journal cannot be written,
// n is queued in memory only and the failure logged: better sent unless the
// process stops than refused.
// Notifications queued before Run starts are delivered once it does.
func (d *Dispatcher) Send(receiver string, n Notification) error {
	q, ok := d.queues[receiver]
	if !ok {
		return fmt.Errorf("send notification %s: %w %q", n.ID, ErrUnknownReceiver, receiver)
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return fmt.Errorf("send notification %s to receiver %q: %w", n.ID, receiver, ErrClosed)
	}
	_, done := q.done[n.ID]
	if done || q.queued[n.ID] > 0 {
		q.stats.Deduplicated++
		q.mu.Unlock()
		d.logger.Debug("duplicate notification ignored", "receiver", receiver, "id", n.ID, "delivered", done)
		return nil
	}
	if len(q.items) >= d.opts.QueueSize {
		q.stats.Overflowed++
		q.mu.Unlock()
		d.logger.Error("notification queue full, notification dropped",
			"receiver", receiver, "id", n.ID, "rule", n.Rule, "status", n.Status, "queue_size", d.opts.QueueSize)
		return fmt.Errorf("send notification %s to receiver %q: %w (%d)", n.ID, receiver, ErrQueueFull, d.opts.QueueSize)
	}
	q.seq++
	e := entry{seq: q.seq, n: n}
	var jerr error
	if q.journal != nil {
		jerr = q.journal.append(record{Op: opSend, Seq: e.seq, N: &e.n})
	}
	q.items = append(q.items, e)
	q.queued[n.ID]++
	q.mu.Unlock()
	if jerr != nil {
		d.logger.Error("notification not journaled, queued in memory only", "receiver", receiver, "id", n.ID, "err", jerr)
	}
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
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
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
			d.logger.Warn("dispatcher stopped with undelivered notifications", "receiver", q.name, "queued", left,
				"journaled", q.journal != nil)
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
		e, ok := q.head()
		n := e.n
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
			d.pop(q, e, func(s *ReceiverStats) { s.Sent++ })
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
			d.pop(q, e, func(s *ReceiverStats) { s.Failed++ })
			d.logger.Error("notification failed permanently, dropped",
				"receiver", q.name, "id", n.ID, "rule", n.Rule, "status", n.Status,
				"attempt", attempt, "err", err)
			backoff, attempt = d.opts.InitialBackoff, 0
		}
	}
}

// head returns a copy of the oldest queued notification.
func (q *queue) head() (entry, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return entry{}, false
	}
	return q.items[0], true
}

// pop removes e, the oldest queued notification, records it as done and
// updates the counters, in one step, so Stats never shows it both queued and
// sent. A failure to record it is logged: it will be delivered again after a
// restart, which is better than never.
func (d *Dispatcher) pop(q *queue, e entry, update func(*ReceiverStats)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items[0] = entry{} // let the maps be collected
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // start the next backlog on a fresh array
	}
	if q.queued[e.n.ID]--; q.queued[e.n.ID] <= 0 {
		delete(q.queued, e.n.ID)
	}
	q.remember1(e.n.ID)
	update(&q.stats)
	if q.journal == nil || q.closed {
		return
	}
	if err := q.journal.append(record{Op: opDone, Seq: e.seq, ID: e.n.ID}); err != nil {
		d.logger.Error("notification done but not journaled; it will be sent again after a restart",
			"receiver", q.name, "id", e.n.ID, "err", err)
		return
	}
	if q.journal.due(len(q.items) + len(q.doneLog)) {
		j, err := writeJournal(q.journal.path, q.doneLog, q.items)
		if err != nil {
			// The old file is intact and still open: carry on with it.
			d.logger.Error("notification journal not compacted", "receiver", q.name, "err", err)
			q.journal.compactMin *= 2 // do not retry on every record
			return
		}
		j.compactMin = q.journal.compactMin
		if err := q.journal.close(); err != nil {
			d.logger.Warn("close old notification journal", "receiver", q.name, "err", err)
		}
		q.journal = j
	}
}

// remember1 adds id to the done ids, forgetting the oldest beyond remember.
func (q *queue) remember1(id string) {
	if _, ok := q.done[id]; ok {
		return
	}
	q.done[id] = struct{}{}
	q.doneLog = append(q.doneLog, id)
	if len(q.doneLog) > q.remember {
		delete(q.done, q.doneLog[0])
		q.doneLog[0] = ""
		q.doneLog = q.doneLog[1:]
	}
}

func (q *queue) count(update func(*ReceiverStats)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	update(&q.stats)
}
