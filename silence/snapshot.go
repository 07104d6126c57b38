package silence

import (
	"cmp"
	"crypto/rand"
	"fmt"
	"slices"
	"time"
)

// Snapshot is a set of valid silences at one time, their matchers compiled.
// It is never changed: Set, Expire and GC return the next one, so a store
// can publish it with one atomic pointer swap and readers match without a
// lock. It holds the rules every store shares (validation, updates that
// would rewrite history, expiry, retention), so a store only persists what
// a Change says and publishes Change.Next.
//
// The zero Snapshot, and a nil *Snapshot, hold no silence.
type Snapshot struct {
	entries []*entry // sorted by ID
}

type entry struct {
	Silence
	ms []compiled
}

// Change is what a write does to a Snapshot.
type Change struct {
	// Next is the snapshot after the write.
	Next *Snapshot
	// ID is the id of the silence Set stored; "" for Expire and GC.
	ID string
	// Stored are the silences the write created or changed, to be
	// persisted: Set may store two, the old silence it expired and the
	// new one.
	Stored []Silence
	// Dropped are the ids GC removed.
	Dropped []string
}

// Changed reports whether c changed anything a store has to persist.
func (c Change) Changed() bool { return len(c.Stored) > 0 || len(c.Dropped) > 0 }

// NewSnapshot returns the snapshot of sils, as read back from storage. It
// refuses a silence with an empty or duplicate id, or with matchers Set
// would refuse, rather than drop it: a lost silence pages people who were
// told they would not be.
func NewSnapshot(sils []Silence) (*Snapshot, error) {
	snap := &Snapshot{entries: make([]*entry, 0, len(sils))}
	seen := make(map[string]bool, len(sils))
	for _, sil := range sils {
		if sil.ID == "" || seen[sil.ID] {
			return nil, fmt.Errorf("silence with empty or duplicate id %q", sil.ID)
		}
		seen[sil.ID] = true
		ms, err := compileAll(sil.Matchers)
		if err != nil {
			return nil, fmt.Errorf("silence %s: %w", sil.ID, err)
		}
		snap.entries = append(snap.entries, &entry{Silence: sil, ms: ms})
	}
	slices.SortFunc(snap.entries, func(a, b *entry) int { return cmp.Compare(a.ID, b.ID) })
	return snap, nil
}

func (s *Snapshot) all() []*entry {
	if s == nil {
		return nil
	}
	return s.entries
}

// Silences returns every silence of s, ordered by id, as a store persists
// them.
func (s *Snapshot) Silences() []Silence {
	out := make([]Silence, len(s.all()))
	for i, e := range s.all() {
		out[i] = e.Silence
		out[i].Matchers = slices.Clone(e.Matchers)
	}
	return out
}

// Set returns the change that stores sil at now, with the rules of
// Store.Set: a new silence without an ID; with one, an update in place when
// it does not rewrite history, else the old silence expired and sil stored
// under a new id. Errors wrap ErrInvalid for a malformed silence and
// ErrNotFound for an id s does not hold.
func (s *Snapshot) Set(sil Silence, now time.Time) (Change, error) {
	ms, err := compileAll(sil.Matchers)
	if err != nil {
		return Change{}, err
	}
	if sil.CreatedBy == "" {
		return Change{}, fmt.Errorf("%w: createdBy is required", ErrInvalid)
	}
	sil.Matchers = slices.Clone(sil.Matchers)
	if sil.StartsAt.IsZero() {
		sil.StartsAt = now
	}
	if !sil.EndsAt.After(now) {
		return Change{}, fmt.Errorf("%w: endsAt %s is not in the future", ErrInvalid, sil.EndsAt.Format(time.RFC3339))
	}
	if !sil.EndsAt.After(sil.StartsAt) {
		return Change{}, fmt.Errorf("%w: endsAt %s is not after startsAt %s", ErrInvalid, sil.EndsAt.Format(time.RFC3339), sil.StartsAt.Format(time.RFC3339))
	}

	next := slices.Clone(s.all())
	var c Change
	if sil.ID != "" {
		i, ok := find(next, sil.ID)
		if !ok {
			return Change{}, fmt.Errorf("update silence %s: %w", sil.ID, ErrNotFound)
		}
		prev := next[i]
		if canUpdate(prev.Silence, sil, now) {
			sil.UpdatedAt = now
			next[i] = &entry{Silence: sil, ms: ms}
			return Change{Next: &Snapshot{next}, ID: sil.ID, Stored: []Silence{sil}}, nil
		}
		if prev.State(now) != StateExpired {
			old := prev.Silence
			old.Matchers = slices.Clone(old.Matchers)
			expire(&old, now)
			next[i] = &entry{Silence: old, ms: prev.ms}
			c.Stored = append(c.Stored, old)
		}
	}

	sil.ID = newID()
	if sil.StartsAt.Before(now) {
		sil.StartsAt = now
	}
	sil.UpdatedAt = now
	i, _ := find(next, sil.ID)
	c.Next = &Snapshot{slices.Insert(next, i, &entry{Silence: sil, ms: ms})}
	c.ID = sil.ID
	c.Stored = append(c.Stored, sil)
	return c, nil
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

// Expire returns the change that ends the silence id at now. Expiring an
// expired silence changes nothing; an id s does not hold gives an error
// wrapping ErrNotFound.
func (s *Snapshot) Expire(id string, now time.Time) (Change, error) {
	i, ok := find(s.all(), id)
	if !ok {
		return Change{}, fmt.Errorf("expire silence %s: %w", id, ErrNotFound)
	}
	e := s.entries[i]
	if e.State(now) == StateExpired {
		return Change{Next: s}, nil
	}
	sil := e.Silence
	sil.Matchers = slices.Clone(sil.Matchers)
	expire(&sil, now)
	next := slices.Clone(s.entries)
	next[i] = &entry{Silence: sil, ms: e.ms}
	return Change{Next: &Snapshot{next}, Stored: []Silence{sil}}, nil
}

// Merge returns the change that takes in sils as another store holds
// them (a peer's): a silence s does not hold is added as it is, and one it
// holds is replaced when the other's UpdatedAt is later. Every change goes
// through Set or Expire on some store, which stamps UpdatedAt, so the
// latest write of each silence wins on every store. A silence whose
// matchers do not compile is refused with ErrInvalid, and nothing is
// taken.
func (s *Snapshot) Merge(sils []Silence) (Change, error) {
	next := slices.Clone(s.all())
	c := Change{Next: s}
	for _, sil := range sils {
		if sil.ID == "" {
			return Change{}, fmt.Errorf("%w: merge a silence without an id", ErrInvalid)
		}
		ms, err := compileAll(sil.Matchers)
		if err != nil {
			return Change{}, fmt.Errorf("merge silence %s: %w", sil.ID, err)
		}
		sil.Matchers = slices.Clone(sil.Matchers)
		i, ok := find(next, sil.ID)
		switch {
		case !ok:
			next = slices.Insert(next, i, &entry{Silence: sil, ms: ms})
		case sil.UpdatedAt.After(next[i].UpdatedAt):
			next[i] = &entry{Silence: sil, ms: ms}
		default:
			continue
		}
		c.Stored = append(c.Stored, sil)
	}
	if len(c.Stored) > 0 {
		c.Next = &Snapshot{next}
	}
	return c, nil
}

// GC returns the change that drops the silences that expired at least
// retention before now.
func (s *Snapshot) GC(now time.Time, retention time.Duration) Change {
	c := Change{Next: s}
	next := slices.DeleteFunc(slices.Clone(s.all()), func(e *entry) bool {
		if now.Before(e.EndsAt.Add(retention)) {
			return false
		}
		c.Dropped = append(c.Dropped, e.ID)
		return true
	})
	if len(c.Dropped) > 0 {
		c.Next = &Snapshot{next}
	}
	return c
}

// List returns every silence of s, active ones first, then pending, then
// expired; within each, those ending first come first. Each one's
// State(now) says where it stands.
func (s *Snapshot) List(now time.Time) []Silence {
	out := s.Silences()
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
// evaluations name the same one. It allocates nothing.
func (s *Snapshot) Match(labels map[string]string, now time.Time) string {
	return s.match(func(name string) string { return labels[name] }, now)
}

// MatchAlert is Match for an instance of rule whose labels do not hold the
// rule's name: matchers on "alertname" or "rule" see rule, so the caller
// need not copy the labels to add it.
func (s *Snapshot) MatchAlert(rule string, labels map[string]string, now time.Time) string {
	return s.match(func(name string) string {
		if name == "alertname" || name == "rule" {
			return rule
		}
		return labels[name]
	}, now)
}

func (s *Snapshot) match(label func(name string) string, now time.Time) string {
next:
	for _, e := range s.all() {
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
