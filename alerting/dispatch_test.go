package alerting

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// handNotifier is a Notifier whose every attempt the test sees and answers:
// Notify reports the notification on attempts and returns whatever the test
// sends on replies, or gives up when ctx ends.
type handNotifier struct {
	attempts chan Notification
	replies  chan reply
}

type reply struct {
	retry bool
	err   error
}

func newHandNotifier() *handNotifier {
	return &handNotifier{attempts: make(chan Notification), replies: make(chan reply)}
}

func (h *handNotifier) Notify(ctx context.Context, n *Notification) (bool, error) {
	select {
	case h.attempts <- *n:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	select {
	case r := <-h.replies:
		return r.retry, r.err
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// expect waits for the next attempt and checks it is about id.
func (h *handNotifier) expect(t *testing.T, id string) {
	t.Helper()
	select {
	case n := <-h.attempts:
		if n.ID != id {
			t.Fatalf("attempt for %s, want %s", n.ID, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no attempt for %s", id)
	}
}

// recordHandler keeps every log record, so a test can read what was logged.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) attrs(msg, key string) []slog.Value {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Value
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value)
			}
			return true
		})
	}
	return out
}

// run starts d.Run and returns a function that stops it and waits for it.
func run(t *testing.T, d *Dispatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(cancel)
	return stop
}

// waitStats polls d's stats for receiver until ok accepts them.
func waitStats(t *testing.T, d *Dispatcher, receiver string, ok func(ReceiverStats) bool) ReceiverStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := d.Stats()[receiver]
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats of %s: %+v", receiver, s)
		}
		time.Sleep(time.Millisecond)
	}
}

func note(id string) Notification {
	return Notification{ID: id, Rule: "www-http", Status: StatusFiring}
}

func TestDispatcherOrderRetryDrop(t *testing.T) {
	h := newHandNotifier()
	logs := &recordHandler{}
	d := NewDispatcher(map[string]Notifier{"ops": h}, slog.New(logs),
		DispatcherOptions{InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	for _, id := range []string{"a", "b", "c"} {
		if err := d.Send("ops", note(id)); err != nil {
			t.Fatal(err)
		}
	}
	stop := run(t, d)

	// a fails four times retryably: nothing behind it may overtake it.
	for range 4 {
		h.expect(t, "a")
		h.replies <- reply{retry: true, err: errors.New("connection refused")}
	}
	h.expect(t, "a")
	h.replies <- reply{}
	// b is refused for good: dropped, and c follows.
	h.expect(t, "b")
	h.replies <- reply{retry: false, err: errors.New("550 no such user")}
	h.expect(t, "c")
	h.replies <- reply{}

	s := waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 2 })
	want := ReceiverStats{Sent: 2, Failed: 1, Retried: 4}
	if s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	stop()

	// The backoff doubled from InitialBackoff and stopped at MaxBackoff.
	var got []time.Duration
	for _, v := range logs.attrs("notification failed, will retry", "backoff") {
		got = append(got, v.Duration())
	}
	wantBackoff := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond}
	if len(got) != len(wantBackoff) {
		t.Fatalf("logged backoffs %v, want %v", got, wantBackoff)
	}
	for i := range got {
		if got[i] != wantBackoff[i] {
			t.Errorf("logged backoffs %v, want %v", got, wantBackoff)
			break
		}
	}
	if ids := logs.attrs("notification failed permanently, dropped", "id"); len(ids) != 1 || ids[0].String() != "b" {
		t.Errorf("dropped-notification log names %v, want [b]", ids)
	}
}

func TestDispatcherReceiversIndependent(t *testing.T) {
	slow, fast := newHandNotifier(), newHandNotifier()
	d := NewDispatcher(map[string]Notifier{"slow": slow, "fast": fast}, nil, DispatcherOptions{})
	stop := run(t, d)

	if err := d.Send("slow", note("s1")); err != nil {
		t.Fatal(err)
	}
	slow.expect(t, "s1") // and never answered: slow hangs
	if err := d.Send("fast", note("f1")); err != nil {
		t.Fatal(err)
	}
	fast.expect(t, "f1")
	fast.replies <- reply{}
	waitStats(t, d, "fast", func(s ReceiverStats) bool { return s.Sent == 1 })

	// Only one Run at a time: a second would break the order.
	if err := d.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}

	// Stopping cancels the hung attempt; its notification is not counted
	// as failed and stays queued.
	stop()
	if s := d.Stats()["slow"]; s != (ReceiverStats{Queued: 1}) {
		t.Errorf("slow after stop: %+v, want only Queued 1", s)
	}

	// A later Run picks it up again.
	stop = run(t, d)
	slow.expect(t, "s1")
	slow.replies <- reply{}
	waitStats(t, d, "slow", func(s ReceiverStats) bool { return s.Sent == 1 && s.Queued == 0 })
	stop()
}

func TestDispatcherSendErrors(t *testing.T) {
	logs := &recordHandler{}
	d := NewDispatcher(map[string]Notifier{"ops": newHandNotifier()}, slog.New(logs), DispatcherOptions{QueueSize: 2})

	if err := d.Send("nobody", note("x")); !errors.Is(err, ErrUnknownReceiver) {
		t.Errorf("Send to unknown receiver: %v, want ErrUnknownReceiver", err)
	}
	for _, id := range []string{"a", "b"} {
		if err := d.Send("ops", note(id)); err != nil {
			t.Fatalf("Send %s: %v", id, err)
		}
	}
	// Overflow is refused loudly: an error, a counter and a log line.
	if err := d.Send("ops", note("c")); !errors.Is(err, ErrQueueFull) {
		t.Errorf("Send beyond QueueSize: %v, want ErrQueueFull", err)
	}
	if s := d.Stats()["ops"]; s != (ReceiverStats{Overflowed: 1, Queued: 2}) {
		t.Errorf("stats %+v, want Overflowed 1, Queued 2", s)
	}
	if ids := logs.attrs("notification queue full, notification dropped", "id"); len(ids) != 1 || ids[0].String() != "c" {
		t.Errorf("overflow log names %v, want [c]", ids)
	}
}

// recordingNotifier delivers everything at once and remembers what, in order.
type recordingNotifier struct {
	mu   sync.Mutex
	got  []Notification
	seen func(n *Notification) // called inside Notify, before it returns
}

func (r *recordingNotifier) Notify(_ context.Context, n *Notification) (bool, error) {
	if r.seen != nil {
		r.seen(n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, *n)
	return false, nil
}

func (r *recordingNotifier) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, n := range r.got {
		out[i] = n.ID
	}
	return out
}

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// numbered returns the i-th notification of a backlog, with its own times
// and labels, so a test can check all of it survives a restart.
func numbered(i int) Notification {
	at := base.Add(time.Duration(i) * time.Second)
	return Notification{
		ID: fmt.Sprintf("n%06d", i), Status: StatusFiring, Rule: "www-http",
		Labels:      map[string]string{"host": fmt.Sprintf("www%d", i), "check": "http", "severity": "critical"},
		Annotations: map[string]string{"summary": fmt.Sprintf("www%d http down", i)},
		Severity:    "critical", StartsAt: at.Add(-time.Minute), EvaluatedAt: at,
	}
}

// equalNotification compares n and m as a receiver would see them.
func equalNotification(n, m Notification) bool {
	return n.ID == m.ID && n.Status == m.Status && n.Rule == m.Rule && n.Severity == m.Severity &&
		maps.Equal(n.Labels, m.Labels) && maps.Equal(n.Annotations, m.Annotations) &&
		n.StartsAt.Equal(m.StartsAt) && n.EndsAt.Equal(m.EndsAt) && n.EvaluatedAt.Equal(m.EvaluatedAt) && n.Repeat == m.Repeat
}

func open(t *testing.T, dir string, receivers map[string]Notifier, opts DispatcherOptions) *Dispatcher {
	t.Helper()
	opts.Dir = dir
	if opts.InitialBackoff == 0 {
		opts.InitialBackoff, opts.MaxBackoff = time.Millisecond, 4*time.Millisecond
	}
	d, err := OpenDispatcher(receivers, slog.New(slog.NewTextHandler(t.Output(), nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestDispatcherJournalRestart stops a dispatcher with notifications queued
// (one delivered, one failing) and checks that reopening the directory
// delivers the rest once each, in order, with their original times, and
// that what was delivered is neither queued nor accepted again.
func TestDispatcherJournalRestart(t *testing.T) {
	dir := t.TempDir()
	h := newHandNotifier()
	d := open(t, dir, map[string]Notifier{"ops": h}, DispatcherOptions{})
	want := []Notification{numbered(0), numbered(1), numbered(2), numbered(3)}
	want[2].Status, want[2].EndsAt = StatusResolved, base.Add(time.Hour)
	for _, n := range want {
		if err := d.Send("ops", n); err != nil {
			t.Fatal(err)
		}
	}
	stop := run(t, d)
	h.expect(t, want[0].ID)
	h.replies <- reply{}
	h.expect(t, want[1].ID)
	h.replies <- reply{retry: true, err: errors.New("connection refused")}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 1 && s.Retried == 1 })
	stop()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Send("ops", numbered(9)); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}

	// The restart: a new Dispatcher on the same directory.
	rec := &recordingNotifier{}
	d = open(t, dir, map[string]Notifier{"ops": rec}, DispatcherOptions{})
	if s := d.Stats()["ops"]; s.Queued != 3 {
		t.Fatalf("after reopening: %+v, want 3 queued", s)
	}
	stop = run(t, d)
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 3 && s.Queued == 0 })
	stop()
	rec.mu.Lock()
	got := slices.Clone(rec.got)
	rec.mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("delivered after restart: %v, want %s %s %s", rec.ids(), want[1].ID, want[2].ID, want[3].ID)
	}
	for i, n := range got {
		if !equalNotification(n, want[i+1]) {
			t.Errorf("delivered %d after restart:\n%+v\nwant\n%+v", i, n, want[i+1])
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// Another restart: nothing is owed, and the same notifications handed
	// over again (a new leader replaying transitions) are not sent twice.
	rec = &recordingNotifier{}
	d = open(t, dir, map[string]Notifier{"ops": rec}, DispatcherOptions{})
	if s := d.Stats()["ops"]; s.Queued != 0 {
		t.Fatalf("after the second reopening: %+v, want nothing queued", s)
	}
	for _, n := range append(want, numbered(4)) {
		if err := d.Send("ops", n); err != nil {
			t.Fatal(err)
		}
	}
	stop = run(t, d)
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 1 && s.Queued == 0 })
	stop()
	if ids := rec.ids(); !slices.Equal(ids, []string{numbered(4).ID}) {
		t.Errorf("delivered %v, want only the new %s", ids, numbered(4).ID)
	}
	if s := d.Stats()["ops"]; s.Deduplicated != 4 {
		t.Errorf("stats %+v, want 4 deduplicated", s)
	}
}

// TestDispatcherJournalLocked checks that two dispatchers cannot share a
// directory: their journals would interleave.
func TestDispatcherJournalLocked(t *testing.T) {
	dir := t.TempDir()
	recv := map[string]Notifier{"ops": &recordingNotifier{}}
	d := open(t, dir, recv, DispatcherOptions{})
	if _, err := OpenDispatcher(recv, nil, DispatcherOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenDispatcher on %s: %v, want in use", dir, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, dir, recv, DispatcherOptions{})
}

// TestDispatcherJournalTornTail appends half a record, as a crash in the
// middle of a write leaves it, and checks the queue before it is intact and
// the journal usable.
func TestDispatcherJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	recv := map[string]Notifier{"ops": newHandNotifier()}
	d := open(t, dir, recv, DispatcherOptions{})
	for i := range 2 {
		if err := d.Send("ops", numbered(i)); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	path := filepath.Join(dir, journalName("ops"))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"op":"send","seq":3,"n":{"ID":"torn","Sta`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d = open(t, dir, recv, DispatcherOptions{})
	if err := d.Send("ops", numbered(2)); err != nil {
		t.Fatal(err)
	}
	d.Close()
	rec := &recordingNotifier{}
	d = open(t, dir, map[string]Notifier{"ops": rec}, DispatcherOptions{})
	stop := run(t, d)
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Queued == 0 })
	stop()
	if want := []string{"n000000", "n000001", "n000002"}; !slices.Equal(rec.ids(), want) {
		t.Errorf("delivered %v, want %v", rec.ids(), want)
	}
}

// TestDispatcherJournalCompaction delivers many notifications and checks the
// journal stays small, and that after a restart it still knows the ids it
// is to remember, and only those.
func TestDispatcherJournalCompaction(t *testing.T) {
	dir := t.TempDir()
	rec := &recordingNotifier{}
	opts := DispatcherOptions{QueueSize: 10}
	d := open(t, dir, map[string]Notifier{"ops": rec}, opts)
	d.queues["ops"].journal.(*fileJournal).compactMin = 16
	stop := run(t, d)
	const total = 500
	for i := range total {
		// Send no faster than delivery, so the queue never overflows.
		waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Queued < 10 })
		if err := d.Send("ops", numbered(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == total && s.Queued == 0 })
	stop()
	d.Close()
	raw, err := os.ReadFile(filepath.Join(dir, journalName("ops")))
	if err != nil {
		t.Fatal(err)
	}
	// 500 notifications make 1000 records; compaction keeps the 10 ids
	// remembered, plus what was written since.
	if lines := bytes.Count(raw, []byte("\n")); lines > 2*16 {
		t.Errorf("journal has %d records after %d notifications, want at most %d", lines, total, 2*16)
	}

	rec = &recordingNotifier{}
	d = open(t, dir, map[string]Notifier{"ops": rec}, opts)
	// The last ten are remembered; the first was forgotten long ago.
	for _, i := range []int{total - 1, total - 10, 0} {
		if err := d.Send("ops", numbered(i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := d.Stats()["ops"]; s.Deduplicated != 2 || s.Queued != 1 {
		t.Errorf("stats %+v, want 2 deduplicated and the forgotten one queued", s)
	}
}

// childEnv names the journal directory of the child process of
// TestDispatcherJournalKill9.
const childEnv = "DMONITOR_TEST_JOURNAL_CHILD"

// childDelivers is how many notifications the child delivers before its
// receiver hangs.
const childDelivers = 2000

// TestDispatcherJournalKill9Child is the child of TestDispatcherJournalKill9:
// it sends numbered notifications without end, printing "sent ID" after
// each Send returns, and delivers the first childDelivers of them, printing
// "delivered ID" from inside Notify.
func TestDispatcherJournalKill9Child(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("the child process of TestDispatcherJournalKill9")
	}
	var out sync.Mutex // one write(2) per line
	say := func(what, id string) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, "%s %s\n", what, id)
	}
	delivered := 0
	hang := NotifierFunc(func(ctx context.Context, n *Notification) (bool, error) {
		if delivered == childDelivers {
			<-ctx.Done()
			return true, ctx.Err()
		}
		delivered++
		say("delivered", n.ID)
		return false, nil
	})
	d, err := OpenDispatcher(map[string]Notifier{"ops": hang}, nil, DispatcherOptions{Dir: dir, QueueSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	d.queues["ops"].journal.(*fileJournal).compactMin = 64
	go d.Run(context.Background())
	for i := 0; ; i++ {
		if err := d.Send("ops", numbered(i)); err != nil {
			t.Fatal(err)
		}
		say("sent", numbered(i).ID)
	}
}

// NotifierFunc adapts a function to Notifier, for tests.
type NotifierFunc func(ctx context.Context, n *Notification) (bool, error)

func (f NotifierFunc) Notify(ctx context.Context, n *Notification) (bool, error) { return f(ctx, n) }

// TestDispatcherJournalKill9 kills a process with SIGKILL while it sends and
// delivers notifications, reopens its journal and checks that every
// notification whose Send returned is delivered, in order, once: only the
// last one delivered before the kill may come again, when the kill fell
// between its delivery and the record of it.
func TestDispatcherJournalKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDispatcherJournalKill9Child$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var sent, childDelivered []string
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		what, id, _ := strings.Cut(sc.Text(), " ")
		switch what {
		case "sent":
			sent = append(sent, id)
		case "delivered":
			childDelivered = append(childDelivered, id)
		}
		if !killed && len(childDelivered) == childDelivers && len(sent) >= childDelivers+1000 {
			// Mid-stream: the child is sending as fast as it can.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before it was killed: %v\n%s", err, stderr.String())
	}
	for i, id := range sent {
		if id != numbered(i).ID {
			t.Fatalf("child sent %s as its %d-th, want %s", id, i, numbered(i).ID)
		}
	}

	rec := &recordingNotifier{}
	d := open(t, dir, map[string]Notifier{"ops": rec}, DispatcherOptions{QueueSize: 1 << 20})
	stop := run(t, d)
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Queued == 0 })
	stop()
	rec.mu.Lock()
	got := slices.Clone(rec.got)
	rec.mu.Unlock()
	if len(got) == 0 {
		t.Fatal("nothing delivered after the restart")
	}
	// got must be numbered(k), numbered(k+1), … with k the first one the
	// child did not deliver, or the one before; and it must reach the last
	// one the child printed (or the one after, sent but not printed).
	first := childDelivers
	if got[0].ID == numbered(childDelivers-1).ID {
		first = childDelivers - 1
	}
	for i, n := range got {
		if want := numbered(first + i); !equalNotification(n, want) {
			t.Fatalf("delivery %d after the restart: %+v, want %+v", i, n, want)
		}
	}
	if end := first + len(got); end != len(sent) && end != len(sent)+1 {
		t.Errorf("after the restart delivered up to #%d; the child had sent %d", end-1, len(sent))
	}
	t.Logf("child sent %d (printed), delivered %d; after kill -9 and reopen: %d delivered from #%d",
		len(sent), len(childDelivered), len(got), first)
}

// replicaLog records what a Replica is told, in order.
type replicaLog struct {
	mu     sync.Mutex
	events []string
}

func (r *replicaLog) Queued(receiver string, n Notification) {
	r.add("queued " + receiver + " " + n.ID)
}
func (r *replicaLog) Done(receiver, id string) { r.add("done " + receiver + " " + id) }

func (r *replicaLog) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *replicaLog) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// The Replica hears of every notification queued and of every one done,
// delivered or dropped, in order; a duplicate Send is not queued again.
func TestDispatcherReplica(t *testing.T) {
	h := newHandNotifier()
	rep := &replicaLog{}
	d := NewDispatcher(map[string]Notifier{"ops": h}, nil, DispatcherOptions{Replica: rep})
	for _, id := range []string{"a", "b", "a"} {
		if err := d.Send("ops", note(id)); err != nil {
			t.Fatal(err)
		}
	}
	stop := run(t, d)
	h.expect(t, "a")
	h.replies <- reply{}
	h.expect(t, "b")
	h.replies <- reply{retry: false, err: errors.New("550 no such user")}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 1 && s.Failed == 1 })
	stop()
	want := []string{"queued ops a", "queued ops b", "done ops a", "done ops b"}
	if got := rep.all(); !slices.Equal(got, want) {
		t.Errorf("replica heard %v, want %v", got, want)
	}
}

// A receiver whose attempts keep failing is reported failing, and the
// metrics say what each queue did; a delivery ends the failing run.
func TestDispatcherFailingAndMetrics(t *testing.T) {
	h := newHandNotifier()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	d := NewDispatcher(map[string]Notifier{"ops": h}, nil,
		DispatcherOptions{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Metrics: m})
	if err := d.Send("ops", note("a")); err != nil {
		t.Fatal(err)
	}
	stop := run(t, d)
	for i := range 3 {
		if f := d.Failing(3); len(f) != 0 {
			t.Fatalf("after %d failed attempts Failing(3) = %v, want none", i, f)
		}
		h.expect(t, "a")
		h.replies <- reply{retry: true, err: errors.New("connection refused")}
	}
	h.expect(t, "a") // the fourth: the third failure is counted by now
	if f := d.Failing(3)["ops"]; !strings.Contains(f, "3 delivery attempts failed") || !strings.Contains(f, "connection refused") {
		t.Errorf("Failing(3)[ops] = %q, want the 3 attempts and the error", f)
	}
	if got := testutil.ToFloat64(m.queued.WithLabelValues("ops")); got != 1 {
		t.Errorf("queued = %v, want 1", got)
	}
	h.replies <- reply{}
	waitStats(t, d, "ops", func(s ReceiverStats) bool { return s.Sent == 1 })
	stop()
	if f := d.Failing(1); len(f) != 0 {
		t.Errorf("after a delivery Failing(1) = %v, want none", f)
	}
	for name, want := range map[string]float64{
		"dmonitor_notifications_sent_total": 1, "dmonitor_notifications_retried_total": 3,
		"dmonitor_notifications_failed_total": 0, "dmonitor_notifications_queued": 0,
	} {
		mf, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range mf {
			if f.GetName() != name {
				continue
			}
			found = true
			m := f.GetMetric()[0]
			got := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if got != want || m.GetLabel()[0].GetValue() != "ops" {
				t.Errorf("%s = %v %v, want %v for ops", name, got, m.GetLabel(), want)
			}
		}
		if !found {
			t.Errorf("metric %s not registered", name)
		}
	}
}
