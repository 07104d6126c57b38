package silence

import (
	"cmp"
	"context"
	"crypto/rand"
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
}

// Store holds the silences and persists them to one JSON file. It is safe
// for concurrent use: Match and List read an immutable snapshot without
// taking a lock, so an evaluation is never held up by a write in progress;
// writes are serialised and published only once they are on disk.
type Store struct {
	path string
	opts Options

	mu   sync.Mutex // serialises writes: read snap, change, persist, publish
	snap atomic.Pointer[snapshot]
}

// snapshot is the store's content at one time. It is never changed once
// published; a write builds a new one.
type snapshot struct {
	entries []*entry // sorted by ID
}

type entry struct {
	Silence
	ms []compiled
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

func load(path string) (*snapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &snapshot{}, nil
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
	snap := &snapshot{entries: make([]*entry, 0, len(f.Silences))}
	seen := make(map[string]bool, len(f.Silences))
	for _, sil := range f.Silences {
		if sil.ID == "" || seen[sil.ID] {
			return nil, fmt.Errorf("read silences %s: silence with empty or duplicate id %q", path, sil.ID)
		}
		seen[sil.ID] = true
		ms, err := compileAll(sil.Matchers)
		if err != nil {
			return nil, fmt.Errorf("read silences %s: silence %s: %w", path, sil.ID, err)
		}
		snap.entries = append(snap.entries, &entry{Silence: sil, ms: ms})
	}
	slices.SortFunc(snap.entries, func(a, b *entry) int { return cmp.Compare(a.ID, b.ID) })
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
	ms, err := compileAll(sil.Matchers)
	if err != nil {
		return "", err
	}
	if sil.CreatedBy == "" {
		return "", fmt.Errorf("%w: createdBy is required", ErrInvalid)
	}
	sil.Matchers = slices.Clone(sil.Matchers)

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if sil.StartsAt.IsZero() {
		sil.StartsAt = now
	}
	if !sil.EndsAt.After(now) {
		return "", fmt.Errorf("%w: endsAt %s is not in the future", ErrInvalid, sil.EndsAt.Format(time.RFC3339))
	}
	if !sil.EndsAt.After(sil.StartsAt) {
		return "", fmt.Errorf("%w: endsAt %s is not after startsAt %s", ErrInvalid, sil.EndsAt.Format(time.RFC3339), sil.StartsAt.Format(time.RFC3339))
	}

	cur := s.snap.Load()
	next := slices.Clone(cur.entries)
	var prev *entry
	if sil.ID != "" {
		i, ok := find(next, sil.ID)
		if !ok {
			return "", fmt.Errorf("update silence %s: %w", sil.ID, ErrNotFound)
		}
		prev = next[i]
		if canUpdate(prev.Silence, sil, now) {
			sil.UpdatedAt = now
			next[i] = &entry{Silence: sil, ms: ms}
			return sil.ID, s.publish(next)
		}
		if prev.State(now) != StateExpired {
			old := prev.Silence
			old.Matchers = slices.Clone(old.Matchers)
			expire(&old, now)
			next[i] = &entry{Silence: old, ms: prev.ms}
		}
	}

	sil.ID = newID()
	if sil.StartsAt.Before(now) {
		sil.StartsAt = now
	}
	sil.UpdatedAt = now
	i, _ := find(next, sil.ID)
	next = slices.Insert(next, i, &entry{Silence: sil, ms: ms})
	return sil.ID, s.publish(next)
}

// canUpdate reports whether b may replace a under a's id without changing
// what a has already muted: Alertmanager's rule.
func canUpdate(a, b Silence, now time.Time) bool {
	if !slices.Equal(a.Matchers, b.Matchers) {
		return false
	}
	switch a.State(now) {
	case StateActive:
		// Second precision: clients echo the start back through JSON
		// and through people's editors.
		return b.StartsAt.Unix() == a.StartsAt.Unix() && !b.EndsAt.Before(now)
	case StatePending:
		return !b.StartsAt.Before(now)
	}
	return false
}

// expire ends sil at now; a pending silence never starts.
func expire(sil *Silence, now time.Time) {
	if now.Before(sil.StartsAt) {
		sil.StartsAt = now
	}
	sil.EndsAt = now
	sil.UpdatedAt = now
}

// Expire ends the silence id now. Expiring an expired silence does nothing;
// an id the store does not hold gives an error wrapping ErrNotFound.
func (s *Store) Expire(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	cur := s.snap.Load()
	i, ok := find(cur.entries, id)
	if !ok {
		return fmt.Errorf("expire silence %s: %w", id, ErrNotFound)
	}
	e := cur.entries[i]
	if e.State(now) == StateExpired {
		return nil
	}
	sil := e.Silence
	sil.Matchers = slices.Clone(sil.Matchers)
	expire(&sil, now)
	next := slices.Clone(cur.entries)
	next[i] = &entry{Silence: sil, ms: e.ms}
	return s.publish(next)
}

// List returns every silence the store holds, active ones first, then
// pending, then expired; within each, those ending first come first. Each
// one's State(now) says where it stands.
func (s *Store) List(now time.Time) []Silence {
	entries := s.snap.Load().entries
	out := make([]Silence, len(entries))
	for i, e := range entries {
		out[i] = e.Silence
		out[i].Matchers = slices.Clone(e.Matchers)
	}
	rank := map[State]int{StateActive: 0, StatePending: 1, StateExpired: 2}
	slices.SortStableFunc(out, func(a, b Silence) int {
		return cmp.Or(
			cmp.Compare(rank[a.State(now)], rank[b.State(now)]),
			a.EndsAt.Compare(b.EndsAt),
			cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Match returns the id of a silence active at now that matches labels, or
// "" when none does. When several match, the lowest id wins, so repeated
// evaluations name the same one. It takes no lock and allocates nothing.
func (s *Store) Match(labels map[string]string, now time.Time) string {
	return s.match(func(name string) string { return labels[name] }, now)
}

// MatchAlert is Match for an instance of rule whose labels do not hold the
// rule's name: matchers on "alertname" or "rule" see rule, so the caller
// need not copy the labels to add it.
func (s *Store) MatchAlert(rule string, labels map[string]string, now time.Time) string {
	return s.match(func(name string) string {
		if name == "alertname" || name == "rule" {
			return rule
		}
		return labels[name]
	}, now)
}

func (s *Store) match(label func(name string) string, now time.Time) string {
next:
	for _, e := range s.snap.Load().entries {
		if e.State(now) != StateActive {
			continue
		}
		for _, m := range e.ms {
			if !m.matches(label(m.Name)) {
				continue next
			}
		}
		return e.ID
	}
	return ""
}

// GC drops the silences that expired at least the retention before now and
// returns how many it dropped.
func (s *Store) GC(now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	next := slices.DeleteFunc(slices.Clone(cur.entries), func(e *entry) bool {
		return !now.Before(e.EndsAt.Add(s.opts.Retention))
	})
	n := len(cur.entries) - len(next)
	if n == 0 {
		return 0, nil
	}
	return n, s.publish(next)
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

// publish writes entries to disk and then makes them what readers see, so
// readers never see a change that a crash would lose. s.mu must be held.
func (s *Store) publish(entries []*entry) error {
	f := file{Version: fileVersion, Silences: make([]Silence, len(entries))}
	for i, e := range entries {
		f.Silences[i] = e.Silence
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("write silences %s: %w", s.path, err)
	}
	if err := writeFileAtomic(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("write silences: %w", err)
	}
	s.snap.Store(&snapshot{entries: entries})
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

func find(entries []*entry, id string) (int, bool) {
	return slices.BinarySearchFunc(entries, id, func(e *entry, id string) int { return cmp.Compare(e.ID, id) })
}

// newID returns a random (version 4) UUID, the form of Alertmanager's
// silence ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails, per crypto/rand
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
