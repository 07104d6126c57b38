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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of DispatcherOptions.
const (
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultQueueSize      = 10000
	DefaultMaxBatch       = 100
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
	// Replica, when set, is told of every notification queued and every
	// one done, after its journal: how the queues of a node that may die
	// are kept by others, so they can be delivered without it.
	Replica Replica
	// Metrics, when set, count what this Dispatcher does, with every
	// other sharing them.
	Metrics *Metrics
	// Groups gathers the notifications of the receiver queues it names
	// into batches, each delivered in one message; see Grouping. A queue
	// not in it, or whose notifier is not a BatchNotifier, delivers its
	// notifications one by one, at once.
	Groups map[string]Grouping
	// MaxBatch bounds how many notifications one batch holds, so that a
	// backlog of thousands makes several messages a receiver can take
	// rather than one it refuses.
	MaxBatch int
	// Clock is the time the group waits and the backoffs are measured
	// by; nil is the wall clock. Tests set one that moves when told.
	Clock Clock
}

// Clock is the time a Dispatcher waits by.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// wallClock is the Clock of the real time.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// After is time.After: a timer nobody waits on any more is collected even
// when it has not fired.
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Grouping says how a receiver queue gathers its notifications into
// batches, as an Alertmanager route's group_wait and group_by do: when the
// oldest queued notification has waited Wait since it was queued, it is
// delivered together with every notification queued behind it whose
// labels named in By have its values (at most MaxBatch), in one message.
// Notifications that start within Wait of each other thus go out
// together, and none waits longer than Wait for the others. A batch holds
// one notification per incident (rule and labels): the resolution of an
// incident whose firing is in the batch goes in the next one, so a
// receiver sees every incident's transitions in order, one per message.
type Grouping struct {
	// Wait is how long the oldest queued notification waits for others to
	// join it; zero or less delivers one by one, at once.
	Wait time.Duration
	// By names the labels the notifications of one batch share, as
	// Notification.Label gives them: LabelAlertname is the rule. A
	// notification without one of them goes with those that lack it too
	// (not with those where it is empty). Empty By: any notification of
	// the queue may join any batch.
	By []string
}

// labels returns n's values of the labels g groups by, those n has.
func (g Grouping) labels(n *Notification) map[string]string {
	m := make(map[string]string, len(g.By))
	for _, name := range g.By {
		if v, ok := n.Label(name); ok {
			m[name] = v
		}
	}
	return m
}

// key returns what the notifications of n's group have in common, as a
// string: equal keys, one group.
func (g Grouping) key(n *Notification) string {
	var b strings.Builder
	for _, name := range g.By {
		v, ok := n.Label(name)
		// A missing label and an empty one are told apart; 0xff cannot
		// occur in UTF-8 text, so values cannot run into each other.
		if ok {
			b.WriteByte('=')
		}
		b.WriteString(v)
		b.WriteByte(0xff)
	}
	return b.String()
}

// Metrics are the Prometheus metrics of notification delivery, by
// receiver queue. A process builds them once and gives them to each of its
// Dispatchers (a leader opens one per term), so the counters run on
// across terms.
type Metrics struct {
	sent, failed, retried, overflowed *prometheus.CounterVec
	queued                            *prometheus.GaugeVec
}

// NewMetrics returns the metrics, registered with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"receiver"})
	}
	m := &Metrics{
		sent:       counter("dmonitor_notifications_sent_total", "Notifications delivered, by receiver queue."),
		failed:     counter("dmonitor_notifications_failed_total", "Notifications dropped after a failure not worth retrying, by receiver queue."),
		retried:    counter("dmonitor_notifications_retried_total", "Failed delivery attempts that will be retried, by receiver queue."),
		overflowed: counter("dmonitor_notifications_overflowed_total", "Notifications refused because the receiver's queue was full, by receiver queue."),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmonitor_notifications_queued", Help: "Notifications waiting for delivery, by receiver queue.",
		}, []string{"receiver"}),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.retried, m.overflowed, m.queued)
	}
	return m
}

// init makes every counter of receiver exist at zero, so a dashboard sees
// the receiver before its first notification.
func (m *Metrics) init(receiver string) {
	if m == nil {
		return
	}
	m.sent.WithLabelValues(receiver)
	m.failed.WithLabelValues(receiver)
	m.retried.WithLabelValues(receiver)
	m.overflowed.WithLabelValues(receiver)
	m.queued.WithLabelValues(receiver)
}

// outcome is what a Metrics counter counts.
type outcome int

const (
	outSent outcome = iota
	outFailed
	outRetried
	outOverflowed
)

// add counts n notifications of receiver with outcome o.
func (m *Metrics) add(o outcome, receiver string, n int) {
	if m == nil {
		return
	}
	v := [...]*prometheus.CounterVec{outSent: m.sent, outFailed: m.failed, outRetried: m.retried, outOverflowed: m.overflowed}[o]
	v.WithLabelValues(receiver).Add(float64(n))
}

func (m *Metrics) addQueued(receiver string, n int) {
	if m != nil {
		m.queued.WithLabelValues(receiver).Add(float64(n))
	}
}

// Replica keeps a copy of a Dispatcher's queues elsewhere. Its methods are
// called right after the journal's, in each queue's order, and must not
// block.
type Replica interface {
	// Queued: n waits for receiver.
	Queued(receiver string, n Notification)
	// Done: the notification id of receiver was delivered, or dropped as
	// undeliverable.
	Done(receiver, id string)
}

// ReceiverStats counts what happened to one receiver's notifications since
// the Dispatcher was built. Each counts notifications: a batch of three
// delivered counts three Sent, and its failed attempt three Retried.
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
// A queue with a Grouping delivers batches instead (see Grouping): the
// oldest notification and those of its group, in one message. A batch
// succeeds or fails as a whole, and a retryable failure retries it (with
// whatever joined the group meanwhile); one refused for good is split, its
// notifications delivered one by one, so that only what the receiver
// refuses on its own is dropped. Each notification keeps its id, its
// journal records and its counts.
//
// A notification's id is its identity: Send ignores a notification whose id
// is queued already or was done lately (the last QueueSize per receiver), so
// a transition handed over twice is delivered once. Delivery is at least
// once: a notification whose delivery is not yet recorded when the process
// dies is delivered again after the restart.
//
// Built by NewDispatcher, the queues are in memory: what is still queued
// when the process stops is lost (and logged). Built by OpenDispatcher, they
// are journaled on disk and survive a restart, even kill -9. Built by
// OpenJournaledDispatcher, they are kept by the journals it is given, such
// as the leader's in Redis; a journal that reports ErrFenced deposes the
// Dispatcher: it delivers nothing more, to any receiver.
type Dispatcher struct {
	logger  *slog.Logger
	opts    DispatcherOptions
	clock   Clock
	queues  map[string]*queue
	lock    *os.File      // flock'ed on opts.Dir; nil without a journal directory
	deposed chan struct{} // closed when a journal reports ErrFenced

	mu       sync.Mutex
	running  bool
	closed   bool
	fenceErr error // why deposed was closed
}

// queue is one receiver's pending notifications and counters.
type queue struct {
	name     string
	notifier Notifier
	wake     chan struct{} // capacity 1: "the queue may have grown"
	remember int           // how many done ids to keep
	// batcher is notifier when the queue groups, nil otherwise; group is
	// then its Grouping, with By sorted and without duplicates.
	batcher BatchNotifier
	group   Grouping

	// jmu serialises the calls to journal and is taken before mu, so that
	// the journal sees the queue's changes in the queue's order while
	// Stats, which takes only mu, never waits for a journal.
	jmu     sync.Mutex
	journal Journal // nil: in memory only

	mu      sync.Mutex
	items   []item
	queued  map[string]int      // ids in items, with their count
	done    map[string]struct{} // ids delivered or dropped lately
	doneLog []string            // the ids of done, oldest first
	// solo are the queued ids to deliver alone: a batch holding them was
	// refused for good.
	solo    map[string]struct{}
	closed  bool
	stats   ReceiverStats
	failing failing
}

// item is a queued notification.
type item struct {
	n Notification
	// at is when it was queued, by the Dispatcher's clock; for one taken
	// up from a journal, when the journal was opened: its time in the
	// queue before is not known, and it waits for others to join it once
	// more rather than not at all.
	at time.Time
	// group and incident are keys: of its group by the queue's Grouping,
	// and of its rule and labels. Empty when the queue does not group.
	group, incident string
}

// failing is a receiver's current run of failed delivery attempts.
type failing struct {
	attempts int       // failed attempts since the last delivery
	since    time.Time // the first of them
	err      string    // the last one's error
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
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	d := &Dispatcher{logger: logger, opts: opts, clock: opts.Clock, queues: make(map[string]*queue, len(receivers)), deposed: make(chan struct{})}
	if d.clock == nil {
		d.clock = wallClock{}
	}
	for name, n := range receivers {
		opts.Metrics.init(name)
		q := &queue{
			name: name, notifier: n, wake: make(chan struct{}, 1), remember: opts.QueueSize,
			queued: make(map[string]int), done: make(map[string]struct{}), solo: make(map[string]struct{}),
		}
		if g := opts.Groups[name]; g.Wait > 0 {
			if b, ok := n.(BatchNotifier); ok {
				q.batcher = b
				q.group = Grouping{Wait: g.Wait, By: slices.Compact(slices.Sorted(slices.Values(g.By)))}
			} else {
				logger.Debug("receiver queue cannot send batches: it delivers one by one, without group_wait", "receiver", name)
			}
		}
		d.queues[name] = q
	}
	return d
}

// newItem returns n as q queues it at time at.
func (q *queue) newItem(n Notification, at time.Time) item {
	it := item{n: n, at: at}
	if q.batcher != nil {
		it.group = q.group.key(&n)
		// The id of no transition at all: one per rule and labels.
		it.incident = NotificationID(n.Rule, n.Labels, "", time.Time{})
	}
	return it
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
	if err := d.lockDir(opts.Dir); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	files := func(_ context.Context, receiver string, remember int) (Journal, Backlog, error) {
		return openFileJournal(opts.Dir, receiver, remember, d.logger)
	}
	// A file journal does not block on anything a context could cancel.
	if err := d.openJournals(context.Background(), files); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	known := make(map[string]bool, len(d.queues))
	for name := range d.queues {
		known[journalName(name)] = true
	}
	stray, _ := filepath.Glob(filepath.Join(opts.Dir, "receiver-*.journal"))
	for _, p := range stray {
		if !known[filepath.Base(p)] {
			d.logger.Warn("notification journal of a receiver that is not configured, left alone", "path", p)
		}
	}
	return d, nil
}

// OpenJournaledDispatcher returns a Dispatcher delivering to receivers, by
// name, whose queues are kept by the journals that open returns, one per
// receiver, and starts with what they hold: the pending notifications
// queued in order (those whose delivery was begun are delivered again), the
// done ids remembered. opts.Dir is ignored. Close the Dispatcher, which
// closes the journals, after Run has returned.
func OpenJournaledDispatcher(ctx context.Context, receivers map[string]Notifier, open JournalFunc, logger *slog.Logger, opts DispatcherOptions) (*Dispatcher, error) {
	d := newDispatcher(receivers, logger, opts)
	if opts.Dir != "" {
		d.logger.Warn("OpenJournaledDispatcher keeps notifications in its journals; DispatcherOptions.Dir ignored", "dir", opts.Dir)
	}
	if err := d.openJournals(ctx, open); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// lockName is the file in Dir that the Dispatcher holds a lock on.
const lockName = "dispatcher.lock"

func (d *Dispatcher) lockDir(dir string) error {
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
	return nil
}

// openJournals opens the journal of every receiver and takes up its backlog.
func (d *Dispatcher) openJournals(ctx context.Context, open JournalFunc) error {
	for _, name := range slices.Sorted(maps.Keys(d.queues)) {
		q := d.queues[name]
		j, b, err := open(ctx, name, q.remember)
		if err != nil {
			return fmt.Errorf("receiver %q: %w", name, err)
		}
		now := d.clock.Now()
		q.mu.Lock()
		q.journal = j
		for _, id := range b.Done {
			q.remember1(id)
		}
		for _, n := range b.Pending {
			if q.queued[n.ID] > 0 {
				continue // a journal queues an id once; a broken one is not trusted
			}
			q.items = append(q.items, q.newItem(n, now))
			q.queued[n.ID]++
		}
		queued := len(q.items)
		q.mu.Unlock()
		if queued > 0 {
			d.logger.Info("undelivered notifications restored from the journal", "receiver", name, "queued", queued)
		}
		for _, id := range b.Attempted {
			d.logger.Warn("notification whose delivery was begun and not recorded is delivered again; the receiver may see it twice, with the same id",
				"receiver", name, "id", id)
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
		q.jmu.Lock()
		q.mu.Lock()
		q.closed = true
		d.opts.Metrics.addQueued(q.name, -len(q.items))
		q.mu.Unlock()
		if q.journal != nil {
			errs = append(errs, q.journal.Close())
		}
		q.jmu.Unlock()
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
// (ErrQueueFull, also logged and counted), after Close (ErrClosed) and once
// the Dispatcher is deposed (an error wrapping ErrFenced). It ignores n,
// returning nil, when a notification with n's id is queued or was done
// lately (counted as Deduplicated). When the journal cannot be written for
// another reason, n is queued in memory only and the failure logged: better
// sent unless the process stops than refused.
// Notifications queued before Run starts are delivered once it does.
func (d *Dispatcher) Send(receiver string, n Notification) error {
	q, ok := d.queues[receiver]
	if !ok {
		return fmt.Errorf("send notification %s: %w %q", n.ID, ErrUnknownReceiver, receiver)
	}
	if err := d.fenced(); err != nil {
		return fmt.Errorf("send notification %s to receiver %q: %w", n.ID, receiver, err)
	}
	q.jmu.Lock()
	defer q.jmu.Unlock()
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
		d.opts.Metrics.add(outOverflowed, receiver, 1)
		q.mu.Unlock()
		d.logger.Error("notification queue full, notification dropped",
			"receiver", receiver, "id", n.ID, "rule", n.Rule, "status", n.Status, "queue_size", d.opts.QueueSize)
		return fmt.Errorf("send notification %s to receiver %q: %w (%d)", n.ID, receiver, ErrQueueFull, d.opts.QueueSize)
	}
	q.mu.Unlock()
	// Only Send adds to the queue, and it holds jmu: the checks above still
	// hold after the journal is written.
	if q.journal != nil {
		if err := q.journal.Append(context.Background(), &n); errors.Is(err, ErrFenced) {
			d.depose(receiver, err)
			return fmt.Errorf("send notification %s to receiver %q: %w", n.ID, receiver, err)
		} else if err != nil {
			d.logger.Error("notification not journaled, queued in memory only", "receiver", receiver, "id", n.ID, "err", err)
		}
	}
	it := q.newItem(n, d.clock.Now())
	q.mu.Lock()
	q.items = append(q.items, it)
	q.queued[n.ID]++
	d.opts.Metrics.addQueued(receiver, 1)
	q.mu.Unlock()
	if d.opts.Replica != nil {
		d.opts.Replica.Queued(receiver, n)
	}
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// depose records that a journal refused a write because a newer leader has
// taken over, and stops every delivery: the first time only.
func (d *Dispatcher) depose(receiver string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fenceErr != nil {
		return
	}
	d.fenceErr = err
	close(d.deposed)
	d.logger.Error("notification journal fenced: a newer leader has taken over, nothing more is delivered",
		"receiver", receiver, "err", err)
}

// fenced returns the error that deposed d, or nil.
func (d *Dispatcher) fenced() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fenceErr
}

// Run delivers queued notifications until ctx is done, then returns once all
// of its goroutines have stopped. An attempt in flight is given ctx, so it is
// cancelled too; its notification stays queued. Run returns ErrRunning if
// another Run is in progress, ErrClosed after Close, an error wrapping
// ErrFenced once a journal has refused a write (at once, cancelling every
// attempt in flight), and nil otherwise.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if d.fenceErr != nil {
		d.mu.Unlock()
		return d.fenceErr
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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		// A deposed leader must stop everything, not just the receiver
		// whose journal found out: every other one is fenced too.
		select {
		case <-d.deposed:
			cancel()
		case <-ctx.Done():
		}
	})
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
	return d.fenced()
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

// Failing returns the receiver queues whose last attempts, at least
// attempts of them in a row, failed, each with what it says of them.
func (d *Dispatcher) Failing(attempts int) map[string]string {
	out := make(map[string]string)
	for name, q := range d.queues {
		q.mu.Lock()
		f := q.failing
		q.mu.Unlock()
		if f.attempts >= attempts {
			out[name] = fmt.Sprintf("%d delivery attempts failed since %s, the last: %s", f.attempts, f.since.UTC().Format(time.RFC3339), f.err)
		}
	}
	return out
}

// deliver is the one goroutine of q: it attempts the head of the queue (with
// its batch, when q groups) until it is delivered or found undeliverable,
// and only then moves on, so a receiver sees its notifications in the order
// they were sent. It returns when ctx is done or the journal reports
// ErrFenced.
func (d *Dispatcher) deliver(ctx context.Context, q *queue) {
	backoff := d.opts.InitialBackoff
	// sleep waits for dur; false when ctx ended first.
	sleep := func(dur time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-d.clock.After(dur):
			return true
		}
	}
	// wait sleeps for the backoff, doubling it for next time.
	wait := func() bool {
		if !sleep(backoff) {
			return false
		}
		backoff = min(2*backoff, d.opts.MaxBackoff)
		return true
	}
	attempt := 0
	for {
		head, ok := q.head()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
				continue
			}
		}
		select {
		case <-d.deposed:
			// Seen by this goroutine's own last record, or another's:
			// do not wait for ctx to say so.
			return
		default:
		}
		if q.batcher != nil {
			// The head waits for the rest of its group; it stays the head
			// meanwhile, as only this goroutine takes from the queue.
			if left := head.at.Add(q.group.Wait).Sub(d.clock.Now()); left > 0 && !sleep(left) {
				return
			}
		}
		batch, group := q.batch(d.opts.MaxBatch)
		// The mark before the attempt is what lets a successor know the
		// receiver may have the batch already; for a leader's journal it
		// is also the check that this process still leads.
		if err := q.attempt(ctx, batch); errors.Is(err, ErrFenced) {
			d.depose(q.name, err)
			return
		} else if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.logger.Warn("notification journal unavailable, delivery waits",
				append(about(q.name, batch), "backoff", backoff, "err", err)...)
			if !wait() {
				return
			}
			continue
		}
		attempt++
		retry, err := q.send(ctx, group, batch)
		count := len(batch)
		switch {
		case err == nil:
			// Delivered even if ctx ended meanwhile: count it, or it would
			// be sent again.
			d.pop(ctx, q, batch, func(s *ReceiverStats) { s.Sent += uint64(count) })
			d.opts.Metrics.add(outSent, q.name, count)
			q.recover()
			d.logger.Debug("notification sent", append(about(q.name, batch), "attempts", attempt)...)
			backoff, attempt = d.opts.InitialBackoff, 0
		case ctx.Err() != nil:
			// Shutting down; the failure is most likely the cancellation
			// itself, so it says nothing about the receiver.
			return
		case retry:
			q.count(func(s *ReceiverStats) { s.Retried += uint64(count) })
			d.opts.Metrics.add(outRetried, q.name, count)
			q.fail(d.clock.Now(), err)
			d.logger.Warn("notification failed, will retry",
				append(about(q.name, batch), "attempt", attempt, "backoff", backoff, "err", err)...)
			if !wait() {
				return
			}
		case count > 1:
			// Refused for good as a whole, maybe for one of them (a label
			// the receiver rejects) or for their number: each is tried
			// alone, so that only what the receiver refuses on its own is
			// dropped. Duplicates are preferred over silence.
			q.split(batch)
			q.fail(d.clock.Now(), err)
			d.logger.Warn("notification batch refused, its notifications are delivered one by one",
				append(about(q.name, batch), "attempt", attempt, "err", err)...)
			attempt = 0
		default:
			d.pop(ctx, q, batch, func(s *ReceiverStats) { s.Failed++ })
			d.opts.Metrics.add(outFailed, q.name, 1)
			q.fail(d.clock.Now(), err)
			d.logger.Error("notification failed permanently, dropped",
				append(about(q.name, batch), "attempt", attempt, "err", err)...)
			backoff, attempt = d.opts.InitialBackoff, 0
		}
	}
}

// about returns the log attributes naming batch of receiver: the
// notification, or the first one and how many there are.
func about(receiver string, batch []Notification) []any {
	n := batch[0]
	attrs := []any{"receiver", receiver, "id", n.ID, "rule", n.Rule, "status", n.Status}
	if len(batch) > 1 {
		attrs = append(attrs, "batch", len(batch))
	}
	return attrs
}

// head returns a copy of the oldest queued notification.
func (q *queue) head() (item, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return item{}, false
	}
	return q.items[0], true
}

// batch returns copies of the notifications to deliver next, oldest first,
// with the labels of their group (nil when q does not group). It is the
// head alone unless q groups; then the head and, behind it, those of its
// group, at most max, leaving out those to be delivered alone and every
// notification of an incident that has one queued before it and left out:
// one notification per incident, the incident's first, so that its
// resolution never overtakes its firing.
func (q *queue) batch(max int) ([]Notification, map[string]string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	head := q.items[0]
	if q.batcher == nil {
		return []Notification{head.n}, nil
	}
	out := []Notification{head.n}
	if _, alone := q.solo[head.n.ID]; !alone {
		// The incidents seen so far: the head's, those in the batch and
		// those left out.
		seen := map[string]struct{}{head.incident: {}}
		for _, it := range q.items[1:] {
			if len(out) >= max {
				break
			}
			_, before := seen[it.incident]
			seen[it.incident] = struct{}{}
			if _, alone := q.solo[it.n.ID]; before || alone || it.group != head.group {
				continue
			}
			out = append(out, it.n)
		}
	}
	return out, q.group.labels(&head.n)
}

// send delivers batch: through NotifyBatch when q groups, through Notify
// otherwise (a batch of one).
func (q *queue) send(ctx context.Context, group map[string]string, batch []Notification) (retry bool, err error) {
	if q.batcher == nil {
		return q.notifier.Notify(ctx, &batch[0])
	}
	ns := make([]*Notification, len(batch))
	for i := range batch {
		ns[i] = &batch[i]
	}
	return q.batcher.NotifyBatch(ctx, group, ns)
}

// split marks the notifications of batch to be delivered alone.
func (q *queue) split(batch []Notification) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, n := range batch {
		q.solo[n.ID] = struct{}{}
	}
}

// attempt marks the notifications of batch in the journal as being
// delivered, and stops at the first error.
func (q *queue) attempt(ctx context.Context, batch []Notification) error {
	q.jmu.Lock()
	defer q.jmu.Unlock()
	if q.journal == nil {
		return nil
	}
	for _, n := range batch {
		if err := q.journal.Attempt(ctx, n.ID); err != nil {
			return err
		}
	}
	return nil
}

// pop removes the notifications of batch from the queue, records them as
// done and updates the counters, the memory in one step, so Stats never
// shows one both queued and sent. A failure to journal one is logged: it
// will be delivered again by whoever opens the journal next, which is
// better than never.
func (d *Dispatcher) pop(ctx context.Context, q *queue, batch []Notification, update func(*ReceiverStats)) {
	q.jmu.Lock()
	defer q.jmu.Unlock()
	q.mu.Lock()
	q.remove(batch)
	for _, n := range batch {
		if q.queued[n.ID]--; q.queued[n.ID] <= 0 {
			delete(q.queued, n.ID)
		}
		delete(q.solo, n.ID)
		q.remember1(n.ID)
	}
	update(&q.stats)
	d.opts.Metrics.addQueued(q.name, -len(batch))
	closed := q.closed
	q.mu.Unlock()
	for _, n := range batch {
		if d.opts.Replica != nil {
			d.opts.Replica.Done(q.name, n.ID)
		}
		if q.journal == nil || closed {
			continue
		}
		// The delivery happened whatever ctx says now: record it even when
		// shutting down, or it is sent again.
		switch err := q.journal.Done(context.WithoutCancel(ctx), n.ID); {
		case errors.Is(err, ErrFenced):
			// Sent, and the successor will send it again: the one duplicate
			// a receiver drops by id.
			d.depose(q.name, err)
		case err != nil:
			d.logger.Error("notification done but not journaled; it will be sent again by whoever opens the journal next",
				"receiver", q.name, "id", n.ID, "err", err)
		}
	}
}

// remove takes the notifications of batch, the head first, out of items,
// keeping the order of the rest. Only the part of items up to the last of
// them is moved: a batch is taken from the front, and a long backlog
// behind it is not copied for each delivery.
func (q *queue) remove(batch []Notification) {
	ids := make(map[string]struct{}, len(batch))
	for _, n := range batch {
		ids[n.ID] = struct{}{}
	}
	last, found := -1, 0
	for i := range q.items {
		if _, ok := ids[q.items[i].n.ID]; ok {
			last, found = i, found+1
			if found == len(ids) {
				break
			}
		}
	}
	// Shift the ones kept of items[:last+1] to its end, in order; what is
	// left before them is the removed ones' room.
	w := last
	for r := last; r >= 0; r-- {
		if _, ok := ids[q.items[r].n.ID]; ok {
			continue
		}
		q.items[w] = q.items[r]
		w--
	}
	clear(q.items[:w+1]) // let the maps be collected
	q.items = q.items[w+1:]
	if len(q.items) == 0 {
		q.items = nil // start the next backlog on a fresh array
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

// fail counts a failed attempt, made at now, in the current run of them.
func (q *queue) fail(now time.Time, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failing.attempts == 0 {
		q.failing.since = now
	}
	q.failing.attempts++
	q.failing.err = err.Error()
}

// recover ends the run of failed attempts: a notification was delivered.
func (q *queue) recover() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.failing = failing{}
}

func (q *queue) count(update func(*ReceiverStats)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	update(&q.stats)
}
