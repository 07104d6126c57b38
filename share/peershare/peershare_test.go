package peershare_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/localstate"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/checktest"
	"github.com/dmonitor/dmonitor/internal/fakeclock"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/syncbuf"
	"github.com/dmonitor/dmonitor/share/peershare"
	"github.com/dmonitor/dmonitor/share/wire"
	"github.com/dmonitor/dmonitor/silence"
)

// token is the bearer token the nodes of every test cluster share.
const token = "peer-token-of-the-test-cluster"

// t0 is where every node's clock starts: nanoseconds set, so a time that
// loses precision on the way shows.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

// probeHost marks the results and confirmations listen pushes to learn
// that a node's subscriptions take pushes; the inbox hides them.
const probeHost = "probe.invalid"

// ---- the cluster ----

// node is one member of a test cluster: an Exchange served behind the real
// control API on its own loopback server, with its own clock, metrics and
// log.
type node struct {
	name  string
	url   string // base of its control API
	token string // the token its API demands and its pushes carry
	peers []peershare.Peer
	x     *peershare.Exchange
	clock *fakeclock.Clock
	reg   *prometheus.Registry
	logs  *logBuffer
	got   *inbox // what its callbacks received
}

// newCluster starts one node per name, each a peer of every other, serving
// its peer API as dmonitor does: under control.APIHandler, whose bearer
// token check guards it. tweak, when set, adjusts a node's options before
// its Exchange is made. Run is not started: see run.
func newCluster(t *testing.T, names []string, tweak func(n *node, o *peershare.Options)) map[string]*node {
	t.Helper()
	// The servers listen before any Exchange is made, since each Exchange
	// takes its peers' URLs.
	servers := make(map[string]*httptest.Server, len(names))
	for _, name := range names {
		servers[name] = httptest.NewUnstartedServer(nil)
	}
	nodes := make(map[string]*node, len(names))
	for _, name := range names {
		n := &node{
			name: name, url: "http://" + servers[name].Listener.Addr().String(),
			clock: fakeclock.New(t0), reg: prometheus.NewRegistry(), logs: &logBuffer{}, got: &inbox{},
		}
		var peers []peershare.Peer
		for _, p := range names {
			if p != name {
				peers = append(peers, peershare.Peer{Name: p, URL: "http://" + servers[p].Listener.Addr().String()})
			}
		}
		log := slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o := peershare.Options{
			Self: name, Peers: peers, Token: token, OnState: n.got.addState,
			Logger: log, Registerer: n.reg, Now: n.clock.Now,
		}
		if tweak != nil {
			tweak(n, &o)
		}
		n.token, n.peers = o.Token, o.Peers
		n.x = peershare.New(o)
		srv := servers[name]
		srv.Config.Handler = control.APIHandler(control.APIOptions{
			Silences: noSilences{}, Token: o.Token, Peers: n.x.Handler(), Logger: log,
		})
		srv.Start()
		t.Cleanup(srv.Close)
		nodes[name] = n
	}
	return nodes
}

// run starts n's senders until the test ends, and waits for them to stop.
func (n *node) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.x.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Run = %v, want context.Canceled", n.name, err)
		}
	})
}

// listen subscribes n's inbox to the results and confirmation requests its
// peers push, until the test ends. A push that arrives before the
// subscriptions' goroutines have run is dropped, so it pushes a probe, as
// n's first peer, until one arrives.
func (n *node) listen(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = n.x.Subscribe(ctx, n.got.addResult) })
	wg.Go(func() { _ = n.x.Confirmations(ctx, n.got.addConfirm) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	from := n.peers[0].Name
	probe := peershare.Envelope{
		From:    from,
		Results: []wire.Result{wire.Result(checktest.Result(from, probeHost, "probe", t0, check.OK))},
		Confirm: []peershare.Target{{Host: probeHost, Check: "probe"}},
	}
	await.Until(t, n.name+"'s subscriptions to take pushes", func() bool {
		if code := n.post(t, n.token, probe); code != http.StatusNoContent {
			t.Fatalf("probe push to %s: status %d, want 204", n.name, code)
		}
		return n.got.probed()
	})
}

// post sends env to n's push endpoint with tok, as a peer would, and
// returns the status.
func (n *node) post(t *testing.T, tok string, env peershare.Envelope) int {
	t.Helper()
	body, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{}
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	code, _, _ := do(t, http.DefaultClient, http.MethodPost, n.url+peershare.PushPath, hdr, body)
	return code
}

// do makes one request and returns its status, headers and body.
func do(t *testing.T, c *http.Client, method, url string, hdr http.Header, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, hdr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// noSilences is the silence store of a node whose tests touch no silence:
// the peer API does not use it.
type noSilences struct{}

func (noSilences) Set(silence.Silence) (string, error) { return "", errors.New("no silences here") }
func (noSilences) Expire(string) error                 { return silence.ErrNotFound }
func (noSilences) List(time.Time) []silence.Silence    { return nil }

var _ control.Silencer = noSilences{}

// ---- clock, inbox, log, metrics ----

// confirmation is one call of the Confirmations callback.
type confirmation struct{ host, check, from string }

// inbox gathers what a node's callbacks receive.
type inbox struct {
	mu       sync.Mutex
	results  []check.Result
	confirms []confirmation
	states   [][]localstate.Record
}

func (b *inbox) addResult(r check.Result) {
	b.mu.Lock()
	b.results = append(b.results, r)
	b.mu.Unlock()
}

func (b *inbox) addConfirm(host, chk, from string) {
	b.mu.Lock()
	b.confirms = append(b.confirms, confirmation{host, chk, from})
	b.mu.Unlock()
}

func (b *inbox) addState(_ context.Context, recs []localstate.Record) {
	b.mu.Lock()
	b.states = append(b.states, recs)
	b.mu.Unlock()
}

// probed reports whether both subscriptions have taken a probe.
func (b *inbox) probed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.ContainsFunc(b.results, func(r check.Result) bool { return r.Host == probeHost }) &&
		slices.ContainsFunc(b.confirms, func(c confirmation) bool { return c.host == probeHost })
}

// Results returns the results received, probes left out.
func (b *inbox) Results() []check.Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(b.results), func(r check.Result) bool { return r.Host == probeHost })
}

// Confirms returns the confirmation requests received, probes left out.
func (b *inbox) Confirms() []confirmation {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(b.confirms), func(c confirmation) bool { return c.host == probeHost })
}

// States returns the record batches OnState received, one per call.
func (b *inbox) States() [][]localstate.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.states)
}

// logBuffer holds a node's log, in slog's JSON form.
type logBuffer struct{ syncbuf.Buffer }

// count returns how many entries have level, a message containing msg, and
// every attribute of attrs (key, value pairs, compared as printed).
func (l *logBuffer) count(t *testing.T, level slog.Level, msg string, attrs ...string) int {
	t.Helper()
	text := l.String()
	n := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
entries:
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if e[slog.LevelKey] != level.String() || !strings.Contains(fmt.Sprint(e[slog.MessageKey]), msg) {
			continue
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if fmt.Sprint(e[attrs[i]]) != attrs[i+1] {
				continue entries
			}
		}
		n++
	}
	return n
}

// metric returns the value of name's sample whose labels include labels
// (name, value pairs), or 0 while there is none.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue samples
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// ---- results ----

// at returns s[i], or "(none)" past its end.
func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// recordsJSON returns the JSON of recs, which tells records apart as a peer
// reading them would.
func recordsJSON(t *testing.T, recs []localstate.Record) string {
	t.Helper()
	b, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func record(key string, updated time.Time, epoch int64) localstate.Record {
	return localstate.Record{
		Key: key, Updated: updated, Epoch: epoch,
		Instance: alerting.Instance{
			Rule: "down", Labels: map[string]string{"host": "web1"}, State: alerting.Firing,
			ActiveAt: updated.Add(-time.Minute), FiredAt: updated, LastEval: updated,
			Annotations: map[string]string{"summary": "web1 is down"},
		},
	}
}

// ---- tests ----

// TestResultsReachEveryPeer: what A publishes arrives whole at B and C, in
// order, batched into one push per peer, and never at A itself.
func TestResultsReachEveryPeer(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a, b, cc := c["a"], c["b"], c["c"]
	for _, n := range []*node{a, b, cc} {
		n.listen(t)
	}

	nan, zero := math.NaN(), 0.0
	odd := checktest.Result("a", "web1", "http", t0.Add(1), check.Critical)
	odd.Raw, odd.ExitCode = check.RawTimeout, -1
	odd.Output = "first line\nsecond line"
	odd.Perf = []check.Perf{
		{Label: "time", Value: 0.012345678901234567, UOM: "s", Warn: "1", Crit: "2", Min: &nan, Max: &nan},
		{Label: "size", Value: math.Inf(1), UOM: "B", Min: &zero},
	}
	sent := []check.Result{odd}
	for i := range 199 {
		sent = append(sent, checktest.Result("a", fmt.Sprintf("host%03d", i), "ping", t0.Add(time.Duration(i)*time.Nanosecond), check.OK))
	}
	// Published before the sender starts, everything waits in one queue
	// per peer, so each peer gets it in a single push.
	for _, r := range sent {
		if err := a.x.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	a.run(t)

	want := checktest.DescribeAll(sent)
	for _, n := range []*node{b, cc} {
		// The receiver takes the results before it answers, and the
		// sender counts the push once it has the answer: await both.
		await.Until(t, fmt.Sprintf("%s to get %d results and a to count the push", n.name, len(sent)), func() bool {
			return len(n.got.Results()) >= len(sent) && metric(t, a.reg, "dmonitor_peer_pushes_total", "peer", n.name) >= 1
		})
		if got := checktest.DescribeAll(n.got.Results()); !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s received %d results, want %d; the first difference, at %d:\n got %s\nwant %s",
				n.name, len(got), len(want), i, at(got, i), at(want, i))
		}
		if got := metric(t, a.reg, "dmonitor_peer_pushes_total", "peer", n.name); got != 1 {
			t.Errorf("pushes from a to %s = %v, want 1 for the whole batch", n.name, got)
		}
	}
	// A's pushes were taken (counted above) and delivered synchronously,
	// so anything meant for A itself would be there by now.
	if got := a.got.Results(); len(got) != 0 {
		t.Errorf("a received %d results, want none: its own results are not for it (first %s)", len(got), checktest.Describe(got[0]))
	}
}

// TestResultsWhileRunning: a result published to a running exchange goes
// out at once, without waiting for more.
func TestResultsWhileRunning(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a, b := c["a"], c["b"]
	b.listen(t)
	a.run(t)
	for i := range 3 {
		r := checktest.Result("a", "web1", "http", t0.Add(time.Duration(i)*time.Second), check.Status(i))
		if err := a.x.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		await.Until(t, fmt.Sprintf("b to get result %d", i), func() bool {
			return slices.Contains(checktest.DescribeAll(b.got.Results()), checktest.Describe(r))
		})
	}
}

// TestQueueFullDropsOldest: beyond QueueSize the oldest results for a peer
// are dropped and counted; the newest go out.
func TestQueueFullDropsOldest(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, func(n *node, o *peershare.Options) {
		if n.name == "a" {
			o.QueueSize = 3
		}
	})
	a, b := c["a"], c["b"]
	b.listen(t)
	var sent []check.Result
	for i := range 5 {
		r := checktest.Result("a", fmt.Sprintf("web%d", i), "http", t0, check.OK)
		sent = append(sent, r)
		if err := a.x.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	a.run(t)
	await.Until(t, "b to get 3 results", func() bool { return len(b.got.Results()) >= 3 })
	if got, want := checktest.DescribeAll(b.got.Results()), checktest.DescribeAll(sent[2:]); !slices.Equal(got, want) {
		t.Errorf("b received %q, want the newest three %q", got, want)
	}
	if got := metric(t, a.reg, "dmonitor_peer_results_dropped_total", "reason", "queue full"); got != 2 {
		t.Errorf(`dropped{reason="queue full"} = %v, want 2`, got)
	}
}

// TestHeartbeats: a peer's heartbeat makes it an observer, seen at the
// receiver's time of arrival, not at the time the sender wrote; a node
// lists itself once it beats.
func TestHeartbeats(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a, b := c["a"], c["b"]
	// B's clock runs 700ms ahead: within MaxClockSkew, and far enough to
	// tell its clock from A's.
	b.clock.Set(t0.Add(700 * time.Millisecond))
	a.run(t)
	ctx := context.Background()

	observers := func() []peershare.Seen {
		t.Helper()
		obs, err := b.x.Observers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return obs
	}
	if obs := observers(); len(obs) != 0 {
		t.Fatalf("b's observers before any heartbeat = %v, want none", obs)
	}
	// Results alone are no heartbeat.
	if code := b.post(t, b.token, peershare.Envelope{From: "a", Results: []wire.Result{wire.Result(checktest.Result("a", "web1", "http", t0, check.OK))}}); code != http.StatusNoContent {
		t.Fatalf("push of a result: status %d, want 204", code)
	}
	if obs := observers(); len(obs) != 0 {
		t.Fatalf("b's observers after a push without heartbeat = %v, want none", obs)
	}

	seenAt := func(name string) (time.Time, bool) {
		for _, s := range observers() {
			if s.Name == name {
				return s.LastSeen, true
			}
		}
		return time.Time{}, false
	}
	// The time A writes into its heartbeat is ignored: an hour off here.
	if err := a.x.Heartbeat(ctx, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "b to list a", func() bool { _, ok := seenAt("a"); return ok })
	if at, _ := seenAt("a"); !at.Equal(b.clock.Now()) {
		t.Errorf("a last seen at %v, want b's clock at arrival %v", at, b.clock.Now())
	}

	// A later heartbeat moves LastSeen to its arrival.
	a.clock.Advance(10 * time.Second)
	b.clock.Advance(10 * time.Second)
	if err := a.x.Heartbeat(ctx, a.clock.Now()); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "b to see a's second heartbeat", func() bool { at, _ := seenAt("a"); return at.Equal(b.clock.Now()) })

	// B's own entry is when it last beat.
	selfAt := t0.Add(-5 * time.Second)
	if err := b.x.Heartbeat(ctx, selfAt); err != nil {
		t.Fatal(err)
	}
	obs := observers()
	want := []peershare.Seen{{Name: "a", LastSeen: b.clock.Now()}, {Name: "b", LastSeen: selfAt}}
	if len(obs) != len(want) {
		t.Fatalf("b's observers = %v, want %v", obs, want)
	}
	for i := range want {
		if obs[i].Name != want[i].Name || !obs[i].LastSeen.Equal(want[i].LastSeen) {
			t.Errorf("b's observers = %v, want %v (sorted by name)", obs, want)
		}
	}
}

// TestRequestConfirm: a node asks its peers once per target and ttl; the
// peer's callback hears which node asked.
func TestRequestConfirm(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a, b := c["a"], c["b"]
	b.listen(t)
	a.run(t)
	const ttl = 30 * time.Second
	steps := []struct {
		name    string
		advance time.Duration // a's clock moves first
		host    string
		want    bool
	}{
		// Nothing asked yet: ask.
		{"first request", 0, "web1", true},
		// Asked a moment ago: hold off, send nothing.
		{"again at once", 0, "web1", false},
		// Still within ttl by a millisecond.
		{"just within ttl", ttl - time.Millisecond, "web1", false},
		// Another target has its own round.
		{"another target", 0, "web2", true},
		// ttl after the first request: ask again.
		{"ttl later", time.Millisecond, "web1", true},
		// And that new request holds off the next.
		{"again after the new round", 0, "web1", false},
	}
	var want []confirmation
	for _, s := range steps {
		a.clock.Advance(s.advance)
		asked, err := a.x.RequestConfirm(context.Background(), s.host, "http", ttl)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if asked != s.want {
			t.Errorf("%s: RequestConfirm(%s) = %v, want %v", s.name, s.host, asked, s.want)
		}
		if asked {
			want = append(want, confirmation{s.host, "http", "a"})
		}
	}
	// A last request is a barrier: pushes to a peer go one after the
	// other, so once it arrives everything asked before it has too.
	if ok, _ := a.x.RequestConfirm(context.Background(), "barrier", "http", ttl); !ok {
		t.Fatal("RequestConfirm(barrier) = false, want true")
	}
	want = append(want, confirmation{"barrier", "http", "a"})
	await.Until(t, "b to get the barrier request", func() bool {
		return slices.Contains(b.got.Confirms(), confirmation{"barrier", "http", "a"})
	})
	if got := b.got.Confirms(); !slices.Equal(got, want) {
		t.Errorf("b's Confirmations callback got %v, want %v", got, want)
	}
}

// TestRequestConfirmKeepsEachTargetsTTL: the evaluator asks with a ttl per
// check (its interval over the node count); a request for a check with a
// short ttl must not reset the hold-off of one with a long ttl.
func TestRequestConfirmKeepsEachTargetsTTL(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a := c["a"]
	ctx := context.Background()
	if ok, _ := a.x.RequestConfirm(ctx, "web1", "slow", 200*time.Second); !ok {
		t.Fatal("first request for slow = false, want true")
	}
	a.clock.Advance(60 * time.Second)
	if ok, _ := a.x.RequestConfirm(ctx, "web1", "fast", 10*time.Second); !ok {
		t.Fatal("first request for fast = false, want true")
	}
	a.clock.Advance(time.Second)
	if ok, _ := a.x.RequestConfirm(ctx, "web1", "slow", 200*time.Second); ok {
		t.Error("RequestConfirm(slow) 61s after the first, with a 200s ttl = true, want false")
	}
}

// TestPushState: the decider's state reaches each peer's OnState, the
// records whole and queued ones together.
func TestPushState(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a, b := c["a"], c["b"]
	r1 := record("down\x00web1\x00http", t0.Add(3), 41)
	r2 := record("down\x00web2\x00http", t0.Add(4), 42)
	r2.Deleted, r2.Instance = true, alerting.Instance{}
	a.x.PushState(r1)
	a.x.PushState(r2)
	a.run(t)
	await.Until(t, "b to get the state", func() bool { return len(b.got.States()) > 0 })
	got := b.got.States()
	if len(got) != 1 {
		t.Fatalf("OnState called %d times, want once for both records queued before the push", len(got))
	}
	if g, w := recordsJSON(t, got[0]), recordsJSON(t, []localstate.Record{r1, r2}); g != w {
		t.Errorf("OnState got %s\nwant %s", g, w)
	}
}

// stateSource is a StateSource for FetchState's tests.
type stateSource func(ctx context.Context) ([]localstate.Record, error)

func (f stateSource) Records(ctx context.Context) ([]localstate.Record, error) { return f(ctx) }

func holding(recs ...localstate.Record) stateSource {
	return func(context.Context) ([]localstate.Record, error) { return recs, nil }
}

// TestFetchState: a node that starts deciding takes the copies of every
// peer that answers, and counts them; one that does not is skipped.
func TestFetchState(t *testing.T) {
	r1 := record("down\x00web1\x00http", t0.Add(1), 7)
	r2 := record("down\x00web2\x00http", t0.Add(2), 8)
	failing := stateSource(func(context.Context) ([]localstate.Record, error) { return nil, errors.New("disk on fire") })

	cases := []struct {
		name     string
		a, c     peershare.StateSource // nil serves none
		cHangs   bool                  // c's store answers only when the request ends
		cToken   string                // c's token, when not the cluster's
		down     bool                  // b has one more peer, where nothing listens
		within   time.Duration         // FetchState's deadline; 0: 10s
		want     []localstate.Record
		answered int
	}{
		// Both copies come back.
		{name: "every peer answers", a: holding(r1), c: holding(r2), want: []localstate.Record{r1, r2}, answered: 2},
		// A peer without a state source answers with nothing.
		{name: "a peer with no state", a: holding(r1), want: []localstate.Record{r1}, answered: 2},
		// The dead decider is skipped, the others still count.
		{name: "a peer that is down", a: holding(r1), c: holding(r2), down: true, want: []localstate.Record{r1, r2}, answered: 2},
		// A store that fails is no answer.
		{name: "a peer whose store fails", a: holding(r1), c: failing, want: []localstate.Record{r1}, answered: 1},
		// A peer with another token refuses (401): no answer.
		{name: "a peer with another token", a: holding(r1), c: holding(r2), cToken: "other", want: []localstate.Record{r1}, answered: 1},
		// A peer that does not answer within the deadline is skipped.
		{name: "a peer that hangs", a: holding(r1), cHangs: true, within: 300 * time.Millisecond, want: []localstate.Record{r1}, answered: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			hanging := stateSource(func(ctx context.Context) ([]localstate.Record, error) {
				select {
				case <-ctx.Done():
				case <-release:
				}
				return nil, errors.New("gave up")
			})
			cl := newCluster(t, []string{"a", "b", "c"}, func(n *node, o *peershare.Options) {
				switch n.name {
				case "a":
					o.State = tc.a
				case "c":
					o.State = tc.c
					if tc.cHangs {
						o.State = hanging
					}
					if tc.cToken != "" {
						o.Token = tc.cToken
					}
				case "b":
					if tc.down {
						o.Peers = append(o.Peers, peershare.Peer{Name: "d", URL: "http://" + loopback.FreeAddr(t)})
					}
				}
			})
			// Registered after the servers' Close, so it runs first: a
			// server waits for its handlers before closing.
			t.Cleanup(func() { close(release) })
			within := tc.within
			if within == 0 {
				within = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			f := cl["b"].x.FetchState(ctx)
			got, answered := f.Records, f.Answered
			if answered != tc.answered {
				t.Errorf("FetchState answered = %d, want %d", answered, tc.answered)
			}
			slices.SortFunc(got, func(x, y localstate.Record) int { return strings.Compare(x.Key, y.Key) })
			if g, w := recordsJSON(t, got), recordsJSON(t, tc.want); g != w {
				t.Errorf("FetchState records = %s\nwant %s", g, w)
			}
		})
	}
}

// recordingClient is an HTTP client that remembers the local address of
// its last connection: the remote address the server sees.
func recordingClient() (*http.Client, func() string) {
	var mu sync.Mutex
	var local string
	d := &net.Dialer{}
	c := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				local = conn.LocalAddr().String()
				mu.Unlock()
			}
			return conn, err
		},
	}}
	return c, func() string { mu.Lock(); defer mu.Unlock(); return local }
}

// TestPeerAPINeedsTheToken: the peer API behind the control API refuses a
// caller without the cluster's token, takes nothing from it, and logs who
// it was.
func TestPeerAPINeedsTheToken(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	b := c["b"]
	b.listen(t)
	push, err := json.Marshal(peershare.Envelope{
		From: "a", Heartbeat: &t0,
		Results: []wire.Result{wire.Result(checktest.Result("a", "web1", "http", t0, check.Critical))},
		Confirm: []peershare.Target{{Host: "web1", Check: "http"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		method string
		path   string
		auth   string // the Authorization header; "" sends none
		want   int
	}{
		// No header at all.
		{"push without a token", http.MethodPost, peershare.PushPath, "", http.StatusUnauthorized},
		// Another node's token file.
		{"push with a wrong token", http.MethodPost, peershare.PushPath, "Bearer not-" + token, http.StatusUnauthorized},
		// The right secret under another scheme.
		{"push with the token as Basic", http.MethodPost, peershare.PushPath, "Basic " + token, http.StatusUnauthorized},
		// A prefix of the token is not the token.
		{"push with part of the token", http.MethodPost, peershare.PushPath, "Bearer " + token[:len(token)-1], http.StatusUnauthorized},
		// The alert state is not for anyone either.
		{"state without a token", http.MethodGet, peershare.StatePath, "", http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, remote := recordingClient()
			hdr := http.Header{}
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			var body []byte
			if tc.method == http.MethodPost {
				body = push
			}
			code, h, _ := do(t, client, tc.method, b.url+tc.path, hdr, body)
			if code != tc.want {
				t.Errorf("status %d, want %d", code, tc.want)
			}
			if h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if n := b.logs.count(t, slog.LevelWarn, "without the right bearer token", "remote", remote(), "path", tc.path); n != 1 {
				t.Errorf("%d warnings naming remote %s and path %s, want 1; log:\n%s", n, remote(), tc.path, b.logs)
			}
		})
	}
	// Nothing of the refused pushes was taken.
	if got := b.got.Results(); len(got) != 0 {
		t.Errorf("b took %d results from refused pushes", len(got))
	}
	if got := b.got.Confirms(); len(got) != 0 {
		t.Errorf("b took confirmation requests from refused pushes: %v", got)
	}
	if obs, _ := b.x.Observers(context.Background()); len(obs) != 0 {
		t.Errorf("b took heartbeats from refused pushes: %v", obs)
	}
	// And the same push with the token is taken: the refusals were the
	// token's doing.
	code, _, _ := do(t, http.DefaultClient, http.MethodPost, b.url+peershare.PushPath, http.Header{"Authorization": {"Bearer " + token}}, push)
	if code != http.StatusNoContent {
		t.Fatalf("push with the token: status %d, want 204", code)
	}
	if got := b.got.Results(); len(got) != 1 {
		t.Errorf("b took %d results from the push with the token, want 1", len(got))
	}
}

// TestPushFromNonPeer: a push with the token but from a node that is not a
// peer in nodes.txt is refused whole.
func TestPushFromNonPeer(t *testing.T) {
	cases := []struct {
		name     string
		from     string
		withSelf bool // b's peers list b too, as when given every node of nodes.txt
	}{
		// Not in nodes.txt.
		{"unknown node", "z", false},
		// Its own name: a copy of its nodes.txt entry elsewhere, or a loop.
		{"the receiver itself", "b", false},
		// Its own name, even where its peers include it.
		{"the receiver itself among its peers", "b", true},
		// No name at all.
		{"no name", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, []string{"a", "b"}, func(n *node, o *peershare.Options) {
				if tc.withSelf && n.name == "b" {
					o.Peers = append(o.Peers, peershare.Peer{Name: "b", URL: n.url})
				}
			})
			b := c["b"]
			b.listen(t)
			env := peershare.Envelope{
				From: tc.from, Heartbeat: &t0,
				Results: []wire.Result{wire.Result(checktest.Result(tc.from, "web1", "http", t0, check.OK))},
				Confirm: []peershare.Target{{Host: "web1", Check: "http"}},
			}
			if code := b.post(t, b.token, env); code != http.StatusForbidden {
				t.Errorf("status %d, want 403", code)
			}
			if got := b.got.Results(); len(got) != 0 {
				t.Errorf("b took %d results", len(got))
			}
			if got := b.got.Confirms(); len(got) != 0 {
				t.Errorf("b took confirmation requests: %v", got)
			}
			if obs, _ := b.x.Observers(context.Background()); len(obs) != 0 {
				t.Errorf("b took a heartbeat: %v", obs)
			}
			if n := b.logs.count(t, slog.LevelWarn, "not a peer", "from", tc.from); n != 1 {
				t.Errorf("%d warnings about from=%q, want 1; log:\n%s", n, tc.from, b.logs)
			}
		})
	}
}

// TestPushDropsResults: results no rule here could read, or that claim
// another observer than their sender, are dropped and counted by reason;
// the rest of the push is taken.
func TestPushDropsResults(t *testing.T) {
	known := func(host, chk string) bool { return chk != "unknown" }
	good := checktest.Result("a", "web1", "http", t0, check.OK)
	cases := []struct {
		name    string
		results []check.Result
		want    []check.Result
		reason  string // the drop reason counted once; "" for none
	}{
		// The control case: a known check from its own observer.
		{"known check from its observer", []check.Result{good}, []check.Result{good}, ""},
		// This node does not run that check.
		{"unknown check", []check.Result{checktest.Result("a", "web1", "unknown", t0, check.Critical), good}, []check.Result{good}, "unknown check"},
		// A relays what C saw: C's own push is the only source of C's results.
		{"observer other than the sender", []check.Result{checktest.Result("c", "web1", "http", t0, check.Critical), good}, []check.Result{good}, "wrong observer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, []string{"a", "b", "c"}, func(n *node, o *peershare.Options) { o.Known = known })
			b := c["b"]
			b.listen(t)
			env := peershare.Envelope{From: "a"}
			for _, r := range tc.results {
				env.Results = append(env.Results, wire.Result(r))
			}
			if code := b.post(t, b.token, env); code != http.StatusNoContent {
				t.Fatalf("status %d, want 204", code)
			}
			if got, want := checktest.DescribeAll(b.got.Results()), checktest.DescribeAll(tc.want); !slices.Equal(got, want) {
				t.Errorf("b took %q, want %q", got, want)
			}
			for _, reason := range []string{"unknown check", "wrong observer"} {
				want := 0.0
				if reason == tc.reason {
					want = 1
				}
				if got := metric(t, b.reg, "dmonitor_peer_results_dropped_total", "reason", reason); got != want {
					t.Errorf("dropped{reason=%q} = %v, want %v", reason, got, want)
				}
			}
		})
	}
}

// TestClockSkew: a peer whose clock is off is measured at every push and
// reported once per change, not once per push.
func TestClockSkew(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a, b := c["a"], c["b"]
	a.run(t)
	steps := []struct {
		name           string
		ahead          time.Duration // a's clock against b's
		warned, inStep int           // warnings and back-in-step notes so far
	}{
		// Within MaxClockSkew: nothing to say.
		{"in step", 200 * time.Millisecond, 0, 0},
		// Five seconds ahead: one warning.
		{"5s ahead", 5 * time.Second, 1, 0},
		// Still off: the warning is not repeated.
		{"still ahead", 5*time.Second + 300*time.Millisecond, 1, 0},
		// Back within the limit: said once.
		{"back in step", -300 * time.Millisecond, 1, 1},
		// Behind counts too.
		{"5s behind", -5 * time.Second, 2, 1},
		// Exactly MaxClockSkew is still in step.
		{"at the limit", peershare.MaxClockSkew, 2, 2},
	}
	for i, s := range steps {
		b.clock.Advance(time.Minute)
		a.clock.Set(b.clock.Now().Add(s.ahead))
		if err := a.x.Heartbeat(context.Background(), a.clock.Now()); err != nil {
			t.Fatal(err)
		}
		// b has handled the push once a counts it taken.
		await.Until(t, s.name+": push taken", func() bool {
			return metric(t, a.reg, "dmonitor_peer_pushes_total", "peer", "b") >= float64(i+1)
		})
		if got := metric(t, b.reg, "dmonitor_peer_clock_skew_seconds", "peer", "a"); math.Abs(got-s.ahead.Seconds()) > 1e-6 {
			t.Errorf("%s: skew{peer=a} = %v, want %v", s.name, got, s.ahead.Seconds())
		}
		if got := b.logs.count(t, slog.LevelWarn, "peer clock is off", "peer", "a"); got != s.warned {
			t.Errorf("%s: %d clock warnings, want %d", s.name, got, s.warned)
		}
		if got := b.logs.count(t, slog.LevelInfo, "peer clock back in step", "peer", "a"); got != s.inStep {
			t.Errorf("%s: %d back-in-step notes, want %d", s.name, got, s.inStep)
		}
	}
}

// blackHole listens on loopback and accepts connections it never answers:
// a peer that hangs.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestDownPeerDelaysNoOther: a peer that refuses or hangs does not hold up
// delivery to the others; its failures are counted and logged once.
func TestDownPeerDelaysNoOther(t *testing.T) {
	cases := []struct {
		name    string
		refused bool // else it hangs
	}{
		// Nothing listens there any more: the push fails at once.
		{"refused", true},
		// It accepts and never answers; with no client timeout a sender
		// shared between peers would wait for it until the test ends.
		{"hangs", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var down string
			if tc.refused {
				down = loopback.FreeAddr(t)
			} else {
				down = blackHole(t)
			}
			c := newCluster(t, []string{"a", "c"}, func(n *node, o *peershare.Options) {
				if n.name == "a" {
					// First in line, so a single sender would meet it first.
					o.Peers = append([]peershare.Peer{{Name: "b", URL: "http://" + down}}, o.Peers...)
					if !tc.refused {
						o.Client = &http.Client{}
					}
				}
			})
			a, cc := c["a"], c["c"]
			cc.listen(t)
			a.run(t)
			for i := range 2 {
				r := checktest.Result("a", "web1", "http", t0.Add(time.Duration(i)), check.Critical)
				if err := a.x.Publish(context.Background(), r); err != nil {
					t.Fatal(err)
				}
				await.Until(t, fmt.Sprintf("c to get result %d", i), func() bool {
					return slices.Contains(checktest.DescribeAll(cc.got.Results()), checktest.Describe(r))
				})
				if tc.refused {
					// The drop is counted just after the error.
					await.Until(t, fmt.Sprintf("push %d to b to fail", i), func() bool {
						return metric(t, a.reg, "dmonitor_peer_push_errors_total", "peer", "b") >= float64(i+1) &&
							metric(t, a.reg, "dmonitor_peer_results_dropped_total", "reason", "push failed") >= float64(i+1)
					})
				}
			}
			if !tc.refused {
				return
			}
			if got := metric(t, a.reg, "dmonitor_peer_push_errors_total", "peer", "b"); got != 2 {
				t.Errorf("push errors{peer=b} = %v, want 2", got)
			}
			if got := metric(t, a.reg, "dmonitor_peer_results_dropped_total", "reason", "push failed"); got != 2 {
				t.Errorf(`dropped{reason="push failed"} = %v, want 2`, got)
			}
			if got := metric(t, a.reg, "dmonitor_peer_push_errors_total", "peer", "c"); got != 0 {
				t.Errorf("push errors{peer=c} = %v, want 0", got)
			}
			if got := a.logs.count(t, slog.LevelWarn, "cannot reach peer", "peer", "b"); got != 1 {
				t.Errorf("%d warnings about b, want 1 for the change, not one per push", got)
			}
		})
	}
}

// TestStateRetriedUntilTaken: alert state pushed while a peer is down is
// not dropped like results: it reaches the peer once the peer answers, so
// the next decider knows what was paged.
func TestStateRetriedUntilTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there until the peer "comes back"
	c := newCluster(t, []string{"a"}, func(n *node, o *peershare.Options) {
		o.Peers = append(o.Peers, peershare.Peer{Name: "z", URL: "http://" + addr})
	})
	a := c["a"]
	r := record("down\x00web1\x00http", t0.Add(5), 9)
	a.x.PushState(r)
	a.run(t)
	await.Until(t, "a failed push to z", func() bool {
		return metric(t, a.reg, "dmonitor_peer_push_errors_total", "peer", "z") >= 1
	})

	got := make(chan []localstate.Record, 10)
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port of the peer that was down was taken meanwhile: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var env peershare.Envelope
		if err := json.NewDecoder(req.Body).Decode(&env); err != nil {
			t.Errorf("decode push: %v", err)
		}
		if len(env.State) > 0 {
			got <- env.State
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	select {
	case recs := <-got:
		if g, w := recordsJSON(t, recs), recordsJSON(t, []localstate.Record{r}); g != w {
			t.Fatalf("z got %s, want %s", g, w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the state pushed while z was down never reached it")
	}
}

// TestQueuedNotificationsHeld: what a decider's queues hold is held by its
// peers until it is done, so a decider that dies with a notification
// undelivered leaves it to its successor, once, oldest first.
func TestQueuedNotificationsHeld(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a, b, cc := c["a"], c["b"], c["c"]
	note := func(id string, at int) alerting.Notification {
		return alerting.Notification{ID: id, Status: alerting.StatusFiring, Rule: "default", EvaluatedAt: t0.Add(time.Duration(at) * time.Second)}
	}
	a.x.Queued("ops/email", note("late", 2))
	a.x.Queued("ops/email", note("early", 1))
	a.x.Queued("ops/webhook", note("early", 1))
	a.x.Done("ops/webhook", "early") // done before any push: the peers never hold it
	a.run(t)
	ids := func(f peershare.Fetched) []string {
		var out []string
		for _, q := range f.Queued {
			out = append(out, q.Receiver+" "+q.Notification.ID)
		}
		return out
	}
	want := []string{"ops/email early", "ops/email late"}
	await.Until(t, "b and c to hold a's queue", func() bool {
		return slices.Equal(ids(b.x.FetchState(context.Background())), want) &&
			slices.Equal(ids(cc.x.FetchState(context.Background())), want)
	})
	// Both b's peers hold the same two: fetched once each.
	if got := ids(b.x.FetchState(context.Background())); !slices.Equal(got, want) {
		t.Fatalf("b fetched %v, want %v", got, want)
	}

	a.x.Done("ops/email", "early")
	await.Until(t, "the delivered one forgotten", func() bool {
		return slices.Equal(ids(b.x.FetchState(context.Background())), []string{"ops/email late"})
	})
}

// silenceBox is a SilenceStore that records what it is given.
type silenceBox struct {
	mu   sync.Mutex
	sils []silence.Silence
}

func (b *silenceBox) List(time.Time) []silence.Silence {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sils)
}

func (b *silenceBox) Merge(sils []silence.Silence) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sils = append(b.sils, sils...)
	return len(sils), nil
}

// TestSilencesShared: a silence stored on one node reaches its peers'
// stores, and a node that asks gets its peers' silences.
func TestSilencesShared(t *testing.T) {
	boxes := map[string]*silenceBox{"a": {}, "b": {}}
	c := newCluster(t, []string{"a", "b"}, func(n *node, o *peershare.Options) { o.Silences = boxes[n.name] })
	sil := silence.Silence{ID: "s1", Matchers: []silence.Matcher{{Name: "host", Value: "www1", IsEqual: true}},
		StartsAt: t0, EndsAt: t0.Add(time.Hour), CreatedBy: "ann", UpdatedAt: t0}
	boxes["a"].sils = []silence.Silence{sil}
	c["a"].x.PushSilences([]silence.Silence{sil})
	c["a"].run(t)
	await.Until(t, "b to take a's silence", func() bool {
		got := boxes["b"].List(t0)
		return len(got) == 1 && got[0].ID == "s1"
	})
	f := c["b"].x.FetchState(context.Background())
	if len(f.Silences) != 1 || f.Silences[0].ID != "s1" || f.Silences[0].CreatedBy != "ann" {
		t.Fatalf("b fetched silences %+v, want a's s1", f.Silences)
	}
}

// TestFetchStateCountsWhatThisNodeHolds: a decider that died may have
// reached only the node now taking over; what that node holds counts.
func TestFetchStateCountsWhatThisNodeHolds(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, nil)
	a, b := c["a"], c["b"]
	a.x.Queued("ops/email", alerting.Notification{ID: "page", Status: alerting.StatusFiring, Rule: "default", EvaluatedAt: t0})
	a.run(t)
	// b's only peer is a, the decider itself, which holds nothing for
	// others: all b can take over is what it holds.
	await.Until(t, "b to count the page a pushed it", func() bool {
		f := b.x.FetchState(context.Background())
		return len(f.Queued) == 1 && f.Queued[0].Notification.ID == "page"
	})
}
