// Package redisshare lets dmonitor's observers share what they see through
// Redis: each observer's latest result per host and check, its heartbeat,
// and requests to confirm a failure at once.
//
// The layout under the prefix (default "dmonitor:"):
//
//	results:<len(host)>:<host>:<check>   hash: observer → result (wire JSON)
//	results                              channel: every stored result
//	observers                            sorted set: observer, scored by its last heartbeat (Unix ms)
//	confirm:<len(host)>:<host>:<check>   string: the observer that asked, for the request's ttl
//	confirm                              channel: confirmation requests
//
// The length of the host makes a key unambiguous for any host and check,
// colons, spaces and all; the payload, not the key, is what is read back.
//
// Delivery is at least once: a (re)subscription delivers the whole stored
// state and then every new result, so a result can arrive twice, and one
// published just before the state was read can arrive after it, older than
// what was already delivered. Consumers keep the newest result per observer
// and host×check, and treat an equal start time as the same result.
package redisshare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/share/wire"
)

// DefaultPrefix is the prefix of every key and channel unless Options say
// otherwise.
const DefaultPrefix = "dmonitor:"

// DefaultResultTTL is how long a host×check's stored results outlive their
// last write: a target removed from every observer's config disappears
// from Redis after it.
const DefaultResultTTL = 24 * time.Hour

// Options configure an Exchange.
type Options struct {
	// Prefix starts every key and channel; default DefaultPrefix. All
	// observers of one cluster must use the same prefix.
	Prefix string
	// Observer is this node's name: the field its results are stored
	// under, and the requester its confirmation requests name.
	Observer string
	// Logger gets the state changes of subscriptions; nil discards.
	Logger *slog.Logger
	// ResultTTL is how long a host×check's results are kept after the
	// last write of any observer; 0 means DefaultResultTTL, negative keeps
	// them forever.
	ResultTTL time.Duration
	// PingInterval is how long a subscription may be silent before it is
	// pinged; a ping unanswered for as long again drops the connection
	// and resubscribes. Default 15s.
	PingInterval time.Duration
	// MaxBackoff caps the wait between reconnection attempts; the wait
	// starts at 100ms and doubles. Default 5s.
	MaxBackoff time.Duration
}

// Exchange is one observer's view of the shared results. Its methods are
// safe for concurrent use.
type Exchange struct {
	client     redis.UniversalClient
	observer   string
	log        *slog.Logger
	resultTTL  string // milliseconds, for the publish script; "0" never expires
	ping       time.Duration
	maxBackoff time.Duration

	resultsPrefix string // key prefix of the result hashes
	resultsMatch  string // SCAN pattern of the result hashes
	resultsChan   string
	confirmPrefix string
	confirmChan   string
	observersKey  string
}

// New returns the Exchange of observer o.Observer over client. The client
// is the caller's to close. Redis Cluster is not supported: the resync
// scans one node.
func New(client redis.UniversalClient, o Options) *Exchange {
	p := o.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	x := &Exchange{
		client: client, observer: o.Observer, log: o.Logger,
		ping: o.PingInterval, maxBackoff: o.MaxBackoff,
		resultsPrefix: p + "results:",
		resultsMatch:  escapeGlob(p) + "results:*",
		resultsChan:   p + "results",
		confirmPrefix: p + "confirm:",
		confirmChan:   p + "confirm",
		observersKey:  p + "observers",
	}
	switch ttl := o.ResultTTL; {
	case ttl == 0:
		x.resultTTL = strconv.FormatInt(DefaultResultTTL.Milliseconds(), 10)
	case ttl < 0:
		x.resultTTL = "0"
	default:
		x.resultTTL = strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)
	}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	if x.ping <= 0 {
		x.ping = 15 * time.Second
	}
	if x.maxBackoff <= 0 {
		x.maxBackoff = 5 * time.Second
	}
	return x
}

// targetKey is the key of host×check under prefix: the host's length
// first, so "a:b"×"c" and "a"×"b:c" never meet.
func targetKey(prefix, host, check string) string {
	return prefix + strconv.Itoa(len(host)) + ":" + host + ":" + check
}

// escapeGlob quotes the characters SCAN's MATCH treats specially, so a
// prefix like "dm[1]:" matches only itself.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// publishScript stores a result unless the stored one of the same observer
// started later, and then publishes it, in one atomic step: a subscriber's
// resync sees a result either in the hash or, later, on the channel.
//
// The start times are compared as decimal strings, not Lua numbers:
// Unix nanoseconds need 61 bits and Lua's doubles hold 53.
//
// KEYS[1] the result hash; ARGV: observer, payload, start, channel, ttl ms.
var publishScript = redis.NewScript(`
local function older(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then return na end
  if a == b then return false end
  if #a ~= #b then return (#a < #b) ~= na end
  return (a < b) ~= na
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local t = string.match(cur, '^{"t":(%-?%d+)')
  if t and older(ARGV[3], t) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[5] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
`)

// Publish stores r as r.Observer's latest result for r.Host×r.Check and
// publishes it to every subscriber, in one round trip. A result that
// started before the one already stored for the same observer is neither
// stored nor published (results of one observer can come in out of order
// after a catch-up); that is not an error. An equal start replaces the
// stored result, so a retry is harmless. Errors are Redis's or, for a
// start outside 1678–2262, the result's.
func (x *Exchange) Publish(ctx context.Context, r check.Result) error {
	payload, start, err := wire.Encode(&r)
	if err != nil {
		return err
	}
	key := targetKey(x.resultsPrefix, r.Host, r.Check)
	if err := publishScript.Run(ctx, x.client, []string{key}, x.publishArgs(&r, payload, start)...).Err(); err != nil {
		return fmt.Errorf("publish result of %s on %s to redis: %w", r.Check, r.Host, err)
	}
	return nil
}

func (x *Exchange) publishArgs(r *check.Result, payload []byte, start int64) []any {
	return []any{r.Observer, payload, strconv.FormatInt(start, 10), x.resultsChan, x.resultTTL}
}

// PublishAll publishes rs as Publish does, pipelined in one round trip: for
// a writer that has several results queued. It returns every failure,
// joined; the results that did not fail are published.
func (x *Exchange) PublishAll(ctx context.Context, rs []check.Result) error {
	var errs []error
	pipe := x.client.Pipeline()
	cmds := make([]*redis.Cmd, 0, len(rs))
	keys := make([]string, 0, len(rs))
	args := make([][]any, 0, len(rs))
	for i := range rs {
		payload, start, err := wire.Encode(&rs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, targetKey(x.resultsPrefix, rs[i].Host, rs[i].Check))
		args = append(args, x.publishArgs(&rs[i], payload, start))
		cmds = append(cmds, publishScript.EvalSha(ctx, pipe, keys[len(keys)-1:], args[len(args)-1]...))
	}
	if len(cmds) == 0 {
		return errors.Join(errs...)
	}
	_, _ = pipe.Exec(ctx) // each command's error is looked at below
	// A server that does not know the script yet (a new or restarted one)
	// refuses every EVALSHA without running it: send those again with the
	// script's text, which also caches it.
	var retry []int
	for i, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe := x.client.Pipeline()
		for _, i := range retry {
			cmds[i] = publishScript.Eval(ctx, pipe, keys[i:i+1], args[i]...)
		}
		_, _ = pipe.Exec(ctx)
	}
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			errs = append(errs, fmt.Errorf("publish result %s to redis: %w", keys[i], err))
		}
	}
	return errors.Join(errs...)
}

// Subscribe delivers to fn every result any observer publishes, this
// one's included, until ctx is done; then it returns ctx's error. On every
// (re)subscription it first delivers the whole stored state, so a new
// leader, or one whose connection dropped and lost messages, starts
// complete. While Redis is unreachable it retries with backoff, logging
// once when the subscription goes down and once when it is back. fn is
// called from one goroutine, never concurrently, and must not block for
// long: Redis drops a subscriber that falls too far behind (which this
// then survives by resyncing).
func (x *Exchange) Subscribe(ctx context.Context, fn func(check.Result)) error {
	deliver := func(payload string) {
		r, err := wire.Decode([]byte(payload))
		if err != nil {
			x.log.Warn("undecodable shared result, skipped", "channel", x.resultsChan, "err", err)
			return
		}
		fn(r)
	}
	return x.listen(ctx, "results", x.resultsChan, func(ctx context.Context) error { return x.resync(ctx, fn) }, deliver)
}

// Snapshot delivers every stored result to fn, once, and returns: what a
// new leader reads before its first evaluation, so that it does not judge
// targets on its own results alone while Subscribe's resync is under way.
// It returns Redis's error if the state could not be read in full (fn may
// then have seen part of it).
func (x *Exchange) Snapshot(ctx context.Context, fn func(check.Result)) error {
	return x.resync(ctx, fn)
}

// resync delivers every stored result. SCAN may return a key twice; that
// is a duplicate delivery, which consumers already tolerate.
func (x *Exchange) resync(ctx context.Context, fn func(check.Result)) error {
	var cursor uint64
	for {
		keys, next, err := x.client.Scan(ctx, cursor, x.resultsMatch, 512).Result()
		if err != nil {
			return fmt.Errorf("scan %s: %w", x.resultsMatch, err)
		}
		if len(keys) > 0 {
			pipe := x.client.Pipeline()
			cmds := make([]*redis.MapStringStringCmd, len(keys))
			for i, k := range keys {
				cmds[i] = pipe.HGetAll(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("read results: %w", err)
			}
			for i, c := range cmds {
				for field, v := range c.Val() {
					r, err := wire.Decode([]byte(v))
					if err != nil {
						x.log.Warn("undecodable shared result, skipped", "key", keys[i], "observer", field, "err", err)
						continue
					}
					fn(r)
				}
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// ObserverInfo is an observer and its last heartbeat.
type ObserverInfo struct {
	Name     string
	LastSeen time.Time // the heartbeat's own time, millisecond precision
}

// Heartbeat records that this observer was alive at at. The time is the
// observer's own clock: whoever judges silence compares it with theirs, so
// clocks must agree to well within the silence they tolerate.
func (x *Exchange) Heartbeat(ctx context.Context, at time.Time) error {
	err := x.client.ZAdd(ctx, x.observersKey, redis.Z{Score: float64(at.UnixMilli()), Member: x.observer}).Err()
	if err != nil {
		return fmt.Errorf("heartbeat of %s to redis: %w", x.observer, err)
	}
	return nil
}

// Observers returns every observer that ever sent a heartbeat, sorted by
// name. An observer that was removed from the cluster stays listed with its
// last heartbeat: compare with the configured nodes.
func (x *Exchange) Observers(ctx context.Context) ([]ObserverInfo, error) {
	zs, err := x.client.ZRangeWithScores(ctx, x.observersKey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read observers %s from redis: %w", x.observersKey, err)
	}
	out := make([]ObserverInfo, 0, len(zs))
	for _, z := range zs {
		name, _ := z.Member.(string)
		out = append(out, ObserverInfo{Name: name, LastSeen: time.UnixMilli(int64(z.Score))})
	}
	slices.SortFunc(out, func(a, b ObserverInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// confirmScript takes the confirmation slot of a host×check and, if it was
// free, announces the request, atomically: a request is never announced
// twice within the ttl, and never taken without being announced.
//
// KEYS[1] the slot; ARGV: observer, ttl ms, channel, message.
var confirmScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
`)

// RequestConfirm asks the other observers to run host×check now, unless a
// request for it was made, by any observer, within the last ttl: the ttl is
// the cluster-wide rate limit, and should outlast a plugin run so that at
// most one confirmation round is in flight. It reports whether this call
// started a round. ttl must be at least a millisecond.
func (x *Exchange) RequestConfirm(ctx context.Context, host, check string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("confirm %s on %s: ttl %v is under a millisecond", check, host, ttl)
	}
	msg, err := json.Marshal(confirmMsg{H: host, C: check, F: x.observer})
	if err != nil {
		return false, fmt.Errorf("confirm %s on %s: %w", check, host, err)
	}
	key := targetKey(x.confirmPrefix, host, check)
	n, err := confirmScript.Run(ctx, x.client, []string{key},
		x.observer, ttl.Milliseconds(), x.confirmChan, msg).Int()
	if err != nil {
		return false, fmt.Errorf("request confirmation of %s on %s from redis: %w", check, host, err)
	}
	return n == 1, nil
}

// Confirmations delivers to fn every confirmation request of the other
// observers (this one's own are skipped) until ctx is done; then it returns
// ctx's error. It reconnects as Subscribe does; requests made while it is
// disconnected are lost, which costs only speed: the check still runs at
// its interval. fn is called from one goroutine and should only start the
// check, not wait for it.
func (x *Exchange) Confirmations(ctx context.Context, fn func(host, check, from string)) error {
	return x.listen(ctx, "confirmations", x.confirmChan, nil, func(payload string) {
		var m confirmMsg
		if err := json.Unmarshal([]byte(payload), &m); err != nil {
			x.log.Warn("undecodable confirmation request, skipped", "channel", x.confirmChan, "err", err)
			return
		}
		if m.F != x.observer {
			fn(m.H, m.C, m.F)
		}
	})
}

// confirmMsg is a confirmation request on the wire.
type confirmMsg struct {
	H string `json:"h"`
	C string `json:"c"`
	F string `json:"f"` // the observer that asks
}
