package redissilence

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/silence"
)

// The consumers' interfaces, checked here because neither package may
// import this one.
var (
	_ control.Silencer   = (*Store)(nil)
	_ evaluator.Silences = (*Store)(nil)
)

// t0 is the tests' epoch: every time is an offset from it.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is the stores' injected time, shared by the nodes of a test.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.set(t0)
	return c
}

func (c *clock) Now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(at time.Time) { c.ns.Store(at.UnixNano()) }

// node is one dmonitor's store: its own client of the shared server.
func node(t *testing.T, srv *redistest.Server, clk *clock) *Store {
	t.Helper()
	return New(srv.Client(t), Options{Now: clk.Now, Retention: time.Hour})
}

// twoNodes starts a Redis and two nodes A and B using it, on one clock.
func twoNodes(t *testing.T) (srv *redistest.Server, clk *clock, a, b *Store) {
	t.Helper()
	srv, clk = redistest.Start(t), newClock()
	return srv, clk, node(t, srv, clk), node(t, srv, clk)
}

func hostSilence(host string, end time.Duration) silence.Silence {
	return silence.Silence{
		Matchers: []silence.Matcher{{Name: "host", Value: host, IsEqual: true}},
		EndsAt:   t0.Add(end), CreatedBy: "ann", Comment: "maintenance",
	}
}

// www1 is the instance the tests silence.
var www1 = map[string]string{"host": "www1", "check": "http"}

func mustSet(t *testing.T, s *Store, sil silence.Silence) string {
	t.Helper()
	id, err := s.Set(sil)
	if err != nil {
		t.Fatalf("set: %v", err)
	}
	return id
}

func mustRefresh(t *testing.T, s *Store) {
	t.Helper()
	if err := s.refresh(context.Background()); err != nil {
		t.Fatalf("refresh: %v", err)
	}
}

// TestSharedBetweenNodes: a silence set on node A mutes node B's alerts
// once B has reloaded; B can update and expire it, and A sees both.
func TestSharedBetweenNodes(t *testing.T) {
	_, clk, a, b := twoNodes(t)

	id := mustSet(t, a, hostSilence("www1", time.Hour))
	if got := a.MatchAlert("default", www1, t0); got != id {
		t.Fatalf("A matches %q right after its own Set, want %s", got, id)
	}
	if got := b.MatchAlert("default", www1, t0); got != "" {
		t.Fatalf("B matches %q before any reload: want nothing yet", got)
	}
	mustRefresh(t, b)
	if got := b.MatchAlert("default", www1, t0); got != id {
		t.Fatalf("B after reload matches %q, want %s", got, id)
	}
	if got := b.MatchAlert("default", map[string]string{"host": "www2"}, t0); got != "" {
		t.Errorf("B matches %q for www2, want nothing", got)
	}

	// B extends A's silence in place: same id, as in the file store.
	longer := hostSilence("www1", 2*time.Hour)
	longer.ID, longer.StartsAt = id, t0
	if got, err := b.Set(longer); err != nil || got != id {
		t.Fatalf("B extends = %q, %v; want %s, nil", got, err, id)
	}
	mustRefresh(t, a)
	if l := a.List(t0); len(l) != 1 || !l[0].EndsAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("A lists %+v, want the one silence ending at +2h", l)
	}

	clk.set(t0.Add(time.Minute))
	if err := a.Expire(id); err != nil {
		t.Fatal(err)
	}
	mustRefresh(t, b)
	if got := b.MatchAlert("default", www1, clk.Now()); got != "" {
		t.Errorf("B matches %q after A expired it, want nothing", got)
	}
	if l := b.List(clk.Now()); len(l) != 1 || l[0].State(clk.Now()) != silence.StateExpired {
		t.Errorf("B lists %+v, want the silence, expired", l)
	}
}

// TestRunReloads: Run brings another node's silence in without being
// asked, and returns when its context ends.
func TestRunReloads(t *testing.T) {
	srv := redistest.Start(t)
	clk := newClock()
	a := node(t, srv, clk)
	b := New(srv.Client(t), Options{Now: clk.Now, Refresh: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	id := mustSet(t, a, hostSilence("www1", time.Hour))
	waitMatch(t, b, id) // A's silence
	if err := a.Expire(id); err != nil {
		t.Fatal(err)
	}
	waitMatch(t, b, "") // its expiry
	cancel()
	<-done
}

// waitMatch polls s until it matches www1 with want at t0, as a node's
// evaluations would see it.
func waitMatch(t *testing.T, s *Store, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := s.MatchAlert("default", www1, t0); got != want; got = s.MatchAlert("default", www1, t0) {
		if time.Now().After(deadline) {
			t.Fatalf("Run did not reload in 10s: the node matches %q, want %q", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSetRefused: the file store's validation and not-found errors, with
// nothing written to Redis.
func TestSetRefused(t *testing.T) {
	srv := redistest.Start(t)
	s := node(t, srv, newClock())
	client := srv.Client(t)
	noAuthor := hostSilence("www1", time.Hour)
	noAuthor.CreatedBy = ""
	tests := []struct {
		name string
		sil  silence.Silence
		want error
		msg  string // in the error
	}{
		// A matcher that accepts "" alone would mute everything.
		{"match everything", silence.Silence{Matchers: []silence.Matcher{{Name: "host", Value: ".*", IsRegex: true, IsEqual: true}},
			EndsAt: t0.Add(time.Hour), CreatedBy: "ann"}, silence.ErrInvalid, `matchers {host=~".*"} accept an empty value`},
		// A bad regexp is named by position and as written.
		{"bad regex", silence.Silence{Matchers: []silence.Matcher{{Name: "host", Value: "www[", IsRegex: true, IsEqual: true}},
			EndsAt: t0.Add(time.Hour), CreatedBy: "ann"}, silence.ErrInvalid, `matcher 1 (host=~"www["): bad regular expression`},
		// Nobody to ask about a silence nobody signed.
		{"no author", noAuthor, silence.ErrInvalid, "createdBy is required"},
		// A window that is over before it is set.
		{"ends in the past", hostSilence("www1", -time.Minute), silence.ErrInvalid, "endsAt 2025-03-01T11:59:00Z is not in the future"},
		// An update of a silence no node holds.
		{"unknown id", func() silence.Silence { s := hostSilence("www1", time.Hour); s.ID = "nope"; return s }(),
			silence.ErrNotFound, "update silence nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := s.Set(tt.sil)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Set = %q, %v; want an error wrapping %v containing %q", id, err, tt.want, tt.msg)
			}
			if n := client.HLen(context.Background(), "dmonitor:silences").Val(); n != 0 {
				t.Errorf("refused silence written: the hash holds %d", n)
			}
		})
	}
	if err := s.Expire("nope"); !errors.Is(err, silence.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Expire unknown = %v, want ErrNotFound naming it", err)
	}
}

// TestRedisDown: while Redis is down, matching goes on from the last
// snapshot and writes fail naming the server; once it is back, writes
// work again.
func TestRedisDown(t *testing.T) {
	srv, _, a, b := twoNodes(t)
	id := mustSet(t, a, hostSilence("www1", time.Hour))
	mustRefresh(t, b)

	srv.Kill()
	if err := b.refresh(context.Background()); err == nil || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("reload with Redis down = %v, want an error naming %s", err, srv.Addr())
	}
	if got := b.MatchAlert("default", www1, t0); got != id {
		t.Errorf("B with Redis down matches %q, want %s from its last snapshot", got, id)
	}
	_, err := b.Set(hostSilence("www2", time.Hour))
	if err == nil || !strings.Contains(err.Error(), "set silence: redis "+srv.Addr()) || errors.Is(err, silence.ErrInvalid) {
		t.Errorf("Set with Redis down = %v, want an error naming redis %s", err, srv.Addr())
	}
	if err := b.Expire(id); err == nil || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("Expire with Redis down = %v, want an error naming %s", err, srv.Addr())
	}
	if got := b.MatchAlert("default", www1, t0); got != id {
		t.Errorf("after the failed Expire B matches %q, want %s still", got, id)
	}

	srv.Restart() // without persistence: an empty Redis
	id2, err := b.Set(hostSilence("www2", time.Hour))
	if err != nil {
		t.Fatalf("Set after Redis came back: %v", err)
	}
	mustRefresh(t, a)
	if got := a.MatchAlert("default", map[string]string{"host": "www2"}, t0); got != id2 {
		t.Errorf("A matches %q, want %s set after the restart", got, id2)
	}
}

// TestCorruptEntry: a silence in Redis that does not decode fails the
// reload, naming it, and the last snapshot stays in force.
func TestCorruptEntry(t *testing.T) {
	srv := redistest.Start(t)
	s := node(t, srv, newClock())
	id := mustSet(t, s, hostSilence("www1", time.Hour))
	srv.Client(t).HSet(context.Background(), "dmonitor:silences", "bad", "{")
	if err := s.refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "silence bad in dmonitor:silences") {
		t.Errorf("reload = %v, want an error naming silence bad", err)
	}
	if got := s.MatchAlert("default", www1, t0); got != id {
		t.Errorf("after a failed reload matches %q, want %s", got, id)
	}
}

// TestGC: a silence is dropped from Redis, for every node, once its
// retention after expiry has passed, and not before.
func TestGC(t *testing.T) {
	srv, clk, a, b := twoNodes(t) // retention 1h
	client := srv.Client(t)
	ended := mustSet(t, a, hostSilence("www1", 10*time.Minute))
	running := mustSet(t, a, hostSilence("www2", 5*time.Hour))
	collect := func(at time.Duration) {
		t.Helper()
		clk.set(t0.Add(at))
		mustRefresh(t, b)
		if err := b.gc(); err != nil {
			t.Fatalf("gc at +%v: %v", at, err)
		}
	}
	collect(69 * time.Minute) // a minute short of the retention
	if n := client.HLen(context.Background(), "dmonitor:silences").Val(); n != 2 {
		t.Fatalf("before the retention the hash holds %d, want 2", n)
	}
	collect(70 * time.Minute)
	if ids := client.HKeys(context.Background(), "dmonitor:silences").Val(); len(ids) != 1 || ids[0] != running {
		t.Fatalf("after the retention the hash holds %v, want only %s (not %s)", ids, running, ended)
	}
	mustRefresh(t, a)
	if l := a.List(clk.Now()); len(l) != 1 || l[0].ID != running {
		t.Errorf("A lists %+v, want only %s", l, running)
	}
}
