// Package localstate keeps a node's own copy of the alert state in a file
// of its data directory: the state of every rule instance that is not
// healthy, as the leader last saved it. A single node restores its open
// incidents from it after a crash; cluster nodes reconcile from it when
// Redis comes back empty; peers replicate it to each other with Records and
// Merge. The TSDB is never read back as state: this file is the state.
//
// # Fencing
//
// Store implements the same contract as redisstate.Store: TakeOver makes an
// epoch the current one, durably, and Save and Delete are refused with an
// error wrapping alerting.ErrFenced unless they carry it. Unlike Redis, the
// file does not order epochs: they come from different lease sources (a
// Redis counter, which starts again at 1 when Redis loses its data, or a
// time-based epoch in peer mode), so the lease decides who leads and
// TakeOver accepts any positive epoch. What the fence prevents is a term of
// this process that has ended writing after the next one began.
//
// # Replication
//
// Every stored Record carries when it was written (Updated, by the writer's
// clock) and the writer's epoch. Merge keeps, per key, the newest record:
// the later Updated, or on the same Updated the higher Epoch. A healthy
// instance is not simply removed: Delete leaves a tombstone, so that a peer
// still holding the open incident cannot bring it back by merging. A
// tombstone is kept for Options.TombstoneTTL, long enough for every peer to
// have seen it, and then forgotten.
//
// # Durability
//
// Every TakeOver, Save, Delete and Merge is one bbolt transaction, synced
// to disk before it returns: a write that returned survives kill -9 of the
// process, and one that did not is either wholly there or not at all.
package localstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/dmonitor/dmonitor/alerting"
)

// Store satisfies evaluator.StateStore, which it cannot name: the evaluator
// imports this package.
var _ interface {
	TakeOver(ctx context.Context, epoch int64) error
	LoadAll(ctx context.Context) (map[string]alerting.Instance, error)
	Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error
	Delete(ctx context.Context, epoch int64, key string) error
} = (*Store)(nil)

// Defaults of Options.
const (
	DefaultTombstoneTTL = 24 * time.Hour
	DefaultLockTimeout  = time.Second
)

const (
	// recordsBucket holds one JSON-encoded Record per StateStore key.
	recordsBucket = "records"
	// metaBucket holds the fence under epochKey, in decimal.
	metaBucket = "meta"
	epochKey   = "epoch"

	// pruneEvery is how often, at most, a write looks for expired
	// tombstones. Finding them reads every record, which is cheap for the
	// few hundred a node holds but needless on every write.
	pruneEvery = time.Minute
)

// Record is one rule instance's stored state, as replicated between nodes.
type Record struct {
	// Key is the StateStore key; this package does not look inside it.
	Key string `json:"key"`
	// Instance is the stored state; zero when Deleted.
	Instance alerting.Instance `json:"instance"`
	// Deleted marks a tombstone: the instance became healthy and was
	// dropped. It is kept so that a merge cannot resurrect the incident.
	Deleted bool `json:"deleted,omitempty"`
	// Updated is when the writer wrote the record, by its own clock. The
	// newest Updated wins in Merge.
	Updated time.Time `json:"updated"`
	// Epoch is the writer's term. It decides between records with the same
	// Updated.
	Epoch int64 `json:"epoch"`
}

// newerThan reports whether r supersedes cur in a merge: written later, or
// at the same instant in a later term. A record is not newer than itself,
// so merging what is stored already changes nothing.
func (r Record) newerThan(cur Record) bool {
	if !r.Updated.Equal(cur.Updated) {
		return r.Updated.After(cur.Updated)
	}
	return r.Epoch > cur.Epoch
}

// Options configure a Store. Zero values take the defaults.
type Options struct {
	// Now is the clock that stamps Updated and ages tombstones. Default
	// time.Now.
	Now func() time.Time
	// TombstoneTTL is how long a tombstone is kept, so that a peer that
	// missed the resolution cannot resurrect the incident by a merge; it
	// should exceed the longest time a peer may be out of touch. Older
	// tombstones are ignored by Merge, left out of Records and pruned.
	// Default DefaultTombstoneTTL.
	TombstoneTTL time.Duration
	// LockTimeout is how long Open waits for the file's lock while another
	// Store, in this process or another, holds it. Default
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives the records that cannot be decoded and are skipped.
	// Default: discard.
	Logger *slog.Logger
	// Reserve is the disk space set aside beside the file (in a file of
	// its name with .reserve added) for writes when the disk is full.
	// Default DefaultReserve; negative sets none aside.
	Reserve int64
	// Written, when set, is called with each record Save or Delete wrote,
	// after it is durable: how a deciding node hands its state to its
	// peers. It must not block.
	Written func(Record)
}

// Store is the alert state in one bbolt file. Its methods may be called
// concurrently. Only one Store at a time can have a file open: bbolt locks
// it.
type Store struct {
	db   *bolt.DB
	path string
	now  func() time.Time
	ttl  time.Duration
	log  *slog.Logger
	// written is Options.Written.
	written func(Record)
	reserve *reserve

	// takeOverMu makes the stored fence and epoch agree when TakeOvers
	// race: each writes both before the next begins.
	takeOverMu sync.Mutex
	// epoch mirrors the stored fence for Epoch; the writes check the
	// stored one, in their own transaction.
	epoch atomic.Int64
	// lastPrune is when expired tombstones were last removed. It is only
	// used inside Update transactions, which bbolt runs one at a time.
	lastPrune time.Time
}

// Open opens the state file at path, creating it (mode 0600) and its
// parent directory (mode 0750) if they do not exist, and removes the
// tombstones that have expired. It waits up to Options.LockTimeout for the
// file's lock, and then fails: another dmonitor is using the same data
// directory. Every error names path.
func Open(path string, o Options) (*Store, error) {
	s := &Store{path: path, now: o.Now, ttl: o.TombstoneTTL, log: o.Logger, written: o.Written,
		reserve: &reserve{path: path + ".reserve", size: o.Reserve}}
	if s.reserve.size == 0 {
		s.reserve.size = DefaultReserve
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTombstoneTTL
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	timeout := o.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open alert state %s: %w", path, err)
	}
	_, err := os.Stat(path)
	created := errors.Is(err, os.ErrNotExist)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open alert state %s: not unlocked within %s (locked by another process?): %w", path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open alert state %s: %w", path, err)
	}
	s.db = db

	// Set aside before the first write, which may already need it.
	if err := s.reserve.take(s.now()); err != nil {
		s.log.Warn("no disk space set aside for the alert state", "err", err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists([]byte(recordsBucket)); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		epoch, err := parseEpoch(meta.Get([]byte(epochKey)))
		if err != nil {
			return err
		}
		s.epoch.Store(epoch)
		return s.maybePrune(tx, s.now())
	})
	if err == nil && created {
		// bbolt syncs the file but not the directory entry: without this a
		// power cut could lose the new file with everything in it.
		err = syncDir(dir)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open alert state %s: %w", path, err), db.Close())
	}
	return s, nil
}

// Close closes the file. The Store cannot be used after it.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close alert state %s: %w", s.path, err)
	}
	return nil
}

// Epoch returns the epoch of the last TakeOver, by this Store or by an
// earlier one on the same file (the fence is stored), or 0 if there was
// none.
func (s *Store) Epoch() int64 { return s.epoch.Load() }

// TakeOver makes epoch the only one allowed to write, durably: it still is
// after a restart, until the next TakeOver. A new leader calls it before
// anything else. Any positive epoch is accepted, smaller than the current
// one too (see the package documentation); epoch <= 0 is an error.
func (s *Store) TakeOver(ctx context.Context, epoch int64) error {
	if epoch <= 0 {
		return fmt.Errorf("take over alert state %s: epoch %d: an epoch is positive", s.path, epoch)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("take over alert state %s: %w", s.path, err)
	}
	s.takeOverMu.Lock()
	defer s.takeOverMu.Unlock()
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(metaBucket)).Put([]byte(epochKey), strconv.AppendInt(nil, epoch, 10))
	})
	if err != nil {
		return fmt.Errorf("take over alert state %s with epoch %d: %w", s.path, epoch, err)
	}
	s.epoch.Store(epoch)
	return nil
}

// LoadAll returns every stored instance, by key; tombstones are left out.
// A record that cannot be decoded is logged and left out too: a leader had
// better resume what it can than nothing. The error is that of reading the
// file.
func (s *Store) LoadAll(ctx context.Context) (map[string]alerting.Instance, error) {
	recs, err := s.Records(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]alerting.Instance, len(recs))
	for _, r := range recs {
		if !r.Deleted {
			out[r.Key] = r.Instance
		}
	}
	return out, nil
}

// Save stores inst under key, stamped with the clock's time and epoch, if
// epoch is the current one; otherwise it fails with an error wrapping
// alerting.ErrFenced and stores nothing. The record it writes supersedes
// the one it replaces in any Merge, even if the clock reads earlier than
// that one's Updated.
func (s *Store) Save(ctx context.Context, epoch int64, key string, inst alerting.Instance) error {
	return s.write(ctx, "save", epoch, Record{Key: key, Instance: inst})
}

// Delete replaces the instance under key by a tombstone, as when it is
// healthy again, if epoch is the current one; otherwise it fails with an
// error wrapping alerting.ErrFenced. A key that is not stored gets a
// tombstone as well: a peer may hold it.
func (s *Store) Delete(ctx context.Context, epoch int64, key string) error {
	return s.write(ctx, "delete", epoch, Record{Key: key, Deleted: true})
}

// write stores rec under the fencing rule, as op ("save" or "delete").
func (s *Store) write(ctx context.Context, op string, epoch int64, rec Record) error {
	if err := checkKey(rec.Key); err != nil {
		return fmt.Errorf("%s alert in %s: %w", op, s.path, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s alert %s in %s: %w", op, rec.Key, s.path, err)
	}
	err := s.update(func(tx *bolt.Tx) error {
		// The fence is read in the writing transaction, so no TakeOver
		// can come between the check and the write.
		fence, err := parseEpoch(tx.Bucket([]byte(metaBucket)).Get([]byte(epochKey)))
		if err != nil {
			return err
		}
		if epoch <= 0 || epoch != fence {
			return fmt.Errorf("%w: epoch %d is not the current one (%d)", alerting.ErrFenced, epoch, fence)
		}
		now := s.now()
		if err := s.maybePrune(tx, now); err != nil {
			return err
		}
		b := tx.Bucket([]byte(recordsBucket))
		rec.Epoch, rec.Updated = epoch, now.UTC()
		if prev, ok := s.decode([]byte(rec.Key), b.Get([]byte(rec.Key))); ok && !rec.newerThan(prev) {
			// The clock reads no later than the write this one replaces:
			// it stepped back, or that write was merged from a peer whose
			// clock is ahead. This one is the newer all the same, and
			// must win on every replica.
			rec.Updated = prev.Updated.Add(time.Nanosecond)
		}
		return put(b, rec)
	})
	if err != nil {
		return fmt.Errorf("%s alert %s in %s: %w", op, rec.Key, s.path, err)
	}
	if s.written != nil {
		s.written(rec)
	}
	return nil
}

// Records returns every stored record, tombstones included (but not those
// older than TombstoneTTL, which Merge would ignore anyway), sorted by Key:
// what a peer needs to catch up with this node. Undecodable records are
// logged and left out, as in LoadAll.
func (s *Store) Records(ctx context.Context) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load alert state from %s: %w", s.path, err)
	}
	now := s.now()
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		// bbolt keeps keys in byte order, which is Go's string order: the
		// result comes sorted.
		return tx.Bucket([]byte(recordsBucket)).ForEach(func(k, v []byte) error {
			if r, ok := s.decode(k, v); ok && !s.expired(r, now) {
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load alert state from %s: %w", s.path, err)
	}
	return out, nil
}

// Merge applies the records of other writers, unfenced: each replaces the
// stored record of its key if it is newer (Updated later, or the same
// Updated and a higher Epoch) or if none is stored. Tombstones older than
// TombstoneTTL are ignored, as are records without a valid key (logged).
// It returns the records that changed the store, in the order given, so
// the caller can act on them; the whole merge is one transaction, and on
// error nothing was applied.
func (s *Store) Merge(ctx context.Context, recs []Record) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("merge alert state into %s: %w", s.path, err)
	}
	var applied []Record
	err := s.update(func(tx *bolt.Tx) error {
		now := s.now()
		if err := s.maybePrune(tx, now); err != nil {
			return err
		}
		b := tx.Bucket([]byte(recordsBucket))
		for _, r := range recs {
			if err := checkKey(r.Key); err != nil {
				s.log.Error("skipping a merged alert state record", "path", s.path, "key", r.Key, "err", err)
				continue
			}
			if s.expired(r, now) {
				continue
			}
			r.Updated = r.Updated.UTC()
			if r.Deleted {
				r.Instance = alerting.Instance{}
			}
			if cur, ok := s.decode([]byte(r.Key), b.Get([]byte(r.Key))); ok && !r.newerThan(cur) {
				continue
			}
			v, err := json.Marshal(r)
			if err != nil {
				// An Instance with an invalid State: nothing to keep.
				s.log.Error("skipping a merged alert state record", "path", s.path, "key", r.Key, "err", err)
				continue
			}
			if err := b.Put([]byte(r.Key), v); err != nil {
				return fmt.Errorf("key %s: %w", r.Key, err)
			}
			applied = append(applied, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("merge alert state into %s: %w", s.path, err)
	}
	return applied, nil
}

// expired reports whether r is a tombstone past the TTL as of now.
func (s *Store) expired(r Record, now time.Time) bool {
	return r.Deleted && r.Updated.Before(now.Add(-s.ttl))
}

// maybePrune removes the expired tombstones, unless it did so less than
// pruneEvery ago. A clock that stepped back prunes at once rather than
// waiting for it to catch up.
func (s *Store) maybePrune(tx *bolt.Tx, now time.Time) error {
	if !s.lastPrune.IsZero() && !now.Before(s.lastPrune) && now.Sub(s.lastPrune) < pruneEvery {
		return nil
	}
	s.lastPrune = now
	b := tx.Bucket([]byte(recordsBucket))
	// Collected first and deleted after: deleting under a bbolt cursor
	// can make it skip the next key.
	var expired [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if r, ok := s.decode(k, v); ok && s.expired(r, now) {
			// k lives in the transaction's pages, which the deletes
			// rewrite.
			expired = append(expired, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("prune tombstone %s: %w", k, err)
		}
	}
	return nil
}

// decode returns the record stored under k as v, and false if there is
// none or it cannot be decoded, which it logs.
func (s *Store) decode(k, v []byte) (Record, bool) {
	if v == nil {
		return Record{}, false
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		s.log.Error("skipping an undecodable alert state record", "path", s.path, "key", string(k), "err", err)
		return Record{}, false
	}
	// The bucket's key is the one lookups use; trust it over the copy
	// inside the value.
	r.Key = string(k)
	return r, true
}

// put stores r under its key.
func put(b *bolt.Bucket, r Record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(r.Key), v)
}

// checkKey refuses the keys bbolt cannot store.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case len(key) > bolt.MaxKeySize:
		return fmt.Errorf("key of %d bytes, longer than %d", len(key), bolt.MaxKeySize)
	}
	return nil
}

// parseEpoch decodes the stored fence; nil is 0, no TakeOver yet.
func parseEpoch(v []byte) (int64, error) {
	if v == nil {
		return 0, nil
	}
	e, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored epoch %q: %w", v, err)
	}
	return e, nil
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
