// Package redisstate keeps the leader's decisions in Redis: the state of
// every rule instance that is not healthy, and each receiver's queue of
// notifications. Every write is fenced by the epoch of the leader's term, so
// a deposed leader that wakes up late can neither overwrite its successor's
// state nor deliver a notification the successor also delivers.
//
// # Fencing
//
// The key Prefix+"fence" holds the epoch of the current leader's term. A
// new leader raises it with TakeOver, which refuses an epoch that is not
// greater than the one stored: a stale leader cannot take over. Every write
// is a Lua script that first compares the fence with the writer's epoch and
// refuses with an error wrapping ErrFenced unless they are equal, so a
// write is applied exactly when its writer's term is the current one. The
// comparison and the write are one script, atomic in Redis: nothing of a
// stale leader's lands after a TakeOver returns. A deposed leader learns it
// at its next write.
//
// In Redis Cluster, the scripts touch the fence and the data in one call:
// give a Prefix with a hash tag, such as "{dmonitor}:", so that every key is
// in one slot.
package redisstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/alerting"
)

// DefaultPrefix is the default Options.Prefix.
const DefaultPrefix = "dmonitor:"

// ErrFenced is wrapped by the error of a write refused because the writer's
// epoch is not the current one: a newer leader has taken over (or none has
// called TakeOver yet). It is alerting.ErrFenced, so a Dispatcher stops on
// it.
var ErrFenced = alerting.ErrFenced

// Options configure a Store. Zero values take the defaults.
type Options struct {
	// Prefix starts every key the Store uses. Default DefaultPrefix.
	Prefix string
}

// Store is the leader's state in Redis. It holds no state of its own
// besides the client and key names; any number of Stores, in any number of
// processes, may use the same keys: the fence decides whose writes count.
type Store struct {
	client  redis.UniversalClient
	prefix  string
	fence   string // the key of the current epoch
	settled string // the epoch whose leader has reconciled the instances
	alerts  string // the hash of instances, by InstanceKey
}

// New returns a Store using client, which the caller keeps and closes.
func New(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	return &Store{client: client, prefix: opts.Prefix, fence: opts.Prefix + "fence", settled: opts.Prefix + "settled",
		alerts: opts.Prefix + "alerts"}
}

// fenceLua opens every fenced script: KEYS[1] is the fence and ARGV[1] the
// writer's epoch, in decimal. It is the fencing rule, and the only place it
// is written.
const fenceLua = `
local fence = redis.call('GET', KEYS[1])
if fence ~= ARGV[1] then
  return redis.error_reply('FENCED epoch ' .. ARGV[1] .. ' is not the current one (' .. (fence or 'none') .. ')')
end
`

// fenced returns the script that runs body only when the fencing rule lets
// the writer write.
func fenced(body string) *redis.Script { return redis.NewScript(fenceLua + body) }

// takeOverScript raises the fence to ARGV[1] if that is greater than the
// epoch stored. Epochs are compared as decimal strings (length first), not
// as Lua numbers: those are doubles, exact only up to 2^53.
var takeOverScript = redis.NewScript(`
local fence = redis.call('GET', KEYS[1])
if fence and (#ARGV[1] < #fence or (#ARGV[1] == #fence and ARGV[1] <= fence)) then
  return redis.error_reply('FENCED epoch ' .. ARGV[1] .. ' is not newer than the current one (' .. fence .. ')')
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`)

var (
	saveScript = fenced(`
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
`)
	deleteScript = fenced(`
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
`)
	settleScript = fenced(`
redis.call('SET', KEYS[2], ARGV[1])
return 1
`)
)

// fenceErr turns the FENCED reply of a script into an error wrapping
// ErrFenced; other errors are returned as they are.
func fenceErr(err error) error {
	if redis.HasErrorPrefix(err, "FENCED") {
		return fmt.Errorf("%w: %s", ErrFenced, err.Error())
	}
	return err
}

// epochArg formats epoch for the scripts, refusing what no term has.
func epochArg(epoch int64) (string, error) {
	if epoch <= 0 {
		return "", fmt.Errorf("epoch %d: an epoch is positive", epoch)
	}
	return strconv.FormatInt(epoch, 10), nil
}

// TakeOver makes epoch the current one: from now on only writes with epoch
// are applied, and every older leader's are refused. A new leader calls it
// before anything else, before LoadAll and OpenDispatcher. It fails with an
// error wrapping ErrFenced when the stored epoch is epoch or greater: this
// term is stale (or TakeOver was called twice for it), and the caller must
// not lead.
func (s *Store) TakeOver(ctx context.Context, epoch int64) error {
	arg, err := epochArg(epoch)
	if err != nil {
		return fmt.Errorf("take over %s: %w", s.fence, err)
	}
	if err := takeOverScript.Run(ctx, s.client, []string{s.fence}, arg).Err(); err != nil {
		return fmt.Errorf("take over %s: %w", s.fence, fenceErr(err))
	}
	return nil
}

// InstanceKey returns the key of the instance of rule on host and check:
// the three path-escaped and joined by "/", so that no two triples give the
// same key and the keys read plainly in redis-cli.
func InstanceKey(rule, host, check string) string {
	return url.PathEscape(rule) + "/" + url.PathEscape(host) + "/" + url.PathEscape(check)
}

// Save stores inst under key, if epoch is the current one; otherwise it
// fails with an error wrapping ErrFenced and stores nothing.
func (s *Store) Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error {
	arg, err := epochArg(epoch)
	if err != nil {
		return fmt.Errorf("save alert %s: %w", key, err)
	}
	b, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("save alert %s: %w", key, err)
	}
	if err := saveScript.Run(ctx, s.client, []string{s.fence, s.alerts}, arg, key, b).Err(); err != nil {
		return fmt.Errorf("save alert %s in %s: %w", key, s.alerts, fenceErr(err))
	}
	return nil
}

// Delete removes the instance under key, as when it is healthy again and
// there is nothing to remember, if epoch is the current one; otherwise it
// fails with an error wrapping ErrFenced. Deleting a key that is not stored
// is not an error.
func (s *Store) Delete(ctx context.Context, epoch int64, key string) error {
	arg, err := epochArg(epoch)
	if err != nil {
		return fmt.Errorf("delete alert %s: %w", key, err)
	}
	if err := deleteScript.Run(ctx, s.client, []string{s.fence, s.alerts}, arg, key).Err(); err != nil {
		return fmt.Errorf("delete alert %s in %s: %w", key, s.alerts, fenceErr(err))
	}
	return nil
}

// LoadAll returns every stored instance, by key. An instance that cannot be
// decoded is left out and named in the error, which is then not nil while
// the map still holds all the others: a new leader had better resume what
// it can than nothing.
func (s *Store) LoadAll(ctx context.Context) (map[string]alerting.Instance, error) {
	raw, err := s.client.HGetAll(ctx, s.alerts).Result()
	if err != nil {
		return nil, fmt.Errorf("load alerts from %s: %w", s.alerts, err)
	}
	return s.decodeAll(raw)
}

// decodeAll decodes the hash of instances; see LoadAll for its errors.
func (s *Store) decodeAll(raw map[string]string) (map[string]alerting.Instance, error) {
	out := make(map[string]alerting.Instance, len(raw))
	var errs []error
	for k, v := range raw {
		var inst alerting.Instance
		if err := json.Unmarshal([]byte(v), &inst); err != nil {
			errs = append(errs, fmt.Errorf("alert %s in %s: %w", k, s.alerts, err))
			continue
		}
		out[k] = inst
	}
	return out, errors.Join(errs...)
}

// Settle records that the leader of epoch is done reconciling the stored
// instances after its TakeOver (a new leader may write back what Redis lost
// before it decides). Until then Snapshot reports the state unsettled: read
// between the fence and the write-back, an empty hash would say "resolved"
// of every incident Redis lost. It fails with an error wrapping ErrFenced
// when epoch is not the current one.
func (s *Store) Settle(ctx context.Context, epoch int64) error {
	arg, err := epochArg(epoch)
	if err != nil {
		return fmt.Errorf("settle %s: %w", s.alerts, err)
	}
	if err := settleScript.Run(ctx, s.client, []string{s.fence, s.settled}, arg).Err(); err != nil {
		return fmt.Errorf("settle %s: %w", s.alerts, fenceErr(err))
	}
	return nil
}

// Snapshot returns every stored instance, as LoadAll does, and whether
// they are settled: the current leader has called Settle, read together
// in one transaction. Unsettled means Redis lost the state (restarted
// without persistence, or flushed) and no leader has reconciled it yet, or
// one is doing so now: the map is then not the cluster's incidents.
func (s *Store) Snapshot(ctx context.Context) (insts map[string]alerting.Instance, settled bool, err error) {
	var fence, done *redis.StringCmd
	var all *redis.MapStringStringCmd
	if _, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fence = p.Get(ctx, s.fence)
		done = p.Get(ctx, s.settled)
		all = p.HGetAll(ctx, s.alerts)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) || all.Err() != nil {
		return nil, false, fmt.Errorf("snapshot alerts from %s: %w", s.alerts, errors.Join(err, all.Err()))
	}
	insts, err = s.decodeAll(all.Val())
	return insts, fence.Val() != "" && fence.Val() == done.Val(), err
}
