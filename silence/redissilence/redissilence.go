// Package redissilence keeps the operators' silences in Redis, so that a
// silence set through any node of a cluster mutes the alerts of whichever
// node leads. It applies the rules of package silence (validation, updates
// that would rewrite history, expiry, retention) through silence.Snapshot;
// only where the silences live differs from silence.Store.
//
// Writes go to Redis at once, in a transaction that reads the silences
// afresh, so two nodes updating one silence cannot lose either's change.
// Matching never touches Redis: it reads an in-memory snapshot that Run
// reloads every Options.Refresh, and that outlives a Redis outage.
package redissilence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dmonitor/dmonitor/silence"
)

// DefaultPrefix is the default Options.Prefix.
const DefaultPrefix = "dmonitor:"

// DefaultRefresh is the default Options.Refresh.
const DefaultRefresh = time.Second

// writeTimeout bounds one Set or Expire, which take no context: long enough
// for a retried transaction, short enough that an operator's request does
// not hang on a Redis that stopped answering.
const writeTimeout = 5 * time.Second

// maxAttempts is how often a write is tried when other nodes keep changing
// the silences between its read and its write.
const maxAttempts = 10

// Options configure a Store. Zero values take the defaults.
type Options struct {
	// Prefix starts the key of the silences hash, <Prefix>silences.
	// Default DefaultPrefix.
	Prefix string
	// Logger receives the refreshes that fail and recover; nil discards.
	Logger *slog.Logger
	// Now is the clock of Set, Expire and the garbage collection; nil
	// means time.Now.
	Now func() time.Time
	// Retention is how long a silence is kept after it expired. Default
	// silence.DefaultRetention.
	Retention time.Duration
	// Refresh is how often Run reloads the snapshot MatchAlert and List
	// read, so how long a silence set on another node may take to mute
	// this node's alerts. Default DefaultRefresh.
	Refresh time.Duration
}

// Store holds the silences in the Redis hash <prefix>silences, id → JSON of
// the silence.Silence. It is safe for concurrent use; any number of Stores,
// in any number of processes, may share the hash.
type Store struct {
	client redis.UniversalClient
	key    string
	addr   string // names the server in errors
	opts   Options

	// mu orders the writes and reloads of this Store, so that a reload
	// read before a write cannot replace the snapshot that write published.
	mu   sync.Mutex
	snap atomic.Pointer[silence.Snapshot]
}

// New returns a Store using client, which the caller keeps and closes. It
// holds no silence until Run's first reload or a write.
func New(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Retention <= 0 {
		opts.Retention = silence.DefaultRetention
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	s := &Store{client: client, key: opts.Prefix + "silences", addr: addrOf(client), opts: opts}
	s.snap.Store(&silence.Snapshot{})
	return s
}

// addrOf names the server of client as its errors should.
func addrOf(client redis.UniversalClient) string {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprint(client)
}

// Set stores sil and returns its id, with the rules of silence.Store.Set:
// errors wrapping silence.ErrInvalid refuse a malformed silence, and
// silence.ErrNotFound an id to update that no node holds. Other errors are
// Redis's, naming its address: nothing was stored.
func (s *Store) Set(sil silence.Silence) (string, error) {
	c, err := s.update("set silence", func(cur *silence.Snapshot) (silence.Change, error) {
		return cur.Set(sil, s.opts.Now())
	})
	return c.ID, err
}

// Expire ends the silence id now. Expiring an expired silence does nothing;
// an id no node holds gives an error wrapping silence.ErrNotFound. Other
// errors are Redis's, naming its address: the silence still mutes.
func (s *Store) Expire(id string) error {
	_, err := s.update("expire silence "+id, func(cur *silence.Snapshot) (silence.Change, error) {
		return cur.Expire(id, s.opts.Now())
	})
	return err
}

// List returns the silences of the snapshot, ordered as silence.Store.List
// orders them: as of the last reload, and this Store's own writes.
func (s *Store) List(now time.Time) []silence.Silence {
	return s.snap.Load().List(now)
}

// MatchAlert returns the id of a silence active at now that matches the
// instance of rule with labels, or "", as silence.Store.MatchAlert does. It
// reads the snapshot only, never Redis, so it answers while Redis is down.
func (s *Store) MatchAlert(rule string, labels map[string]string, now time.Time) string {
	return s.snap.Load().MatchAlert(rule, labels, now)
}

// Run reloads the snapshot every Options.Refresh, dropping the silences
// past their retention, until ctx is done. While Redis does not answer,
// the last snapshot stays in force: it logs the failure once, and the
// recovery.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.Refresh)
	defer t.Stop()
	failing := false
	for {
		err := s.refresh(ctx)
		if err == nil {
			err = s.gc()
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			s.opts.Logger.Warn("silences not reloaded from redis; matching with the last ones", "err", err)
		case err == nil && failing:
			s.opts.Logger.Info("silences reloaded from redis again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh replaces the snapshot with the silences in Redis.
func (s *Store) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Refresh+writeTimeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, err := s.read(ctx, s.client)
	if err != nil {
		return fmt.Errorf("reload silences: redis %s: %w", s.addr, err)
	}
	s.snap.Store(snap)
	return nil
}

// gc drops from Redis the silences past their retention. It asks Redis
// only when the snapshot holds one, so every node may run it every
// refresh; two nodes dropping the same silence are harmless.
func (s *Store) gc() error {
	now := s.opts.Now()
	if !s.snap.Load().GC(now, s.opts.Retention).Changed() {
		return nil
	}
	_, err := s.update("collect silences", func(cur *silence.Snapshot) (silence.Change, error) {
		return cur.GC(now, s.opts.Retention), nil
	})
	return err
}

// update applies change to the silences as they are in Redis, writes what
// it stored or dropped, and publishes the result. The write is a WATCH
// transaction, retried when another node changed the hash in between. An
// error of change is returned as it is; Redis's are prefixed with op and
// the address.
func (s *Store) update(op string, change func(*silence.Snapshot) (silence.Change, error)) (silence.Change, error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		c       silence.Change
		refused error
	)
	txf := func(tx *redis.Tx) error {
		cur, err := s.read(ctx, tx)
		if err != nil {
			return err
		}
		if c, refused = change(cur); refused != nil || !c.Changed() {
			return nil
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, sil := range c.Stored {
				b, err := json.Marshal(sil)
				if err != nil {
					return err
				}
				p.HSet(ctx, s.key, sil.ID, b)
			}
			if len(c.Dropped) > 0 {
				p.HDel(ctx, s.key, c.Dropped...)
			}
			return nil
		})
		return err
	}
	for range maxAttempts {
		err := s.client.Watch(ctx, txf, s.key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return silence.Change{}, fmt.Errorf("%s: redis %s: %w", op, s.addr, err)
		}
		if refused != nil {
			return silence.Change{}, refused
		}
		s.snap.Store(c.Next)
		return c, nil
	}
	return silence.Change{}, fmt.Errorf("%s: redis %s: %s changed by others %d times in a row", op, s.addr, s.key, maxAttempts)
}

// read loads the silences of the hash. A silence that does not decode or
// is not valid fails the read rather than being dropped, as silence.Open
// refuses such a file: a lost silence pages people who were told they
// would not be.
func (s *Store) read(ctx context.Context, r redis.Cmdable) (*silence.Snapshot, error) {
	raw, err := r.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, err
	}
	sils := make([]silence.Silence, 0, len(raw))
	for id, b := range raw {
		var sil silence.Silence
		if err := json.Unmarshal([]byte(b), &sil); err != nil {
			return nil, fmt.Errorf("silence %s in %s: %w", id, s.key, err)
		}
		if sil.ID != id {
			return nil, fmt.Errorf("silence %s in %s: holds id %q", id, s.key, sil.ID)
		}
		sils = append(sils, sil)
	}
	snap, err := silence.NewSnapshot(sils)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.key, err)
	}
	return snap, nil
}
