package evaluator

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/tsdb"
)

// fakeRunner returns the status the test sets, and counts overlapping runs.
type fakeRunner struct {
	status   atomic.Int32
	block    chan struct{} // when non-nil, runs wait on it (or on ctx)
	running  atomic.Int32
	overlaps atomic.Int32
	runs     atomic.Int32
	started  chan struct{}
}

func (f *fakeRunner) Run(ctx context.Context, _ plugin.Command) check.Result {
	if f.running.Add(1) > 1 {
		f.overlaps.Add(1)
	}
	defer f.running.Add(-1)
	f.runs.Add(1)
	start := time.Now()
	if f.started != nil {
		select {
		case f.started <- struct{}{}:
		default:
		}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return check.Result{Status: check.Unknown, Raw: "UNKNOWN", Start: start}
		}
	}
	s := check.Status(f.status.Load())
	return check.Result{Status: s, Raw: s.String(), Output: "fake " + s.String(), Start: start,
		Perf: []check.Perf{{Label: "time", Value: 12, UOM: "ms"}}}
}

// memStore is an in-memory Store.
type memStore struct {
	mu     sync.Mutex
	points []tsdb.Point
}

func (m *memStore) Append(_ context.Context, pts []tsdb.Point) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.points = append(m.points, pts...)
	return nil
}

func (m *memStore) Query(context.Context, tsdb.Query) ([]tsdb.Series, error) { return nil, nil }

func (m *memStore) find(metric string, tags map[string]string) []tsdb.Point {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []tsdb.Point
next:
	for _, p := range m.points {
		if p.Metric != metric {
			continue
		}
		for k, v := range tags {
			if p.Tags[k] != v {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

type chanSender chan alerting.Notification

func (c chanSender) Send(_ string, n alerting.Notification) error { c <- n; return nil }

func testConfig(interval time.Duration) *config.Config {
	c := &config.Check{Name: "http", Command: []string{"/bin/true"}, Interval: interval, Timeout: time.Second, Quorum: 1}
	return &config.Config{
		Observer: "eu-1", Interval: interval, Quorum: 1, Workers: 4,
		Checks:  map[string]*config.Check{"http": c},
		Targets: []config.Target{{Host: "www1", Check: c}},
	}
}

// start runs an Evaluator until the test ends and returns a stop function
// that waits for Run to return.
func start(t *testing.T, o Options) (e *Evaluator, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e = New(o)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return e, stop
}

func waitNotification(t *testing.T, c chanSender) alerting.Notification {
	t.Helper()
	select {
	case n := <-c:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
	}
	return alerting.Notification{}
}

func TestOutageNotifiedAndRecovered(t *testing.T) {
	runner := &fakeRunner{}
	runner.status.Store(int32(check.Critical))
	store := &memStore{}
	sent := make(chanSender, 10)
	_, stop := start(t, Options{
		Config: testConfig(50 * time.Millisecond), Runner: runner, Store: store,
		Sender: sent, Receivers: []string{"default"}, EvalInterval: 20 * time.Millisecond,
	})

	fired := waitNotification(t, sent)
	if fired.Status != alerting.StatusFiring || fired.Labels["host"] != "www1" || fired.Labels["check"] != "http" {
		t.Fatalf("first notification = %+v, want firing for www1/http", fired)
	}
	if want := "www1 http down from 1 of 1 observers"; fired.Annotations[alerting.AnnotationSummary] != want {
		t.Errorf("summary = %q, want %q", fired.Annotations[alerting.AnnotationSummary], want)
	}

	runner.status.Store(int32(check.OK))
	resolved := waitNotification(t, sent)
	if resolved.Status != alerting.StatusResolved || !resolved.StartsAt.Equal(fired.StartsAt) {
		t.Fatalf("second notification = %+v, want resolved for the incident started %v", resolved, fired.StartsAt)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-sent:
		t.Fatalf("unexpected extra notification %+v", n)
	default:
	}

	// The history is in the store: check results with their perfdata, and
	// both transitions.
	tags := map[string]string{"host": "www1", "check": "http", "observer": "eu-1"}
	if len(store.find(MetricCheckStatus, tags)) < 2 {
		t.Error("check status points missing")
	}
	perf := store.find(MetricCheckPerf, map[string]string{"label": "time"})
	if len(perf) == 0 || perf[0].Value != 0.012 {
		t.Errorf("perf points = %v, want time=0.012 (seconds)", perf)
	}
	var states []float64
	for _, p := range store.find(MetricAlertState, map[string]string{"rule": "default", "host": "www1", "check": "http"}) {
		states = append(states, p.Value)
	}
	if len(states) != 2 || states[0] != float64(alerting.Firing) || states[1] != float64(alerting.OK) {
		t.Errorf("alert states written = %v, want [2 0]", states)
	}
	if len(store.find(MetricObserverUp, map[string]string{"observer": "eu-1"})) == 0 {
		t.Error("no heartbeat written")
	}
}

func TestNoOverlappingRuns(t *testing.T) {
	runner := &fakeRunner{block: make(chan struct{}), started: make(chan struct{}, 1)}
	reg := prometheus.NewRegistry()
	start(t, Options{Config: testConfig(10 * time.Millisecond), Runner: runner, Store: &memStore{}, Registerer: reg})
	<-runner.started
	// While the first run blocks, the job comes due again and again: each
	// time it must be skipped, not started beside the running one.
	skipped := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "dmonitor_checks_skipped_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	await.Until(t, "5 skipped runs", func() bool { return skipped() >= 5 })
	if n := runner.runs.Load(); n != 1 {
		t.Fatalf("%d runs started while the first was still running, want 1", n)
	}
	close(runner.block)
	await.Until(t, "the check to run again", func() bool { return runner.runs.Load() >= 3 })
	if o := runner.overlaps.Load(); o != 0 {
		t.Fatalf("%d overlapping runs", o)
	}
}

func TestShutdownKillsRunningChecksAfterGrace(t *testing.T) {
	runner := &fakeRunner{block: make(chan struct{}), started: make(chan struct{}, 1)}
	store := &memStore{}
	_, stop := start(t, Options{Config: testConfig(time.Hour), Runner: runner, Store: store, ShutdownGrace: 50 * time.Millisecond})
	// The first run is splayed somewhere within the hour; none has started,
	// so shutdown must return at once and write only the heartbeat.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The node's own self checks (host eu-1) report at every heartbeat.
	if n := len(store.find(MetricCheckStatus, map[string]string{"host": "www1"})); n != 0 {
		t.Fatalf("%d results written, want none", n)
	}

	runner = &fakeRunner{block: make(chan struct{}), started: make(chan struct{}, 1)}
	store = &memStore{}
	_, stop = start(t, Options{Config: testConfig(10 * time.Millisecond), Runner: runner, Store: store, ShutdownGrace: 50 * time.Millisecond})
	<-runner.started
	// The plugin never finishes by itself: shutdown kills it after the
	// grace, and a killed run is not a result.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(store.find(MetricCheckStatus, map[string]string{"host": "www1"})); n != 0 {
		t.Fatalf("%d results written for a killed run, want none", n)
	}
}

// A firing incident the state store holds is taken up: its recovery is
// notified under the incident's own start, and it is not paged again. The
// TSDB's dmonitor.alert.state says otherwise (anyone may write to it), and
// is ignored.
func TestRestoredFiringAlertIsNotNotifiedAgain(t *testing.T) {
	firedAt := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	state := leader.NewMemState()
	labels := map[string]string{alerting.LabelHost: "www1", alerting.LabelCheck: "http", alerting.LabelSeverity: "critical"}
	if err := state.TakeOver(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := state.Save(context.Background(), 1, leader.StateKey("default", "www1", "http"), alerting.Instance{
		Rule: "default", Labels: labels, State: alerting.Firing, ActiveAt: firedAt, FiredAt: firedAt,
	}); err != nil {
		t.Fatal(err)
	}
	store := &memStore{points: []tsdb.Point{{
		Metric: MetricAlertState, Tags: map[string]string{"rule": "default", "host": "www1", "check": "http"},
		Time: firedAt.Add(time.Minute), Value: float64(alerting.OK),
	}}}
	runner := &fakeRunner{}
	runner.status.Store(int32(check.Critical))
	sent := make(chanSender, 10)
	_, stop := start(t, Options{
		Config: testConfig(20 * time.Millisecond), Runner: runner, Store: store, State: state,
		Sender: sent, Receivers: []string{"default"}, EvalInterval: 10 * time.Millisecond,
	})
	await.Until(t, "several failing results", func() bool { return runner.runs.Load() >= 5 })
	runner.status.Store(int32(check.OK))
	n := waitNotification(t, sent)
	if n.Status != alerting.StatusResolved || !n.StartsAt.Equal(firedAt) {
		t.Fatalf("notification = %s starting %v, want resolved for the incident restored from %v", n.Status, n.StartsAt, firedAt)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// An incident of a check that left the configuration while this node was
// down is resolved once when it takes over, saying why.
func TestRemovedCheckIncidentResolvedAtTakeOver(t *testing.T) {
	firedAt := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	state := leader.NewMemState()
	labels := map[string]string{alerting.LabelHost: "gone", alerting.LabelCheck: "http", alerting.LabelSeverity: "critical"}
	if err := state.TakeOver(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := state.Save(context.Background(), 1, leader.StateKey("default", "gone", "http"), alerting.Instance{
		Rule: "default", Labels: labels, State: alerting.Firing, ActiveAt: firedAt, FiredAt: firedAt,
	}); err != nil {
		t.Fatal(err)
	}
	runner := &fakeRunner{}
	sent := make(chanSender, 10)
	_, stop := start(t, Options{
		Config: testConfig(time.Hour), Runner: runner, Store: &memStore{}, State: state,
		Sender: sent, Receivers: []string{"default"}, EvalInterval: 10 * time.Millisecond,
	})
	n := waitNotification(t, sent)
	if n.Status != alerting.StatusResolved || !n.StartsAt.Equal(firedAt) || n.Labels[alerting.LabelHost] != "gone" {
		t.Fatalf("notification = %s for %v starting %v, want resolved of gone's incident from %v", n.Status, n.Labels, n.StartsAt, firedAt)
	}
	if why := n.Annotations[alerting.AnnotationResolvedBy]; !strings.Contains(why, "removed from the configuration") {
		t.Errorf("resolved_by = %q, want the reason", why)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-sent:
		t.Fatalf("second notification %s %s", n.Status, n.ID)
	default:
	}
	if left, _ := state.LoadAll(context.Background()); len(left) != 0 {
		t.Errorf("state still holds %v", left)
	}
}

// A node that has just started (and may lead at once) has heard only from
// itself: with a quorum of two, its one result is no reason yet to call the
// check unknown. Its clock stands still here, so the two intervals after
// which a missing quorum is unknown never pass.
func TestJustStartedIsNotUnknown(t *testing.T) {
	cfg := testConfig(20 * time.Millisecond)
	cfg.Quorum, cfg.Checks["http"].Quorum = 2, 2
	frozen := time.Now()
	runner := &fakeRunner{}
	store := &memStore{}
	_, stop := start(t, Options{Config: cfg, Runner: runner, Store: store,
		Now: func() time.Time { return frozen }, EvalInterval: 10 * time.Millisecond})
	await.Until(t, "several results", func() bool { return runner.runs.Load() >= 5 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range store.find(MetricAlertState, nil) {
		if p.Value == float64(alerting.Unknown) {
			t.Fatalf("the check was called unknown before a quorum of observers could report: %+v", p)
		}
	}
}

// A notification stored in an instance's outbox, as a leader that died
// between deciding and queueing it leaves it, is queued by the next term,
// under its own id, and the outbox emptied.
func TestOutboxFlushedAtTakeOver(t *testing.T) {
	firedAt := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	state := leader.NewMemState()
	labels := map[string]string{alerting.LabelHost: "www1", alerting.LabelCheck: "http", alerting.LabelSeverity: "critical"}
	inst := alerting.Instance{Rule: "default", Labels: labels, State: alerting.Firing, ActiveAt: firedAt, FiredAt: firedAt}
	inst.Outbox = &alerting.Notification{ID: alerting.NotificationID("default", labels, alerting.StatusFiring, firedAt),
		Status: alerting.StatusFiring, Rule: "default", Labels: labels, StartsAt: firedAt, EvaluatedAt: firedAt}
	key := leader.StateKey("default", "www1", "http")
	if err := state.TakeOver(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := state.Save(context.Background(), 1, key, inst); err != nil {
		t.Fatal(err)
	}
	runner := &fakeRunner{}
	runner.status.Store(int32(check.Critical))
	sent := make(chanSender, 10)
	_, stop := start(t, Options{
		Config: testConfig(time.Hour), Runner: runner, Store: &memStore{}, State: state,
		Sender: sent, Receivers: []string{"default"}, EvalInterval: 10 * time.Millisecond,
	})
	n := waitNotification(t, sent)
	if n.ID != inst.Outbox.ID || n.Status != alerting.StatusFiring {
		t.Fatalf("queued %s %s, want the outbox's firing %s", n.Status, n.ID, inst.Outbox.ID)
	}
	await.Until(t, "the outbox emptied", func() bool {
		all, _ := state.LoadAll(context.Background())
		got, ok := all[key]
		return ok && got.Outbox == nil && got.State == alerting.Firing
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-sent:
		t.Fatalf("a second notification: %s %s", n.Status, n.ID)
	default:
	}
}
