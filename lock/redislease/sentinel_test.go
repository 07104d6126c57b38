package redislease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/redisstate"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/sentineltest"
	"github.com/dmonitor/dmonitor/lock"
)

// contender is a node that contends for the lease through a Sentinel URL
// as the daemon does: it acquires, leads until the term is lost, and
// acquires again, until the test ends.
type contender struct {
	name   string
	client redis.UniversalClient
	lease  *Lease
	state  *redisstate.Store

	mu    sync.Mutex
	terms []lock.Term // every term it was given, in order
}

// contend starts a contender on its own client of url.
func contend(t *testing.T, url, name string, ttl time.Duration) *contender {
	t.Helper()
	client, err := NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	c := &contender{name: name, client: client, lease: New(client, Options{Owner: name, TTL: ttl}),
		state: redisstate.New(client, redisstate.Options{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			term, err := c.lease.Acquire(ctx)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.terms = append(c.terms, term)
			c.mu.Unlock()
			select {
			case <-term.Lost:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = c.lease.Close()
		_ = c.client.Close()
	})
	return c
}

// current returns the contender's open term, if it has one.
func (c *contender) current() (lock.Term, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.terms) == 0 {
		return lock.Term{}, false
	}
	term := c.terms[len(c.terms)-1]
	return term, !isClosed(term.Lost)
}

// allTerms returns every term the contender was given.
func (c *contender) allTerms() []lock.Term {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]lock.Term(nil), c.terms...)
}

// leaderOf waits until one of cs holds an open term that the master (as
// the sentinels name it now) also holds, and returns it.
func leaderOf(t *testing.T, s *sentineltest.Set, db int, cs ...*contender) (*contender, lock.Term) {
	t.Helper()
	var who *contender
	var term lock.Term
	await.Until(t, "a leader whose term the master holds", func() bool {
		direct := s.Client(s.Master())
		h, err := readHolder(t.Context(), dbClient(direct, db), DefaultKey)
		if err != nil {
			return false
		}
		for _, c := range cs {
			if tm, open := c.current(); open && h.owner == c.name && h.epoch == tm.Epoch {
				who, term = c, tm
				return true
			}
		}
		return false
	})
	return who, term
}

// dbClient returns a client of database db on c's server: the Set's
// clients use database 0.
func dbClient(c *redis.Client, db int) *redis.Client {
	o := *c.Options()
	o.DB = db
	return redis.NewClient(&o)
}

// TestLeaseAcrossSentinelFailover holds the lease through a Sentinel URL
// while SENTINEL FAILOVER moves the master, renewals going on throughout.
// The sentinels announce the new master about a second after promoting it,
// and the clients follow; the new master has the lease from replication,
// so the term goes on if it has not expired there by then, and otherwise
// ends and a new one begins with a greater epoch. Either way the fence on
// the new master lets the leader's writes through and refuses an ended
// term's.
func TestLeaseAcrossSentinelFailover(t *testing.T) {
	for _, ttl := range []time.Duration{DefaultTTL, 1500 * time.Millisecond} {
		t.Run(ttl.String(), func(t *testing.T) {
			leaseAcross(t, ttl, false, func(s *sentineltest.Set) string {
				began := time.Now()
				oldMaster, newMaster := s.Failover()
				t.Logf("SENTINEL FAILOVER from %s to %s: settled in %v", oldMaster, newMaster, time.Since(began))
				return newMaster
			})
		})
	}
}

// TestLeaseAcrossSentinelKill holds the lease through a Sentinel URL while
// the master is killed. With a TTL above the sentinels' time to promote the
// replica, the term goes on if a renewal, retried, reaches the new master
// in time, and otherwise ends and a new one begins. With a TTL below
// down-after-milliseconds, the term must end (no renewal can succeed before
// the sentinels even call the master down), and the lease has expired on
// the new master too: a new term must begin, with a greater epoch.
func TestLeaseAcrossSentinelKill(t *testing.T) {
	for _, tc := range []struct {
		ttl     time.Duration
		mustEnd bool
	}{
		{1500 * time.Millisecond, false},
		// sentineltest's down-after-milliseconds is 500.
		{450 * time.Millisecond, true},
	} {
		t.Run(tc.ttl.String(), func(t *testing.T) {
			leaseAcross(t, tc.ttl, tc.mustEnd, func(s *sentineltest.Set) string {
				began := time.Now()
				killed, newMaster := s.KillMaster()
				t.Logf("%s killed, %s promoted %v later", killed, newMaster, time.Since(began))
				return newMaster
			})
		})
	}
}

// leaseAcross runs two contenders through a Sentinel URL on a master that
// requires a password, database 2; the first leads and writes under its
// term's fence. Then failover moves the master and returns the new one's
// address. The term either goes on with its epoch (unless mustEnd) or ends
// and a new term of either contender begins with a greater epoch; the new
// master keeps what was written before, takes the leader's writes and
// refuses the ended term's.
func leaseAcross(t *testing.T, ttl time.Duration, mustEnd bool, failover func(*sentineltest.Set) string) {
	t.Helper()
	s := sentineltest.Start(t, sentineltest.Options{Password: "mpw"})
	const db = 2
	url := s.URLWithDB(db)
	a := contend(t, url, "a", ttl)
	_, first := leaderOf(t, s, db, a)
	b := contend(t, url, "b", ttl)
	ctx := testCtx(t)
	if err := a.state.TakeOver(ctx, first.Epoch); err != nil {
		t.Fatal(err)
	}
	if err := a.state.Save(ctx, first.Epoch, "before", alerting.Instance{}); err != nil {
		t.Fatal(err)
	}
	// Replication is asynchronous: what the test expects on the new master
	// must have reached the replica.
	if n, err := a.client.Do(ctx, "WAIT", 1, 10000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	newMaster := failover(s)
	leader, now := leaderOf(t, s, db, a, b)
	t.Logf("first term %d of a; now term %d of %s; a's terms %v, b's %v", first.Epoch, now.Epoch, leader.name, epochs(a), epochs(b))
	switch {
	case now.Epoch == first.Epoch && mustEnd:
		t.Fatalf("the term %d outlived its master", first.Epoch)
	case now.Epoch < first.Epoch:
		t.Fatalf("epoch %d after the failover, below %d before", now.Epoch, first.Epoch)
	case now.Epoch > first.Epoch:
		if !isClosed(first.Lost) {
			t.Fatalf("a new term %d of %s while the first, %d, is open", now.Epoch, leader.name, first.Epoch)
		}
		if err := leader.state.TakeOver(ctx, now.Epoch); err != nil {
			t.Fatal(err)
		}
		// The first term's write is refused, on the new master.
		if err := a.state.Save(ctx, first.Epoch, "stale", alerting.Instance{}); !errors.Is(err, redisstate.ErrFenced) {
			t.Fatalf("write of the ended term %d: %v, want ErrFenced", first.Epoch, err)
		}
	}
	if err := leader.state.Save(ctx, now.Epoch, "after", alerting.Instance{}); err != nil {
		t.Fatalf("write of the leader's term %d: %v", now.Epoch, err)
	}
	all, err := redisstate.New(dbClient(s.Client(newMaster), db), redisstate.Options{}).LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := all["before"]; !ok {
		t.Errorf("the new master lost the write made before the failover: %v", all)
	}
	if _, ok := all["after"]; !ok {
		t.Errorf("the new master misses the leader's write: %v", all)
	}
	if _, ok := all["stale"]; ok {
		t.Errorf("the new master took the ended term's write: %v", all)
	}
}

// epochs lists the epochs of c's terms.
func epochs(c *contender) []int64 {
	var es []int64
	for _, tm := range c.allTerms() {
		es = append(es, tm.Epoch)
	}
	return es
}

// TestNewClientSentinelForms checks NewClient's Sentinel URL against a
// real sentinel that requires a password, monitoring a master that requires
// another: the master's password and database, the sentinel's password, a
// dead sentinel listed first, and the error of each wrong part.
func TestNewClientSentinelForms(t *testing.T) {
	s := sentineltest.Start(t, sentineltest.Options{Password: "mpw", SentinelPassword: "spw"})
	sentinel := s.SentinelAddrs()[0]
	ctx := testCtx(t)

	// The dead sentinel first: the client asks the next one.
	c, err := NewClient(fmt.Sprintf("redis+sentinel://:mpw@127.0.0.1:%d,%s/%s/2?sentinel_password=spw", freePort(t), sentinel, s.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := New(c, Options{Owner: "via-sentinel"})
	defer l.Close()
	term := acquire(t, l)
	// The lease is in the master's database 2, and only there.
	for db, want := range map[int]bool{0: false, 2: true} {
		h, err := readHolder(ctx, dbClient(s.Client(s.Master()), db), DefaultKey)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.owner == "via-sentinel" && h.epoch == term.Epoch; got != want {
			t.Errorf("db %d holds %+v; want the lease there: %v", db, h, want)
		}
	}
	if owner, epoch, _, err := New(c, Options{}).Leader(ctx); err != nil || owner != "via-sentinel" || epoch != term.Epoch {
		t.Errorf("Leader: %q, %d, %v; want via-sentinel, %d", owner, epoch, err, term.Epoch)
	}

	// Each wrong part fails every command, Leader's included, at once.
	// (With a dead sentinel listed too, they would fail only at the
	// context's deadline: go-redis retries the dead one's connection
	// refusals at three levels.)
	for _, tc := range []struct {
		name, url, want string
	}{
		// The master refuses the password.
		{"wrong master password", "redis+sentinel://:wrong@" + sentinel + "/" + s.Name() + "?sentinel_password=spw", "WRONGPASS"},
		// The sentinel refuses its own.
		{"wrong sentinel password", "redis+sentinel://:mpw@" + sentinel + "/" + s.Name() + "?sentinel_password=wrong", "WRONGPASS"},
		// No password for the sentinel.
		{"no sentinel password", "redis+sentinel://:mpw@" + sentinel + "/" + s.Name(), "NOAUTH"},
		// A master the sentinel does not monitor: go-redis's error wraps
		// the sentinel's nil reply, which is no empty lease.
		{"unknown master", "redis+sentinel://:mpw@" + sentinel + "/nosuch?sentinel_password=spw", "all sentinels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			owner, _, _, err := New(c, Options{}).Leader(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Leader: %q, %v; want an error with %q", owner, err, tc.want)
			}
		})
	}
}
