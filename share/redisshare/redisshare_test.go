package redisshare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/internal/checktest"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/share/wire"
)

// t0 is the start of the first result in every test.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

// collector gathers what a callback receives.
type collector struct {
	mu  sync.Mutex
	got []check.Result
}

func (c *collector) add(r check.Result) {
	c.mu.Lock()
	c.got = append(c.got, r)
	c.mu.Unlock()
}

func (c *collector) all() []check.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// has reports whether r was received, by value.
func (c *collector) has(r check.Result) bool {
	d := checktest.Describe(r)
	return slices.ContainsFunc(c.all(), func(g check.Result) bool { return checktest.Describe(g) == d })
}

// subscribe runs x.Subscribe until the test ends, and checks that it
// returns then, and only then, with ctx's error.
func subscribe(t *testing.T, x *Exchange) (*collector, <-chan struct{}) {
	t.Helper()
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { defer close(done); err = x.Subscribe(ctx, c.add) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Subscribe did not return after its context ended")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe returned %v, want context.Canceled", err)
		}
	})
	return c, done
}

// settle waits until c's subscription has finished its first resync, by
// publishing a probe result and waiting for it. The resync reads the state
// once, in one SCAN page, before it delivers anything; so once the probe
// is delivered, whatever is published next can only arrive by the channel.
func settle(t *testing.T, pub *Exchange, c *collector, seq int) {
	t.Helper()
	probe := checktest.Result("probe", "probe", "probe", t0.Add(time.Duration(seq)*time.Hour), check.OK)
	if err := pub.Publish(context.Background(), probe); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "probe delivered", func() bool { return c.has(probe) })
}

// withoutProbes drops settle's results.
func withoutProbes(rs []check.Result) []check.Result {
	return slices.DeleteFunc(rs, func(r check.Result) bool { return r.Observer == "probe" })
}

func TestPublishSubscribeTwoObservers(t *testing.T) {
	srv := redistest.Start(t)
	a := New(srv.Client(t), Options{Observer: "eu-1"})
	b := New(srv.Client(t), Options{Observer: "us-1"})
	leader := New(srv.Client(t), Options{Observer: "leader"})
	got, _ := subscribe(t, leader)
	settle(t, a, got, 1)

	ra := checktest.Result("eu-1", "www.example.org", "http", t0, check.Critical)
	ra.Perf = []check.Perf{{Label: "time", Value: 0.25, UOM: "s", Warn: "1", Crit: "2", Min: new(0.0)}}
	rb := checktest.Result("us-1", "www.example.org", "http", t0.Add(time.Second), check.OK)
	if err := a.Publish(context.Background(), ra); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), rb); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both observers' results delivered", func() bool {
		return len(withoutProbes(got.all())) >= 2
	})
	want := []string{checktest.Describe(ra), checktest.Describe(rb)}
	var have []string
	for _, r := range withoutProbes(got.all()) {
		have = append(have, checktest.Describe(r))
	}
	if !slices.Equal(have, want) {
		t.Errorf("subscriber received\n%s\nwant\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
	}
}

func TestLateSubscriberGetsState(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := New(srv.Client(t), Options{Observer: "eu-1"})
	b := New(srv.Client(t), Options{Observer: "us-1"})
	published := []check.Result{
		checktest.Result("eu-1", "db1", "mysql", t0, check.OK),
		checktest.Result("eu-1", "db1", "mysql", t0.Add(time.Minute), check.Critical), // replaces the one before
		checktest.Result("us-1", "db1", "mysql", t0.Add(30*time.Second), check.OK),
		checktest.Result("us-1", "www", "http", t0, check.Warning),
	}
	for _, r := range published {
		x := a
		if r.Observer == "us-1" {
			x = b
		}
		if err := x.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := subscribe(t, New(srv.Client(t), Options{Observer: "leader"}))
	want := published[1:]
	eventually(t, 10*time.Second, "the stored state delivered", func() bool { return len(got.all()) >= len(want) })
	assertSameSet(t, got.all(), want)
}

func TestSnapshot(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	want := []check.Result{
		checktest.Result("eu-1", "db1", "mysql", t0, check.OK),
		checktest.Result("us-1", "db1", "mysql", t0, check.Critical),
	}
	for _, r := range want {
		if err := New(srv.Client(t), Options{Observer: r.Observer}).Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var got []check.Result
	if err := New(srv.Client(t), Options{Observer: "leader"}).Snapshot(ctx, func(r check.Result) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	assertSameSet(t, got, want)

	srv.Kill()
	noRetry := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { noRetry.Close() })
	if err := New(noRetry, Options{Observer: "leader"}).Snapshot(ctx, func(check.Result) {}); err == nil {
		t.Error("Snapshot with redis down succeeded")
	}
}

// assertSameSet fails unless got and want hold the same results, in any
// order.
func assertSameSet(t *testing.T, got, want []check.Result) {
	t.Helper()
	var g, w []string
	for _, r := range got {
		g = append(g, checktest.Describe(r))
	}
	for _, r := range want {
		w = append(w, checktest.Describe(r))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("received\n%s\nwant\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
}

func TestOlderResultDoesNotOverwrite(t *testing.T) {
	tests := []struct {
		name          string
		first, second time.Duration // starts, after t0
		kept          time.Duration // the start that must be stored
		announced     bool          // whether the second result reaches subscribers
	}{
		// A result of before the stored one, as a catch-up replays, is dropped.
		{"older", time.Minute, 0, time.Minute, false},
		// Older by a nanosecond, which a float compare would miss.
		{"older by 1ns", time.Minute, time.Minute - 1, time.Minute, false},
		// The normal case: a later run replaces the stored result.
		{"newer", 0, time.Minute, time.Minute, true},
		// The same result again, as a retry sends it, is stored again.
		{"equal", time.Minute, time.Minute, time.Minute, true},
	}
	srv := redistest.Start(t)
	ctx := context.Background()
	obs := New(srv.Client(t), Options{Observer: "eu-1"})
	probes := New(srv.Client(t), Options{Observer: "probe"})
	live, _ := subscribe(t, New(srv.Client(t), Options{Observer: "leader"}))
	settle(t, probes, live, 0)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := fmt.Sprintf("h%d", i)
			first := checktest.Result("eu-1", host, "ping", t0.Add(tt.first), check.OK)
			second := checktest.Result("eu-1", host, "ping", t0.Add(tt.second), check.Critical)
			if err := obs.Publish(ctx, first); err != nil {
				t.Fatal(err)
			}
			if err := obs.Publish(ctx, second); err != nil {
				t.Fatal(err)
			}
			settle(t, probes, live, i+1) // both publishes have been delivered, if they were

			var announced []check.Result
			for _, r := range live.all() {
				if r.Host == host {
					announced = append(announced, r)
				}
			}
			want := []check.Result{first}
			if tt.announced {
				want = append(want, second)
			}
			assertSameSet(t, announced, want)

			late, _ := subscribe(t, New(srv.Client(t), Options{Observer: "late"}))
			eventually(t, 10*time.Second, "state of "+host, func() bool {
				return slices.ContainsFunc(late.all(), func(r check.Result) bool { return r.Host == host })
			})
			for _, r := range late.all() {
				if r.Host == host && !r.Start.Equal(t0.Add(tt.kept)) {
					t.Errorf("stored result started %v, want %v", r.Start.Sub(t0), tt.kept)
				}
			}
		})
	}
}

func TestOddNamesRoundTrip(t *testing.T) {
	nan, inf, ninf := math.NaN(), math.Inf(1), math.Inf(-1)
	full := checktest.Result("eu-1", "full", "perf", t0, check.Warning)
	full.Output = "line 1 <b>&amp;</b>\nline \"2\"\t\x01"
	full.ExitCode = -1
	full.Raw = check.RawTimeout
	full.Perf = []check.Perf{
		{Label: "time", Value: 0.000123, UOM: "s", Warn: "1:", Crit: "~:2", Min: new(0.0), Max: &inf},
		{Label: "'quoted label'", Value: -1e300, UOM: "%", Min: &nan, Max: &ninf},
		{Label: "c", Value: 42},
	}
	zero := checktest.Result("eu-1", "zero", "start", time.Time{}, check.Unknown)
	tests := []check.Result{
		// Plain names.
		checktest.Result("eu-1", "www.example.org", "http", t0, check.OK),
		// Spaces.
		checktest.Result("eu-1", "my host", "check with spaces", t0, check.OK),
		// Colons, arranged so that host:check would be the same key for both.
		checktest.Result("eu-1", "a:b", "c", t0, check.OK),
		checktest.Result("eu-1", "a", "b:c", t0, check.Critical),
		// Digits and colons that mimic the length prefix.
		checktest.Result("eu-1", "3:abc", "1", t0, check.OK),
		checktest.Result("eu-1", "3", "abc:1", t0, check.Warning),
		// Unicode, in the observer name too.
		checktest.Result("zürich-ü", "höst.例え.jp", "проверка", t0, check.OK),
		// Glob characters, which SCAN's MATCH would otherwise interpret.
		checktest.Result("eu-1", "*?[x]\\", "[^a-z]*", t0, check.OK),
		// A NUL byte and an empty check name.
		checktest.Result("eu-1", "nul\x00byte", "", t0, check.OK),
		// An empty host.
		checktest.Result("eu-1", "", "empty host", t0, check.OK),
		// Every field, perfdata with NaN and infinities, a multi-line output.
		full,
		// The zero start time.
		zero,
	}
	srv := redistest.Start(t)
	ctx := context.Background()
	live, _ := subscribe(t, New(srv.Client(t), Options{Observer: "leader"}))
	settle(t, New(srv.Client(t), Options{Observer: "probe"}), live, 0)
	for _, r := range tests {
		if err := New(srv.Client(t), Options{Observer: r.Observer}).Publish(ctx, r); err != nil {
			t.Fatalf("publish %q %q: %v", r.Host, r.Check, err)
		}
	}
	eventually(t, 10*time.Second, "every result by the channel", func() bool {
		return len(withoutProbes(live.all())) >= len(tests)
	})
	assertSameSet(t, withoutProbes(live.all()), tests)

	late, _ := subscribe(t, New(srv.Client(t), Options{Observer: "late"}))
	eventually(t, 10*time.Second, "every result from the stored state", func() bool {
		return len(withoutProbes(late.all())) >= len(tests)
	})
	assertSameSet(t, withoutProbes(late.all()), tests)
}

func TestPrefixesAreSeparate(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	// Unescaped, "a*:results:*" would match the keys of "ab:".
	glob := New(srv.Client(t), Options{Prefix: "a*:", Observer: "eu-1"})
	other := New(srv.Client(t), Options{Prefix: "ab:", Observer: "eu-1"})
	mine := checktest.Result("eu-1", "mine", "ping", t0, check.OK)
	if err := glob.Publish(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if err := other.Publish(ctx, checktest.Result("eu-1", "theirs", "ping", t0, check.OK)); err != nil {
		t.Fatal(err)
	}
	got, _ := subscribe(t, New(srv.Client(t), Options{Prefix: "a*:", Observer: "leader"}))
	// The probe comes after both in the SCAN's single page.
	settle(t, New(srv.Client(t), Options{Prefix: "a*:", Observer: "probe"}), got, 1)
	assertSameSet(t, withoutProbes(got.all()), []check.Result{mine})
}

func TestSubscribeSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	pub := New(srv.Client(t), Options{Observer: "eu-1"})
	logs := &logRecorder{}
	got, done := subscribe(t, New(srv.Client(t), Options{Observer: "leader", Logger: slog.New(logs), MaxBackoff: 200 * time.Millisecond}))
	before := checktest.Result("eu-1", "www", "http", t0, check.OK)
	if err := pub.Publish(ctx, before); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "result before the restart", func() bool { return got.has(before) })

	// A result that is stored but never announced, as if its message had
	// been lost: only a resync after reconnecting can deliver it. SAVE
	// keeps it across the restart.
	unannounced := checktest.Result("us-1", "db", "mysql", t0, check.Critical)
	payload, _, err := wire.Encode(&unannounced)
	if err != nil {
		t.Fatal(err)
	}
	raw := srv.Client(t)
	if err := raw.HSet(ctx, targetKey(pub.resultsPrefix, "db", "mysql"), "us-1", payload).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Restart()

	eventually(t, 20*time.Second, "stored result resynced after the restart", func() bool { return got.has(unannounced) })
	after := checktest.Result("eu-1", "www", "http", t0.Add(time.Minute), check.Critical)
	eventually(t, 10*time.Second, "publish after the restart", func() bool { return pub.Publish(ctx, after) == nil })
	eventually(t, 10*time.Second, "result published after the restart", func() bool { return got.has(after) })
	// However many attempts the reconnection took, it is logged once each way.
	if down, up := logs.count(msgDown), logs.count(msgRestored); down != 1 || up != 1 {
		t.Errorf("logged down %d and restored %d times, want once each", down, up)
	}
	select {
	case <-done:
		t.Fatal("Subscribe returned while its context was live")
	default:
	}
}

func TestSubscribeSurvivesSilentServer(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	pub := New(srv.Client(t), Options{Observer: "eu-1"})
	logs := &logRecorder{}
	// Short client timeouts, so that each attempt against the stopped
	// server fails fast.
	fast := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { fast.Close() })
	got, done := subscribe(t, New(fast, Options{Observer: "leader", Logger: slog.New(logs),
		PingInterval: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}))
	settle(t, pub, got, 0)

	// A stopped server keeps its sockets open and answers nothing, as one
	// behind a dead network does: only the unanswered ping shows it.
	srv.Signal(syscall.SIGSTOP)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			srv.Signal(syscall.SIGCONT)
		}
	})
	// Several failed attempts, logged once as a warning.
	eventually(t, 10*time.Second, "reconnection failing", func() bool { return logs.count(msgStillDown) >= 2 })
	srv.Signal(syscall.SIGCONT)
	stopped = false
	eventually(t, 10*time.Second, "subscription reported restored", func() bool { return logs.count(msgRestored) == 1 })
	r := checktest.Result("eu-1", "www", "http", t0, check.Critical)
	if err := pub.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "result after the server resumed", func() bool { return got.has(r) })
	if n := logs.count(msgDown); n != 1 {
		t.Errorf("subscription reported down %d times, want once", n)
	}
	select {
	case <-done:
		t.Fatal("Subscribe returned while its context was live")
	default:
	}
}

// logRecorder is a slog.Handler that keeps the messages logged.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}

func (l *logRecorder) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func TestHeartbeats(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := New(srv.Client(t), Options{Observer: "us-1"})
	b := New(srv.Client(t), Options{Observer: "eu-1"})
	if obs, err := a.Observers(ctx); err != nil || len(obs) != 0 {
		t.Fatalf("Observers before any heartbeat = %v, %v; want none", obs, err)
	}
	for _, hb := range []struct {
		x  *Exchange
		at time.Time
	}{{a, t0}, {b, t0.Add(time.Second)}, {a, t0.Add(time.Minute)}} {
		if err := hb.x.Heartbeat(ctx, hb.at); err != nil {
			t.Fatal(err)
		}
	}
	obs, err := b.Observers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []ObserverInfo{
		{"eu-1", t0.Add(time.Second).Truncate(time.Millisecond)},
		{"us-1", t0.Add(time.Minute).Truncate(time.Millisecond)}, // the later heartbeat
	}
	if len(obs) != len(want) {
		t.Fatalf("Observers = %v, want %v", obs, want)
	}
	for i := range want {
		if obs[i].Name != want[i].Name || !obs[i].LastSeen.Equal(want[i].LastSeen) {
			t.Errorf("Observers[%d] = %v, want %v", i, obs[i], want[i])
		}
	}
}

// confirmCollector gathers confirmation requests.
type confirmCollector struct {
	mu  sync.Mutex
	got []string
}

func (c *confirmCollector) add(host, chk, from string) {
	c.mu.Lock()
	c.got = append(c.got, host+"|"+chk+"|"+from)
	c.mu.Unlock()
}

func (c *confirmCollector) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// confirmations runs x.Confirmations until the test ends.
func confirmations(t *testing.T, x *Exchange) *confirmCollector {
	t.Helper()
	c := &confirmCollector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Confirmations(ctx, c.add) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Confirmations returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Confirmations did not return after its context ended")
		}
	})
	return c
}

func TestRequestConfirm(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := New(srv.Client(t), Options{Observer: "eu-1"})
	b := New(srv.Client(t), Options{Observer: "us-1"})
	gotA, gotB := confirmations(t, a), confirmations(t, b)
	raw := srv.Client(t)
	eventually(t, 10*time.Second, "both observers subscribed", func() bool {
		n, err := raw.PubSubNumSub(ctx, a.confirmChan).Result()
		return err == nil && n[a.confirmChan] == 2
	})

	steps := []struct {
		x          *Exchange
		host, chk  string
		ttl        time.Duration
		wantRounds bool
	}{
		// The first request starts a round.
		{a, "db 1", "mysql:up", time.Hour, true},
		// Asking again within the ttl does not.
		{a, "db 1", "mysql:up", time.Hour, false},
		// Nor does another observer asking for the same check.
		{b, "db 1", "mysql:up", time.Hour, false},
		// Another check of the same host is its own round (the marker for a).
		{b, "db 1", "disk", time.Hour, true},
		// The marker for b: it arrives after anything a sent before.
		{a, "marker", "ping", time.Hour, true},
	}
	for i, s := range steps {
		started, err := s.x.RequestConfirm(ctx, s.host, s.chk, s.ttl)
		if err != nil {
			t.Fatal(err)
		}
		if started != s.wantRounds {
			t.Errorf("step %d: RequestConfirm(%q, %q) = %v, want %v", i, s.host, s.chk, started, s.wantRounds)
		}
	}
	eventually(t, 10*time.Second, "markers delivered", func() bool {
		return slices.Contains(gotB.all(), "marker|ping|eu-1") && slices.Contains(gotA.all(), "db 1|disk|us-1")
	})
	if want := []string{"db 1|mysql:up|eu-1", "marker|ping|eu-1"}; !slices.Equal(gotB.all(), want) {
		t.Errorf("us-1 received %q, want %q", gotB.all(), want)
	}
	if want := []string{"db 1|disk|us-1"}; !slices.Equal(gotA.all(), want) {
		t.Errorf("eu-1 received %q, want %q (never its own requests)", gotA.all(), want)
	}

	// Once the ttl has passed, a new round can start.
	if ok, err := a.RequestConfirm(ctx, "web", "http", 50*time.Millisecond); err != nil || !ok {
		t.Fatalf("first request = %v, %v", ok, err)
	}
	eventually(t, 10*time.Second, "a round after the ttl", func() bool {
		ok, err := b.RequestConfirm(ctx, "web", "http", 50*time.Millisecond)
		return err == nil && ok
	})

	if _, err := a.RequestConfirm(ctx, "web", "http", 0); err == nil {
		t.Error("RequestConfirm with ttl 0 succeeded")
	}
}

func TestPublishAll(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	x := New(srv.Client(t), Options{Observer: "eu-1"})
	batch := []check.Result{
		checktest.Result("eu-1", "a", "ping", t0.Add(time.Minute), check.OK),
		checktest.Result("eu-1", "b", "ping", t0, check.Critical),
		// Out of Unix-nanosecond range: refused on its own.
		checktest.Result("eu-1", "c", "ping", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), check.OK),
		// Older than the first of the batch: not stored.
		checktest.Result("eu-1", "a", "ping", t0, check.Critical),
	}
	// The first batch meets a server that has never seen the script, so
	// every EVALSHA is refused; the second one, a server whose scripts were
	// flushed.
	for round := range 2 {
		if round == 1 {
			if err := srv.Client(t).ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			for i := range batch {
				batch[i].Start = batch[i].Start.Add(time.Hour)
			}
		}
		err := x.PublishAll(ctx, batch)
		if err == nil || !strings.Contains(err.Error(), "out of range") || strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("round %d: PublishAll = %v, want only the out-of-range error", round, err)
		}
		late, _ := subscribe(t, New(srv.Client(t), Options{Observer: "late"}))
		settle(t, x, late, 10+round)
		assertSameSet(t, withoutProbes(late.all()), batch[:2])
	}
}

// eventually polls cond until it holds, failing the test at the deadline.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
