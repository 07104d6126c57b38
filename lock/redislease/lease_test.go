package redislease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/internal/redistest"
	"github.com/dmonitor/dmonitor/lock"
)

// The consumer's interface, evaluator.Lease, spelled out: importing the
// evaluator would tie these tests to a much larger package.
var _ interface {
	Acquire(context.Context) (lock.Term, error)
	Release(context.Context) error
} = (*Lease)(nil)

// newLease returns a lease on s with its own client, closed when the test
// ends.
func newLease(t *testing.T, s *redistest.Server, o Options) *Lease {
	t.Helper()
	l := New(newClient(t, s), o)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// acquire takes the lease or fails the test.
func acquire(t *testing.T, l *Lease) lock.Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	term, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return term
}

// termState is what the lease knows of its current or last term.
type termState struct {
	expires, deadline, lostAt time.Time
	cause                     string
}

// current returns the term l holds now.
func current(t *testing.T, l *Lease) *term {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil {
		t.Fatal("no term held")
	}
	return l.term
}

func stateOf(l *Lease, tm *term) termState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return termState{tm.expires, tm.deadline, tm.lostAt, tm.cause}
}

// awaitLost waits for the term to end.
func awaitLost(t *testing.T, term lock.Term, limit time.Duration) {
	t.Helper()
	select {
	case <-term.Lost:
	case <-time.After(limit):
		t.Fatalf("term %d not lost after %v", term.Epoch, limit)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// holder reads the lease's value straight from Redis: the source of truth.
func holder(t *testing.T, c redis.UniversalClient, key string) holding {
	t.Helper()
	h, err := readHolder(t.Context(), c, key)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func readHolder(ctx context.Context, c redis.UniversalClient, key string) (holding, error) {
	v, err := c.Get(ctx, key).Result()
	if err == redis.Nil { // exactly: go-redis wraps it in failures too
		return holding{}, nil
	}
	if err != nil {
		return holding{}, err
	}
	return parseValue(v)
}

// subscribers returns how many clients wait for the lease's release.
func subscribers(ctx context.Context, c redis.UniversalClient) int64 {
	return c.PubSubNumSub(ctx, DefaultKey).Val()[DefaultKey]
}

func TestAcquireLeadRelease(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	a := newLease(t, s, Options{Owner: "eu-1"})
	ctx := testCtx(t)

	if a.Leading() || a.IsLeader(ctx) == nil || a.Epoch() != 0 {
		t.Fatal("leading before acquiring")
	}
	term := acquire(t, a)
	if term.Epoch <= 0 {
		t.Fatalf("epoch %d, want > 0", term.Epoch)
	}
	if !a.Leading() || a.IsLeader(ctx) != nil || a.Epoch() != term.Epoch {
		t.Fatalf("after Acquire: Leading %v, IsLeader %v, Epoch %d; want true, nil, %d",
			a.Leading(), a.IsLeader(ctx), a.Epoch(), term.Epoch)
	}
	if h := holder(t, rc, DefaultKey); h.owner != "eu-1" || h.epoch != term.Epoch {
		t.Fatalf("redis holds %+v, want owner eu-1 epoch %d", h, term.Epoch)
	}
	if e, _ := rc.Get(ctx, DefaultKey+":epoch").Int64(); e != term.Epoch {
		t.Fatalf("epoch key %d, want %d", e, term.Epoch)
	}
	owner, epoch, ttl, err := New(rc, Options{}).Leader(ctx)
	if err != nil || owner != "eu-1" || epoch != term.Epoch || ttl <= 0 || ttl > DefaultTTL {
		t.Fatalf("Leader() = %q, %d, %v, %v; want eu-1, %d, 0 < ttl <= %v", owner, epoch, ttl, err, term.Epoch, DefaultTTL)
	}
	// A second Acquire while leading returns the same term.
	if again := acquire(t, a); again != term {
		t.Fatalf("second Acquire returned %+v, want the held term %+v", again, term)
	}

	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !isClosed(term.Lost) {
		t.Fatal("Lost not closed by Release")
	}
	if a.Leading() || !errors.Is(a.IsLeader(ctx), ErrNotLeader) || a.Epoch() != 0 {
		t.Fatal("still leading after Release")
	}
	if owner, _, _, err := a.Leader(ctx); owner != "" || err != nil {
		t.Fatalf("after Release, Leader() = %q, %v; want nobody", owner, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

func TestSuccessorTakesOverAtRelease(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	a := newLease(t, s, Options{Owner: "a"})
	// An hour between tries: only the release's announcement can wake b in
	// time.
	b := newLease(t, s, Options{Owner: "b", RetryInterval: time.Hour})
	ctx := testCtx(t)

	ta := acquire(t, a)
	// a's own wait for the lease has ended: from now on, a subscriber is b.
	waitFor(t, 10*time.Second, "a stops listening", func() bool { return subscribers(ctx, rc) == 0 })
	type result struct {
		term lock.Term
		err  error
		at   time.Time
	}
	got := make(chan result, 1)
	go func() {
		tb, err := b.Acquire(ctx)
		got <- result{tb, err, time.Now()}
	}()
	// b has tried (it saw a's epoch) and listens for the release.
	waitFor(t, 10*time.Second, "b follows", func() bool {
		b.mu.Lock()
		seen := b.seen
		b.mu.Unlock()
		return seen == ta.Epoch && subscribers(ctx, rc) == 1
	})
	select {
	case r := <-got:
		t.Fatalf("b acquired while a holds the lease: %+v", r)
	default:
	}

	left := rc.PTTL(ctx, DefaultKey).Val()
	released := time.Now()
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("b did not take over after the release")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.term.Epoch <= ta.Epoch {
		t.Fatalf("successor's epoch %d, want > %d", r.term.Epoch, ta.Epoch)
	}
	if took := r.at.Sub(released); took >= left {
		t.Fatalf("b took over %v after the release, when a's lease had %v left: it waited for expiry", took, left)
	}
	if h := holder(t, rc, DefaultKey); h.owner != "b" {
		t.Fatalf("redis holds %+v, want b", h)
	}
}

func TestRenewalKeepsLeaseOverManyTTLs(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	const ttl = time.Second
	a := newLease(t, s, Options{Owner: "a", TTL: ttl})
	term := acquire(t, a)
	tm := current(t, a)
	first := stateOf(a, tm).expires

	// Without renewal the key would be gone after one TTL.
	end := time.Now().Add(5 * ttl)
	for time.Now().Before(end) {
		if isClosed(term.Lost) {
			t.Fatalf("lost the lease: %s", stateOf(a, tm).cause)
		}
		if h := holder(t, rc, DefaultKey); h.epoch != term.Epoch || h.owner != "a" {
			t.Fatalf("redis holds %+v, want a's epoch %d", h, term.Epoch)
		}
		time.Sleep(50 * time.Millisecond) // sampling, not synchronisation
	}
	if !a.Leading() {
		t.Fatal("not leading after 5 TTLs")
	}
	if d := stateOf(a, tm).expires; d.Sub(first) < 4*ttl {
		t.Fatalf("deadline moved by %v over 5 TTLs: renewals did not extend it", d.Sub(first))
	}
}

func TestStepDownWhenRedisDies(t *testing.T) {
	s := redistest.Start(t)
	const ttl = time.Second
	a := newLease(t, s, Options{Owner: "a", TTL: ttl})
	term := acquire(t, a)
	tm := current(t, a)

	killed := time.Now()
	s.Kill()
	awaitLost(t, term, 10*time.Second)

	st := stateOf(a, tm)
	// The last successful renewal was sent before the kill; the step-down
	// came before that send time plus TTL, the earliest the key can expire
	// in Redis and a successor take over.
	if st.expires.After(killed.Add(ttl)) {
		t.Fatalf("last renewal sent after the kill: expiry %v, kill+TTL %v", st.expires, killed.Add(ttl))
	}
	if !st.lostAt.Before(st.expires) {
		t.Fatalf("stepped down at %v, not before the last renewal's send time + TTL %v", st.lostAt, st.expires)
	}
	if a.Leading() || a.IsLeader(t.Context()) == nil || a.Epoch() != 0 {
		t.Fatal("still leading after stepping down")
	}
	t.Logf("step-down: %s", st.cause)
}

func TestStepDownAtDeadlineWhenRedisHangs(t *testing.T) {
	s := redistest.Start(t)
	// The client would wait 30s for an answer: only the lease's own
	// deadline can end the term in time.
	c, err := NewClient(s.URL() + "?read_timeout=30s&write_timeout=30s&context_timeout_enabled=false&max_retries=-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	const ttl = time.Second
	a := New(c, Options{Owner: "a", TTL: ttl})
	t.Cleanup(func() { _ = a.Close() })
	term := acquire(t, a)
	tm := current(t, a)

	s.Signal(syscall.SIGSTOP)
	awaitLost(t, term, 10*time.Second)
	if a.Leading() {
		t.Fatal("still leading after the deadline")
	}
	st := stateOf(a, tm)
	if st.cause != "the deadline passed while renewing" {
		t.Fatalf("cause %q, want the deadline", st.cause)
	}
	// Not before the local deadline (the renewal was only unanswered), and
	// before the key can expire.
	if st.lostAt.Before(st.deadline) || !st.lostAt.Before(st.expires) {
		t.Fatalf("stepped down at %v, want between the local deadline %v and the expiry %v", st.lostAt, st.deadline, st.expires)
	}
	// Let the renewal that was in flight be answered, so Close can wait
	// for it.
	s.Signal(syscall.SIGCONT)
}

func TestDeposedLeaderCannotRenewOrRelease(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	a := newLease(t, s, Options{Owner: "a", TTL: time.Second})
	b := newLease(t, s, Options{Owner: "b"})
	ctx := testCtx(t)

	ta := acquire(t, a)
	tm := current(t, a)
	// As if a's key expired while a was paused: b takes the lease.
	rc.Del(ctx, DefaultKey)
	tb := acquire(t, b)

	awaitLost(t, ta, 10*time.Second)
	if cause := stateOf(a, tm).cause; cause != "the lease is no longer ours" {
		t.Fatalf("a stepped down for %q, want the compare to fail", cause)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h := holder(t, rc, DefaultKey)
	if h.owner != "b" || h.epoch != tb.Epoch {
		t.Fatalf("redis holds %+v after a's renewal and release, want b's epoch %d", h, tb.Epoch)
	}
	if pttl := rc.PTTL(ctx, DefaultKey).Val(); pttl <= 0 {
		t.Fatalf("b's lease has PTTL %v", pttl)
	}
	if !b.Leading() || isClosed(tb.Lost) {
		t.Fatal("b deposed by a's release")
	}
	// A script that compares with a's old value changes nothing either.
	if n := renewScript.Run(ctx, rc, []string{DefaultKey}, tm.value, 60000).Val(); n != int64(0) {
		t.Fatalf("renewal with a's value returned %v, want 0", n)
	}
	if n := releaseScript.Run(ctx, rc, []string{DefaultKey}, tm.value, DefaultKey).Val(); n != int64(0) {
		t.Fatalf("release with a's value returned %v, want 0", n)
	}
	if holder(t, rc, DefaultKey).owner != "b" {
		t.Fatal("b's lease gone")
	}
}

func TestEpochNeverGoesBackAcrossRestart(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	a := newLease(t, s, Options{Owner: "a", TTL: time.Second})
	ctx := testCtx(t)

	// A leader dies with Redis; Redis comes back empty. The leader that
	// stepped down takes the lease again with a higher epoch.
	t1 := acquire(t, a)
	s.Restart()
	awaitLost(t, t1, 10*time.Second)
	if n := rc.Exists(ctx, DefaultKey+":epoch").Val(); n != 0 {
		t.Fatal("epoch key survived the restart; the test proves nothing")
	}
	t2 := acquire(t, a)
	if t2.Epoch <= t1.Epoch {
		t.Fatalf("epoch after restart %d, want > %d", t2.Epoch, t1.Epoch)
	}

	// A contender that never saw an epoch gets a higher one too: the Redis
	// clock has moved on since the last term began.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	fresh := newLease(t, s, Options{Owner: "fresh"})
	t3 := acquire(t, fresh)
	if t3.Epoch <= t2.Epoch {
		t.Fatalf("fresh contender's epoch after restart %d, want > %d", t3.Epoch, t2.Epoch)
	}
	if err := fresh.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// Epochs ahead of any clock (many acquisitions within a millisecond):
	// a contender that saw one still goes above it after a restart.
	ahead := time.Now().Add(24*time.Hour).UnixMilli() + 12345
	if err := rc.Set(ctx, DefaultKey+":epoch", ahead, 0).Err(); err != nil {
		t.Fatal(err)
	}
	t4 := acquire(t, a)
	if t4.Epoch != ahead+1 {
		t.Fatalf("epoch %d, want the stored %d plus one", t4.Epoch, ahead)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	t5 := acquire(t, a)
	if t5.Epoch <= t4.Epoch {
		t.Fatalf("epoch after restart %d, want > %d", t5.Epoch, t4.Epoch)
	}
}

func TestContendersNeverLeadTogether(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	leases := []*Lease{
		newLease(t, s, Options{Owner: "a", TTL: 2 * time.Second}),
		newLease(t, s, Options{Owner: "b", TTL: 2 * time.Second}),
	}
	ctx := testCtx(t)

	var (
		mu      sync.Mutex
		leading = -1 // the lease whose term is open, -1 for none
		last    int64
		terms   [2]int
	)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, l := range leases {
		other := leases[1-i]
		wg.Go(func() {
			for range 25 {
				term, err := l.Acquire(ctx)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				bad := ""
				h, err := readHolder(ctx, rc, DefaultKey)
				switch {
				case err != nil:
					bad = err.Error()
				case leading != -1:
					bad = fmt.Sprintf("lease %d acquired while lease %d leads", i, leading)
				case l.IsLeader(ctx) != nil:
					bad = fmt.Sprintf("lease %d holds epoch %d but IsLeader says %v", i, term.Epoch, l.IsLeader(ctx))
				case other.Leading():
					bad = fmt.Sprintf("both leases report leading (epoch %d)", term.Epoch)
				case h.owner != l.owner || h.epoch != term.Epoch:
					bad = fmt.Sprintf("lease %d has epoch %d but redis holds %+v", i, term.Epoch, h)
				case term.Epoch <= last:
					bad = fmt.Sprintf("epoch %d after %d", term.Epoch, last)
				}
				leading, last = i, term.Epoch
				terms[i]++
				mu.Unlock()
				if bad != "" {
					errs <- errors.New(bad)
					return
				}

				mu.Lock()
				leading = -1
				mu.Unlock()
				if err := l.Release(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if terms != [2]int{25, 25} {
		t.Fatalf("terms %v, want 25 each", terms)
	}
}

func TestCloseEndsTermAndAcquire(t *testing.T) {
	s := redistest.Start(t)
	rc := newClient(t, s)
	a := newLease(t, s, Options{Owner: "a"})
	b := newLease(t, s, Options{Owner: "b"})
	ctx := testCtx(t)

	ta := acquire(t, a)
	waitFor(t, 10*time.Second, "a stops listening", func() bool { return subscribers(ctx, rc) == 0 })
	waiting := make(chan error, 1)
	go func() {
		_, err := b.Acquire(ctx)
		waiting <- err
	}()
	waitFor(t, 10*time.Second, "b follows", func() bool {
		return subscribers(ctx, rc) == 1
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire during Close: %v, want ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !isClosed(ta.Lost) {
		t.Fatal("Close left the term open")
	}
	if n := rc.Exists(ctx, DefaultKey).Val(); n != 0 {
		t.Fatal("Close left the lease in redis")
	}
	if _, err := a.Acquire(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v, want ErrClosed", err)
	}
}
