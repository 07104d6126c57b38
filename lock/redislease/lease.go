// Package redislease is the leader lease of a multi-node dmonitor, held in
// Redis (docs/ARCHITECTURE.md, "The coordination modes"): SET key value NX PX ttl, renewed
// by compare-and-pexpire, released by compare-and-delete, each acquisition
// also taking an epoch (fencing token) that never goes backwards, not even
// when Redis restarts without persistence.
//
// The lease's value is "epoch token owner": the term's epoch, a random
// token that makes the value this term's alone (renewal and release compare
// it), and the holder's name for status output. The epoch is the Redis
// server's clock in milliseconds at the acquisition, raised when needed to
// stay above the last epoch given out and above every epoch the contender
// has seen; see acquireScript.
//
// The lease and its epoch are two keys (Options.Key and Key+":epoch"), so
// they must live on one Redis server: a standalone server or a Sentinel
// master, not Redis Cluster.
package redislease

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/lock"
)

// The defaults of Options.
const (
	DefaultKey = "dmonitor:leader"
	DefaultTTL = 6 * time.Second
)

// ErrNotLeader is what IsLeader returns while this node does not hold the
// lease.
var ErrNotLeader = errors.New("not the leader")

// ErrClosed is what Acquire returns once the Lease is closed.
var ErrClosed = errors.New("leader lease closed")

var (
	_ gocron.Elector = (*Lease)(nil)
)

// acquireScript takes the lease if nobody holds it. The epoch is the
// largest of: the last epoch given out plus one, the Redis server's clock in
// milliseconds, and the highest epoch the contender has seen plus one. The
// first keeps it increasing while the epoch key lives; the other two keep it
// increasing when the key is lost with a restart of a Redis without
// persistence (or a failover to a replica that lagged): the clock has moved
// on since the last term began, and a contender that followed the last term
// knows its epoch. The reply is {1, value} when the lease was taken, or
// {0, holder's value, its PTTL} when it is held.
//
// KEYS: lease, epoch. ARGV: token, owner, ttl in ms, highest epoch seen.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  return {0, cur, redis.call('PTTL', KEYS[1])}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local e = math.max(last + 1, now, tonumber(ARGV[4]) + 1)
local es = string.format('%d', e)
redis.call('SET', KEYS[2], es)
local v = es .. ' ' .. ARGV[1] .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], v, 'NX', 'PX', ARGV[3])
return {1, v}
`)

// renewScript extends the lease only while it is still ours.
//
// KEYS: lease. ARGV: our value, ttl in ms.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the lease only while it is still ours, and tells the
// followers waiting in Acquire, so one takes over at once instead of at its
// next retry.
//
// KEYS: lease. ARGV: our value, the channel followers listen on.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
`)

// Options configure a Lease. Zero values take the defaults.
type Options struct {
	// Key is the Redis key of the lease; the epoch is kept in Key+":epoch"
	// and releases are announced on the channel Key. Default DefaultKey.
	Key string
	// TTL is how long the lease lives in Redis without renewal; it is
	// renewed every TTL/3. A term ends when a renewal fails, or at its
	// local deadline: a tenth of the TTL before the key can expire, counted
	// on the monotonic clock from when the last successful renewal was
	// sent. It is truncated to whole milliseconds (Redis's unit). Default
	// DefaultTTL, also for anything below 3ms.
	TTL time.Duration
	// Owner names this node in the lease's value, for status output.
	// Default: the host name.
	Owner string
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
	// RetryInterval is how often a follower tries to take the lease when no
	// release is announced (the holder died). Default TTL/3.
	RetryInterval time.Duration
}

// Lease is the Redis leader lease of one node. It satisfies evaluator.Lease
// (Acquire, Release) and gocron.Elector (IsLeader). Its methods are safe for
// concurrent use; Acquire calls are served one at a time.
type Lease struct {
	client   redis.UniversalClient
	key      string
	epochKey string
	owner    string
	ttl      time.Duration
	margin   time.Duration // how long before expiry a term ends; see New
	retry    time.Duration
	log      *slog.Logger

	acquiring sync.Mutex    // one Acquire at a time
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	renewers  sync.WaitGroup

	mu    sync.Mutex
	term  *term  // the term held; nil when none
	seen  int64  // the highest epoch seen in Redis: the floor of the next one
	stale string // the value of a term that ended without a release
}

// term is one tenure and the state of its renewal.
type term struct {
	value string
	epoch int64
	lost  chan struct{}
	stop  chan struct{} // closed to stop renewing (Release, Close)
	done  chan struct{} // closed when the renewer has returned

	// Guarded by Lease.mu.
	expires  time.Time // when the last successful renewal was sent, plus TTL
	deadline time.Time // expires less the margin: the term ends by then
	lostAt   time.Time // when lost was closed
	cause    string    // why the term ended
}

// New returns the lease of this node on client. It does not talk to Redis
// until Acquire or Leader is called.
func New(client redis.UniversalClient, opts Options) *Lease {
	if opts.Key == "" {
		opts.Key = DefaultKey
	}
	opts.TTL = opts.TTL.Truncate(time.Millisecond)
	if opts.TTL < 3*time.Millisecond {
		opts.TTL = DefaultTTL
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = opts.TTL / 3
	}
	if opts.Owner == "" {
		opts.Owner, _ = os.Hostname()
		if opts.Owner == "" {
			opts.Owner = "unknown"
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lease{
		client:   client,
		key:      opts.Key,
		epochKey: opts.Key + ":epoch",
		owner:    opts.Owner,
		ttl:      opts.TTL,
		// Redis starts the TTL when the command arrives, after it was sent,
		// so the key cannot expire before the renewal's send time plus
		// TTL. Ending the term a tenth earlier covers the clocks' drift
		// and a late timer, and leaves the leader time to stop its work
		// before a successor can take over.
		margin:  opts.TTL / 10,
		retry:   opts.RetryInterval,
		log:     opts.Logger.With("key", opts.Key),
		closing: make(chan struct{}),
	}
}

// Acquire blocks until this node holds the lease or ctx is done, and returns
// the term: its epoch, and a channel closed the moment the term ends (a
// renewal failed or found the lease taken, the local deadline passed, or
// Release or Close was called). If a term is already held, Acquire returns
// it. Redis errors while following are retried; Acquire fails only with
// ctx's error or ErrClosed.
func (l *Lease) Acquire(ctx context.Context) (lock.Term, error) {
	l.acquiring.Lock()
	defer l.acquiring.Unlock()
	select {
	case <-l.closing:
		return lock.Term{}, ErrClosed
	default:
	}
	l.mu.Lock()
	t := l.term
	l.mu.Unlock()
	if t != nil {
		return lock.Term{Epoch: t.epoch, Lost: t.lost}, nil
	}

	// Subscribe before the first try, so a release between a try and the
	// wait still wakes us. Without Redis the subscription reconnects on its
	// own; the retry interval is the backstop.
	sub := l.client.Subscribe(ctx, l.key)
	defer sub.Close()
	released := sub.Channel()

	var failing bool  // the last try failed with an error
	var holder string // the value of the holder we last logged
	for {
		t, cur, err := l.try(ctx)
		switch {
		case errors.Is(err, ErrClosed):
			return lock.Term{}, err
		case err != nil && ctx.Err() == nil:
			if !failing {
				l.log.Warn("leader lease: cannot try, retrying", "err", err, "every", l.retry)
				failing = true
			}
		case err == nil:
			if failing {
				l.log.Info("leader lease: trying again")
				failing = false
			}
			if t != nil {
				l.log.Info("leading", "owner", l.owner, "epoch", t.epoch)
				return lock.Term{Epoch: t.epoch, Lost: t.lost}, nil
			}
			if cur.value != holder {
				holder = cur.value
				l.log.Info("following", "leader", cur.owner, "epoch", cur.epoch)
			}
		}
		wait := time.NewTimer(l.retry)
		select {
		case <-ctx.Done():
			wait.Stop()
			return lock.Term{}, fmt.Errorf("acquire leader lease %q: %w", l.key, ctx.Err())
		case <-l.closing:
			wait.Stop()
			return lock.Term{}, ErrClosed
		case _, ok := <-released:
			if !ok { // only if the subscription ended: poll from now on
				released = nil
			}
		case <-wait.C:
		}
		wait.Stop()
	}
}

// holding is a lease value: "epoch token owner".
type holding struct {
	value string
	epoch int64
	token string
	owner string
}

func parseValue(v string) (holding, error) {
	es, rest, ok1 := strings.Cut(v, " ")
	token, owner, ok2 := strings.Cut(rest, " ")
	epoch, err := strconv.ParseInt(es, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return holding{}, fmt.Errorf("value %q is not a dmonitor lease (want \"epoch token owner\")", v)
	}
	return holding{value: v, epoch: epoch, token: token, owner: owner}, nil
}

// try makes one attempt: it returns the new term, or the current holder.
func (l *Lease) try(ctx context.Context) (*term, holding, error) {
	l.mu.Lock()
	stale, floor := l.stale, l.seen
	l.mu.Unlock()
	if stale != "" {
		// A term of ours that ended without a release may still hold the
		// key (a renewal timed out but did reach Redis): free it rather
		// than wait out its TTL.
		if err := releaseScript.Run(ctx, l.client, []string{l.key}, stale, l.key).Err(); err != nil {
			return nil, holding{}, fmt.Errorf("release stale leader lease %q: %w", l.key, err)
		}
		l.mu.Lock()
		if l.stale == stale {
			l.stale = ""
		}
		l.mu.Unlock()
	}

	token := rand.Text()
	sent := time.Now() // the deadline counts from before the request left
	res, err := acquireScript.Run(ctx, l.client, []string{l.key, l.epochKey},
		token, l.owner, l.ttl.Milliseconds(), floor).Slice()
	if err != nil {
		return nil, holding{}, fmt.Errorf("acquire leader lease %q: %w", l.key, err)
	}
	if len(res) < 2 {
		return nil, holding{}, fmt.Errorf("acquire leader lease %q: unexpected reply %v", l.key, res)
	}
	v, _ := res[1].(string)
	h, err := parseValue(v)
	if err != nil {
		return nil, holding{}, fmt.Errorf("acquire leader lease %q: %w", l.key, err)
	}
	l.mu.Lock()
	l.seen = max(l.seen, h.epoch)
	l.mu.Unlock()
	// The token is ours also when the script ran, its reply was lost, and
	// the client's retry found our own value.
	if took, _ := res[0].(int64); took != 1 && h.token != token {
		return nil, h, nil
	}
	expires := sent.Add(l.ttl)
	deadline := expires.Add(-l.margin)
	if !time.Now().Before(deadline) {
		// The answer came too late to lead on: let the key go.
		_ = releaseScript.Run(ctx, l.client, []string{l.key}, v, l.key).Err()
		return nil, h, nil
	}
	t := &term{
		value:    v,
		epoch:    h.epoch,
		lost:     make(chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		expires:  expires,
		deadline: deadline,
	}
	l.mu.Lock()
	select {
	case <-l.closing:
		// Close has run and found no term: this one is ours to let go.
		l.mu.Unlock()
		_ = releaseScript.Run(ctx, l.client, []string{l.key}, v, l.key).Err()
		return nil, h, ErrClosed
	default:
	}
	l.term = t
	l.renewers.Add(1)
	go l.renew(t, sent)
	l.mu.Unlock()
	return t, h, nil
}

// errStopped means the term is over already: stopped by Release or Close,
// or ended at its deadline.
var errStopped = errors.New("stopped")

// renew keeps t alive: every TTL/3 from the last renewal it sends one, and
// the term ends at the first that fails or the moment its deadline passes.
func (l *Lease) renew(t *term, sent time.Time) {
	defer l.renewers.Done()
	defer close(t.done)
	for {
		wait := time.NewTimer(time.Until(sent.Add(l.ttl / 3)))
		select {
		case <-t.stop:
			wait.Stop()
			return
		case <-wait.C:
		}
		l.mu.Lock()
		deadline := t.deadline
		l.mu.Unlock()
		sent = time.Now()
		if !sent.Before(deadline) {
			// Only when this process was paused for most of the TTL.
			l.end(t, "the deadline passed before the renewal was sent")
			return
		}
		ours, err := l.renewOnce(t, deadline)
		switch {
		case errors.Is(err, errStopped):
			return
		case err != nil:
			l.end(t, err.Error())
			return
		case !ours:
			l.end(t, "the lease is no longer ours")
			return
		}
		l.mu.Lock()
		t.expires = sent.Add(l.ttl)
		t.deadline = t.expires.Add(-l.margin)
		l.mu.Unlock()
	}
}

// renewOnce sends one renewal and waits for it until the term's deadline.
// Whatever the client's timeouts, the term ends at the deadline: the call
// runs aside and is only waited for after stepping down.
func (l *Lease) renewOnce(t *term, deadline time.Time) (bool, error) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	type result struct {
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := renewScript.Run(ctx, l.client, []string{l.key}, t.value, l.ttl.Milliseconds()).Int64()
		res <- result{n, err}
	}()
	select {
	case r := <-res:
		if r.err != nil && ctx.Err() != nil {
			// The client gave up at the same deadline.
			l.end(t, "the deadline passed while renewing")
			return false, errStopped
		}
		if r.err != nil {
			return false, fmt.Errorf("renew leader lease %q: %w", l.key, r.err)
		}
		return r.n == 1, nil
	case <-ctx.Done():
		l.end(t, "the deadline passed while renewing")
		<-res
		return false, errStopped
	case <-t.stop:
		cancel()
		<-res
		return false, errStopped
	}
}

// end closes t's Lost channel, once, and forgets t as the current term.
func (l *Lease) end(t *term, cause string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !t.lostAt.IsZero() {
		return
	}
	t.lostAt, t.cause = time.Now(), cause
	close(t.lost)
	if l.term == t {
		l.term = nil
		l.stale = t.value
	}
	l.log.Warn("leader lease lost", "epoch", t.epoch, "cause", cause)
}

// Release ends the current term (its Lost channel is closed before Redis is
// asked) and deletes the lease if it is still ours, so a follower takes over
// at once. A lease now held by another node is left alone. Release without
// a term returns nil, unless a term of ours that ended without a release
// still has to be deleted and Redis fails.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	t := l.term
	value := l.stale
	l.stale = ""
	if t != nil {
		l.term = nil
		value = t.value
		if t.lostAt.IsZero() {
			t.lostAt, t.cause = time.Now(), "released"
			close(t.lost)
		}
		close(t.stop)
	}
	l.mu.Unlock()
	if value == "" {
		return nil
	}

	err := releaseScript.Run(ctx, l.client, []string{l.key}, value, l.key).Err()
	if err != nil {
		l.mu.Lock()
		if l.stale == "" {
			l.stale = value
		}
		l.mu.Unlock()
		err = fmt.Errorf("release leader lease %q: %w", l.key, err)
	} else if t != nil {
		l.log.Info("released", "epoch", t.epoch)
	}
	if t != nil {
		select {
		case <-t.done:
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("release leader lease %q: %w", l.key, ctx.Err())
			}
		}
	}
	return err
}

// Close releases the lease (waiting at most a TTL for Redis), waits for the
// renewal to stop, and makes Acquire fail with ErrClosed from then on. It
// does not close the Redis client, which the caller owns.
func (l *Lease) Close() error {
	l.closeOnce.Do(func() { close(l.closing) })
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	err := l.Release(ctx)
	l.renewers.Wait()
	return err
}

// Leading reports whether this node holds the lease now: a term is held and
// its local deadline has not passed. It reads only local state.
func (l *Lease) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term != nil && time.Now().Before(l.term.deadline)
}

// IsLeader is Leading as gocron's Elector wants it: nil while this node
// leads, ErrNotLeader otherwise. It reads only local state, so it is cheap
// enough for every job run.
func (l *Lease) IsLeader(context.Context) error {
	if l.Leading() {
		return nil
	}
	return ErrNotLeader
}

// Epoch returns the epoch of the term held now, or 0 when not leading. It
// reads only local state.
func (l *Lease) Epoch() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil || !time.Now().Before(l.term.deadline) {
		return 0
	}
	return l.term.epoch
}

// Leader asks Redis who holds the lease, for status output: the holder's
// Owner, its epoch and the lease's remaining time to live. owner is empty
// when nobody holds it.
func (l *Lease) Leader(ctx context.Context) (owner string, epoch int64, ttl time.Duration, err error) {
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	_, err = l.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, l.key)
		pttl = p.PTTL(ctx, l.key)
		return nil
	})
	// Only the GET's own nil reply means nobody holds the lease: compared
	// exactly, because go-redis wraps redis.Nil in failures too, such as
	// "all sentinels specified in configuration are unreachable: redis:
	// nil" when the sentinels do not know the master's name.
	if err == redis.Nil && get.Err() == redis.Nil {
		return "", 0, 0, nil
	}
	if err != nil {
		return "", 0, 0, fmt.Errorf("read leader lease %q: %w", l.key, err)
	}
	h, err := parseValue(get.Val())
	if err != nil {
		return "", 0, 0, fmt.Errorf("read leader lease %q: %w", l.key, err)
	}
	l.mu.Lock()
	l.seen = max(l.seen, h.epoch)
	l.mu.Unlock()
	return h.owner, h.epoch, max(pttl.Val(), 0), nil
}
