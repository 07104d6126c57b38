package silence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultRetention is how long an expired silence is kept before GC drops
// it, as Alertmanager's default.
const DefaultRetention = 5 * 24 * time.Hour

// DefaultGCInterval is how often Run collects garbage.
const DefaultGCInterval = time.Hour

// fileVersion is the format of the silences file; a reader refuses others.
const fileVersion = 1

// Options configure a Store. The zero value is usable.
type Options struct {
	// Retention is how long a silence is kept after it expired; zero means
	// DefaultRetention.
	Retention time.Duration
	// GCInterval is how often Run collects garbage; zero means
	// DefaultGCInterval.
	GCInterval time.Duration
	// Now is the clock of Set, Expire and Run, which take no time argument;
	// nil means time.Now.
	Now func() time.Time
	// Changed, when set, is given the silences each Set or Expire stored,
	// once they are on disk: how a node hands its operators' silences to
	// its peers. It is not called for Merge. It must not block.
	Changed func([]Silence)
}

// Store holds the silences and persists them to one JSON file. It is safe
// for concurrent use: Match and List read an immutable Snapshot without
// taking a lock, so an evaluation is never held up by a write in progress;
// writes are serialised and published only once they are on disk.
type Store struct {
	path string
	opts Options

	mu   sync.Mutex // serialises writes: read snap, change, persist, publish
	snap atomic.Pointer[Snapshot]
}

// file is the on-disk form.
type file struct {
	Version  int       `json:"version"`
	Silences []Silence `json:"silences"`
}

// Open returns the store persisted at path, loading it if the file exists.
// The directory is created if it is missing. A file that does not parse, or
// that holds a silence that is not valid, is refused rather than silently
// dropped: a lost silence pages people who were told they would not be.
func Open(path string, opts Options) (*Store, error) {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.GCInterval <= 0 {
		opts.GCInterval = DefaultGCInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open silences: %w", err)
	}
	s := &Store{path: path, opts: opts}
	snap, err := load(path)
	if err != nil {
		return nil, err
	}
	s.snap.Store(snap)
	return s, nil
}

func load(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Snapshot{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open silences: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read silences %s: %w", path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("read silences %s: format version %d, want %d", path, f.Version, fileVersion)
	}
	snap, err := NewSnapshot(f.Silences)
	if err != nil {
		return nil, fmt.Errorf("read silences %s: %w", path, err)
	}
	return snap, nil
}

// Set stores sil and returns its id. Without an ID, sil is a new silence.
// With one, it updates that silence (ErrNotFound if there is none) in place
// when that does not rewrite history: same matchers, and for an active
// silence the same start and an end not in the past. Otherwise, as in
// Alertmanager, the old silence is expired and sil is stored under a new id,
// so what was muted when stays on record.
//
// A zero StartsAt, or one in the past for a new silence, means now. Set
// refuses, with an error wrapping ErrInvalid that names each bad matcher, a
// silence without matchers, with a bad regular expression, whose matchers
// match every alert, without CreatedBy, or that does not end in the future
// and after it starts.
func (s *Store) Set(sil Silence) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.snap.Load().Set(sil, s.opts.Now())
	if err != nil {
		return "", err
	}
	if err := s.publish(c); err != nil {
		return "", err
	}
	s.changed(c)
	return c.ID, nil
}

// Expire ends the silence id now. Expiring an expired silence does nothing;
// an id the store does not hold gives an error wrapping ErrNotFound.
func (s *Store) Expire(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.snap.Load().Expire(id, s.opts.Now())
	if err != nil {
		return err
	}
	if err := s.publish(c); err != nil {
		return err
	}
	s.changed(c)
	return nil
}

// Merge takes in sils as another store holds them, with the rules of
// Snapshot.Merge, and persists what changed. It reports how many silences
// it took.
func (s *Store) Merge(sils []Silence) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.snap.Load().Merge(sils)
	if err != nil {
		return 0, err
	}
	return len(c.Stored), s.publish(c)
}

// changed hands c's stored silences to Options.Changed.
func (s *Store) changed(c Change) {
	if s.opts.Changed != nil && len(c.Stored) > 0 {
		s.opts.Changed(slices.Clone(c.Stored))
	}
}

// List returns every silence the store holds, active ones first, then
// pending, then expired; within each, those ending first come first. Each
// one's State(now) says where it stands.
func (s *Store) List(now time.Time) []Silence {
	return s.snap.Load().List(now)
}

// Match returns the id of a silence active at now that matches labels, or
// "" when none does. When several match, the lowest id wins, so repeated
// evaluations name the same one. It takes no lock and allocates nothing.
func (s *Store) Match(labels map[string]string, now time.Time) string {
	return s.snap.Load().Match(labels, now)
}

// MatchAlert is Match for an instance of rule whose labels do not hold the
// rule's name: matchers on "alertname" or "rule" see rule, so the caller
// need not copy the labels to add it.
func (s *Store) MatchAlert(rule string, labels map[string]string, now time.Time) string {
	return s.snap.Load().MatchAlert(rule, labels, now)
}

// GC drops the silences that expired at least the retention before now and
// returns how many it dropped.
func (s *Store) GC(now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.snap.Load().GC(now, s.opts.Retention)
	return len(c.Dropped), s.publish(c)
}

// Run collects garbage every Options.GCInterval and returns when ctx is
// done. A failed collection is retried at the next interval.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The next tick retries, and a silence kept a little longer
			// than its retention harms nobody.
			_, _ = s.GC(s.opts.Now())
		}
	}
}

// publish writes c's snapshot to disk and then makes it what readers see,
// so readers never see a change that a crash would lose. A change that
// changed nothing is not written. s.mu must be held.
func (s *Store) publish(c Change) error {
	if !c.Changed() {
		return nil
	}
	b, err := json.MarshalIndent(file{Version: fileVersion, Silences: c.Next.Silences()}, "", "  ")
	if err != nil {
		return fmt.Errorf("write silences %s: %w", s.path, err)
	}
	if err := writeFileAtomic(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("write silences: %w", err)
	}
	s.snap.Store(c.Next)
	return nil
}

// writeFileAtomic replaces path with b so that after a crash path holds
// either the old content or the new, never a part: write a temporary file
// in the same directory, sync it, rename it over path, and sync the
// directory so the rename itself is durable.
func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
