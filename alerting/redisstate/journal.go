package redisstate

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/alerting"
)

// The journal of receiver R is four keys, P being the Prefix:
//
//	P notify:R:queue      list of the pending ids, oldest first
//	P notify:R:notes      hash: pending id -> the Notification as JSON
//	P notify:R:attempted  set of the pending ids whose delivery was begun
//	P notify:R:done       list of the ids done lately, oldest first, bounded
//
// A notification is "sent" in the sense of the issue in two records: its id
// joins attempted just before the delivery, and leaves queue, notes and
// attempted for done just after it. A successor finding an id in attempted
// knows the receiver may have it, and delivers it again with the same id,
// which is the one duplicate a receiver drops.

var (
	// KEYS: fence, queue, notes. ARGV: epoch, id, JSON. An id already
	// pending is not queued twice.
	appendScript = fenced(`
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
return 1
`)
	// KEYS: fence, notes, attempted. ARGV: epoch, id. Only a pending id
	// is marked: one queued in memory only has nothing to mark.
	attemptScript = fenced(`
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[2])
end
return 1
`)
	// KEYS: fence, queue, notes, attempted, done. ARGV: epoch, id, how
	// many done ids to keep. The id is the head of the queue in the
	// Dispatcher's order, where LREM finds it at once.
	doneScript = fenced(`
redis.call('LREM', KEYS[2], 1, ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('RPUSH', KEYS[5], ARGV[2])
redis.call('LTRIM', KEYS[5], -tonumber(ARGV[3]), -1)
return 1
`)
)

// journal is one receiver's queue in Redis, written under one epoch.
type journal struct {
	s        *Store
	receiver string
	epoch    string
	remember string

	fence, queue, notes, attempted, done string // keys
}

var _ alerting.Journal = (*journal)(nil)

func (s *Store) journal(receiver string, epoch string, remember int) *journal {
	k := s.prefix + "notify:" + receiver + ":"
	return &journal{
		s: s, receiver: receiver, epoch: epoch, remember: strconv.Itoa(max(remember, 1)),
		fence: s.fence, queue: k + "queue", notes: k + "notes", attempted: k + "attempted", done: k + "done",
	}
}

// OpenDispatcher returns a Dispatcher for the leader of epoch whose queues
// are kept in Redis, one journal per receiver, with every write fenced by
// epoch. Call it after TakeOver(ctx, epoch): it takes up what the previous
// leaders left, the pending notifications in order (those whose delivery
// was begun are delivered again: at least once, the receiver drops the
// duplicate by id) and the ids done lately (a notification with one of
// them is not queued again). It fails with an error wrapping ErrFenced when
// epoch is not the current one.
//
// Once any of its writes is refused as fenced, the Dispatcher delivers
// nothing more: Run returns, and Send fails, with an error wrapping
// ErrFenced. Make a new one for the next term. Close it after Run returns;
// the client stays open.
func (s *Store) OpenDispatcher(ctx context.Context, epoch int64, receivers map[string]alerting.Notifier, logger *slog.Logger, opts alerting.DispatcherOptions) (*alerting.Dispatcher, error) {
	arg, err := epochArg(epoch)
	if err != nil {
		return nil, fmt.Errorf("open notification journals: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	open := func(ctx context.Context, receiver string, remember int) (alerting.Journal, alerting.Backlog, error) {
		j := s.journal(receiver, arg, remember)
		b, err := j.load(ctx, logger)
		if err != nil {
			return nil, alerting.Backlog{}, err
		}
		return j, b, nil
	}
	return alerting.OpenJournaledDispatcher(ctx, receivers, open, logger, opts)
}

// load reads the journal in one transaction, so that it is one moment's
// state, and checks the fence with it: a stale leader must not start
// delivering what is now its successor's.
func (j *journal) load(ctx context.Context, logger *slog.Logger) (alerting.Backlog, error) {
	var (
		fence     *redis.StringCmd
		queue     *redis.StringSliceCmd
		notes     *redis.MapStringStringCmd
		attempted *redis.StringSliceCmd
		done      *redis.StringSliceCmd
	)
	cmds, err := j.s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fence = p.Get(ctx, j.fence)
		queue = p.LRange(ctx, j.queue, 0, -1)
		notes = p.HGetAll(ctx, j.notes)
		attempted = p.SMembers(ctx, j.attempted)
		done = p.LRange(ctx, j.done, 0, -1)
		return nil
	})
	if err != nil && err != redis.Nil {
		return alerting.Backlog{}, fmt.Errorf("load notification journal %s: %w", j.queue, err)
	}
	// The transaction's error is only the first command's, and a missing
	// fence is an answer (redis.Nil), not a failure.
	for _, c := range cmds {
		if err := c.Err(); err != nil && err != redis.Nil {
			return alerting.Backlog{}, fmt.Errorf("load notification journal %s: %w", j.queue, err)
		}
	}
	if cur := fence.Val(); cur != j.epoch {
		return alerting.Backlog{}, fmt.Errorf("load notification journal %s: %w: epoch %s is not the current one (%q)",
			j.queue, ErrFenced, j.epoch, cur)
	}
	var b alerting.Backlog
	byID := notes.Val()
	for _, id := range queue.Val() {
		var n alerting.Notification
		if err := json.Unmarshal([]byte(byID[id]), &n); err != nil {
			// Left where it is for a person to look at; it cannot be
			// delivered, and it must not stop the rest.
			logger.Error("undecodable notification in the journal, skipped", "receiver", j.receiver,
				"key", j.notes, "id", id, "err", err)
			continue
		}
		b.Pending = append(b.Pending, n)
	}
	b.Attempted = attempted.Val()
	b.Done = done.Val()
	return b, nil
}

// Append queues n at the tail of the receiver's list, if the epoch is the
// current one.
func (j *journal) Append(ctx context.Context, n *alerting.Notification) error {
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("journal notification %s: %w", n.ID, err)
	}
	err = appendScript.Run(ctx, j.s.client, []string{j.fence, j.queue, j.notes}, j.epoch, n.ID, b).Err()
	if err != nil {
		return fmt.Errorf("journal notification %s in %s: %w", n.ID, j.queue, fenceErr(err))
	}
	return nil
}

// Attempt marks id as being delivered, if the epoch is the current one.
func (j *journal) Attempt(ctx context.Context, id string) error {
	err := attemptScript.Run(ctx, j.s.client, []string{j.fence, j.notes, j.attempted}, j.epoch, id).Err()
	if err != nil {
		return fmt.Errorf("mark notification %s being delivered in %s: %w", id, j.attempted, fenceErr(err))
	}
	return nil
}

// Done moves id from the queue to the done ids, if the epoch is the current
// one.
func (j *journal) Done(ctx context.Context, id string) error {
	err := doneScript.Run(ctx, j.s.client, []string{j.fence, j.queue, j.notes, j.attempted, j.done}, j.epoch, id, j.remember).Err()
	if err != nil {
		return fmt.Errorf("mark notification %s done in %s: %w", id, j.done, fenceErr(err))
	}
	return nil
}

// Close does nothing: the client belongs to the Store's owner.
func (j *journal) Close() error { return nil }
