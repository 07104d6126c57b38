package silence

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/fakeclock"
)

// t0 is the tests' epoch: every time is an offset from it.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// openStore opens a store in a fresh directory, its clock at t0.
func openStore(t *testing.T) (*Store, *fakeclock.Clock, string) {
	t.Helper()
	c := fakeclock.New(t0)
	path := filepath.Join(t.TempDir(), "silences.json")
	s, err := Open(path, Options{Now: c.Now})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s, c, path
}

func eq(name, value string) Matcher  { return Matcher{Name: name, Value: value, IsEqual: true} }
func neq(name, value string) Matcher { return Matcher{Name: name, Value: value} }
func re(name, value string) Matcher {
	return Matcher{Name: name, Value: value, IsRegex: true, IsEqual: true}
}
func nre(name, value string) Matcher { return Matcher{Name: name, Value: value, IsRegex: true} }

// mustSet stores a silence of ms from start to end (offsets from t0).
func mustSet(t *testing.T, s *Store, start, end time.Duration, ms ...Matcher) string {
	t.Helper()
	id, err := s.Set(Silence{Matchers: ms, StartsAt: t0.Add(start), EndsAt: t0.Add(end), CreatedBy: "alice", Comment: "test"})
	if err != nil {
		t.Fatalf("set %v: %v", ms, err)
	}
	return id
}

func TestMatchers(t *testing.T) {
	www1 := map[string]string{"host": "www1", "check": "http", "severity": "critical"}
	tests := []struct {
		name   string
		m      []Matcher
		labels map[string]string
		want   bool
	}{
		// The plain equality matcher.
		{"equal", []Matcher{eq("host", "www1")}, www1, true},
		{"equal other value", []Matcher{eq("host", "www2")}, www1, false},
		// != matches every other value, and a label the instance lacks.
		{"not equal", []Matcher{neq("host", "www2")}, www1, true},
		{"not equal same value", []Matcher{neq("host", "www1")}, www1, false},
		{"not equal missing label", []Matcher{eq("check", "http"), neq("team", "db")}, www1, true},
		// Regexps are anchored as Alertmanager anchors them.
		{"regex", []Matcher{re("host", "www.*")}, www1, true},
		{"regex anchored at start", []Matcher{re("host", "ww1")}, www1, false},
		{"regex anchored at end", []Matcher{re("host", "www")}, www1, false},
		{"regex alternation anchored as a whole", []Matcher{re("host", "db|www1")}, www1, true},
		{"regex alternation no partial", []Matcher{re("host", "db|www")}, www1, false},
		{"not regex", []Matcher{nre("host", "db.*")}, www1, true},
		{"not regex matching", []Matcher{nre("host", "www.*")}, www1, false},
		// A missing label reads as "", which an optional regexp matches.
		{"regex on missing label matching empty", []Matcher{eq("check", "http"), re("team", "(db)?")}, www1, true},
		{"regex on missing label", []Matcher{re("team", "db")}, www1, false},
		// Every matcher must match.
		{"all must match", []Matcher{eq("host", "www1"), eq("check", "ping")}, www1, false},
		{"all match", []Matcher{eq("host", "www1"), eq("check", "http"), eq("severity", "critical")}, www1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := openStore(t)
			id := mustSet(t, s, 0, time.Hour, tt.m...)
			got := s.Match(tt.labels, t0.Add(time.Minute))
			if (got == id) != tt.want || (got == "") == tt.want {
				t.Errorf("Match(%v) with %v = %q, want match %v (id %s)", tt.labels, matcherList(tt.m), got, tt.want, id)
			}
		})
	}
}

func TestMatchAlertSeesRuleName(t *testing.T) {
	s, _, _ := openStore(t)
	byName := mustSet(t, s, 0, time.Hour, eq("alertname", "www-http"), eq("host", "www1"))
	labels := map[string]string{"host": "www1", "check": "http"}
	now := t0.Add(time.Minute)
	if got := s.MatchAlert("www-http", labels, now); got != byName {
		t.Errorf("MatchAlert(www-http) = %q, want %q", got, byName)
	}
	if got := s.MatchAlert("www-ping", labels, now); got != "" {
		t.Errorf("MatchAlert(www-ping) = %q, want no silence", got)
	}
	byRule := mustSet(t, s, 0, time.Hour, re("rule", "db-.*"))
	if got := s.MatchAlert("db-lag", nil, now); got != byRule {
		t.Errorf("MatchAlert(db-lag) = %q, want %q", got, byRule)
	}
	// Without the rule name, a matcher on alertname sees "".
	if got := s.Match(labels, now); got != "" {
		t.Errorf("Match without alertname = %q, want no silence", got)
	}
}

func TestStateAndMatchFollowTime(t *testing.T) {
	s, _, _ := openStore(t)
	// Starts in 10 minutes, ends in an hour.
	id := mustSet(t, s, 10*time.Minute, time.Hour, eq("host", "db1"))
	labels := map[string]string{"host": "db1"}
	tests := []struct {
		name string
		at   time.Duration
		want State
	}{
		{"before the start: pending", 5 * time.Minute, StatePending},
		{"at the start: active", 10 * time.Minute, StateActive},
		{"inside the window: active", 30 * time.Minute, StateActive},
		{"at the end: expired", time.Hour, StateExpired},
		{"after the end: expired", 2 * time.Hour, StateExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(tt.at)
			list := s.List(now)
			if len(list) != 1 || list[0].ID != id {
				t.Fatalf("List = %+v, want just %s", list, id)
			}
			if got := list[0].State(now); got != tt.want {
				t.Errorf("state at +%v = %s, want %s", tt.at, got, tt.want)
			}
			wantMatch := ""
			if tt.want == StateActive {
				wantMatch = id
			}
			if got := s.Match(labels, now); got != wantMatch {
				t.Errorf("Match at +%v = %q, want %q", tt.at, got, wantMatch)
			}
		})
	}
}

func TestMatchPicksActiveOnly(t *testing.T) {
	s, c, _ := openStore(t)
	labels := map[string]string{"host": "db1", "check": "mysql"}
	pending := mustSet(t, s, time.Hour, 2*time.Hour, eq("host", "db1"))
	expired := mustSet(t, s, 0, time.Hour, eq("host", "db1"))
	c.Set(t0.Add(time.Minute))
	if err := s.Expire(expired); err != nil {
		t.Fatal(err)
	}
	other := mustSet(t, s, 0, time.Hour, eq("host", "db2"))
	now := t0.Add(2 * time.Minute)
	if got := s.Match(labels, now); got != "" {
		t.Fatalf("Match with only pending %s, expired %s and non-matching %s = %q, want none", pending, expired, other, got)
	}
	active := mustSet(t, s, 0, time.Hour, eq("check", "mysql"))
	if got := s.Match(labels, now); got != active {
		t.Errorf("Match = %q, want the active %s", got, active)
	}
}

func TestListOrder(t *testing.T) {
	s, c, _ := openStore(t)
	pending := mustSet(t, s, time.Hour, 2*time.Hour, eq("host", "a"))
	longActive := mustSet(t, s, 0, 3*time.Hour, eq("host", "b"))
	shortActive := mustSet(t, s, 0, time.Hour, eq("host", "c"))
	expired := mustSet(t, s, 0, time.Hour, eq("host", "d"))
	c.Set(t0.Add(time.Minute))
	if err := s.Expire(expired); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sil := range s.List(t0.Add(2 * time.Minute)) {
		got = append(got, sil.ID)
	}
	want := []string{shortActive, longActive, pending, expired}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("List order = %v, want active (ending first first), pending, expired: %v", got, want)
	}
}

func TestSetValidation(t *testing.T) {
	tests := []struct {
		name string
		sil  Silence
		want string // in the error
	}{
		// No matcher would mute everything.
		{"no matchers", Silence{EndsAt: t0.Add(time.Hour), CreatedBy: "a"}, "at least one matcher is required"},
		// Only matchers that match "" also match everything.
		{"match everything regex", Silence{Matchers: []Matcher{re("host", ".*")}, EndsAt: t0.Add(time.Hour), CreatedBy: "a"}, `matchers {host=~".*"} accept an empty value`},
		{"only empty values", Silence{Matchers: []Matcher{re("host", "(www.*)?"), eq("team", "")}, EndsAt: t0.Add(time.Hour), CreatedBy: "a"}, `matchers {host=~"(www.*)?", team=""} accept an empty value`},
		// A bad regexp is named by position and as written.
		{"bad regex", Silence{Matchers: []Matcher{eq("check", "http"), re("host", "www[")}, EndsAt: t0.Add(time.Hour), CreatedBy: "a"}, `matcher 2 (host=~"www["): bad regular expression`},
		// Every bad matcher is reported at once.
		{"two bad matchers", Silence{Matchers: []Matcher{nre("host", "(x"), eq("", "v")}, EndsAt: t0.Add(time.Hour), CreatedBy: "a"}, `matcher 1 (host!~"(x"): bad regular expression: error parsing regexp: missing closing ): ` + "`(x`" + `; matcher 2 (="v"): label name is empty`},
		// Nobody to ask about a silence nobody signed.
		{"no author", Silence{Matchers: []Matcher{eq("host", "www1")}, EndsAt: t0.Add(time.Hour)}, "createdBy is required"},
		// A window that is over before it is set.
		{"ends in the past", Silence{Matchers: []Matcher{eq("host", "www1")}, StartsAt: t0.Add(-2 * time.Hour), EndsAt: t0.Add(-time.Hour), CreatedBy: "a"}, "endsAt 2025-03-01T11:00:00Z is not in the future"},
		{"ends now", Silence{Matchers: []Matcher{eq("host", "www1")}, EndsAt: t0, CreatedBy: "a"}, "is not in the future"},
		{"no end", Silence{Matchers: []Matcher{eq("host", "www1")}, CreatedBy: "a"}, "endsAt 0001-01-01T00:00:00Z is not in the future"},
		// The end must come after the start.
		{"ends before it starts", Silence{Matchers: []Matcher{eq("host", "www1")}, StartsAt: t0.Add(2 * time.Hour), EndsAt: t0.Add(time.Hour), CreatedBy: "a"}, "endsAt 2025-03-01T13:00:00Z is not after startsAt 2025-03-01T14:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, path := openStore(t)
			id, err := s.Set(tt.sil)
			if err == nil {
				t.Fatalf("Set = %s, nil; want an error containing %q", id, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if len(s.List(t0)) != 0 {
				t.Errorf("refused silence is listed")
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused silence was written: stat %s: %v", path, err)
			}
		})
	}
}

func TestSetDefaultsStartToNow(t *testing.T) {
	s, _, _ := openStore(t)
	// No start, and a start in the past, both mean now.
	a := mustSet(t, s, 0, time.Hour, eq("host", "a"))
	id, err := s.Set(Silence{Matchers: []Matcher{eq("host", "b")}, EndsAt: t0.Add(time.Hour), CreatedBy: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	past := mustSet(t, s, -time.Hour, time.Hour, eq("host", "c"))
	for _, sil := range s.List(t0) {
		if !sil.StartsAt.Equal(t0) || !sil.UpdatedAt.Equal(t0) {
			t.Errorf("silence %s (%s, %s) starts %s, updated %s; want both now, %s", sil.ID, a, past, sil.StartsAt, sil.UpdatedAt, t0)
		}
	}
	if id == a || id == past || a == past {
		t.Errorf("ids not distinct: %s %s %s", a, id, past)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Errorf("id %q is not a version 4 UUID", id)
	}
}

func TestUpdate(t *testing.T) {
	s, c, _ := openStore(t)
	id := mustSet(t, s, 0, time.Hour, eq("host", "www1"))
	c.Set(t0.Add(10 * time.Minute))
	get := func(id string) Silence {
		t.Helper()
		for _, sil := range s.List(c.Now()) {
			if sil.ID == id {
				return sil
			}
		}
		t.Fatalf("silence %s not listed", id)
		return Silence{}
	}

	// Extending an active silence keeps its id.
	sil := get(id)
	sil.EndsAt = t0.Add(3 * time.Hour)
	sil.Comment = "longer"
	got, err := s.Set(sil)
	if err != nil || got != id {
		t.Fatalf("extend = %q, %v; want %s, nil", got, err, id)
	}
	if sil := get(id); !sil.EndsAt.Equal(t0.Add(3*time.Hour)) || sil.Comment != "longer" || !sil.UpdatedAt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("after extending: %+v", sil)
	}

	// Changing what it matches expires it and creates a new one, so the
	// record still says what was muted before.
	sil = get(id)
	sil.Matchers = []Matcher{re("host", "www.*")}
	newID, err := s.Set(sil)
	if err != nil {
		t.Fatal(err)
	}
	if newID == id {
		t.Fatalf("changing matchers kept id %s", id)
	}
	now := c.Now()
	if st := get(id).State(now); st != StateExpired {
		t.Errorf("old silence is %s, want expired", st)
	}
	if got := get(newID); got.State(now) != StateActive || !got.StartsAt.Equal(now) {
		t.Errorf("new silence %+v: want active from now", got)
	}
	if got := s.Match(map[string]string{"host": "www2"}, now); got != newID {
		t.Errorf("Match = %q, want the new %s", got, newID)
	}

	// An unknown id is not created behind the caller's back.
	sil.ID = "no-such-id"
	if _, err := s.Set(sil); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no-such-id") {
		t.Errorf("Set unknown id: %v, want ErrNotFound naming it", err)
	}
}

func TestExpire(t *testing.T) {
	s, c, _ := openStore(t)
	active := mustSet(t, s, 0, time.Hour, eq("host", "a"))
	pending := mustSet(t, s, time.Hour, 2*time.Hour, eq("host", "b"))
	c.Set(t0.Add(time.Minute))
	for _, id := range []string{active, pending} {
		if err := s.Expire(id); err != nil {
			t.Fatalf("expire %s: %v", id, err)
		}
	}
	// Expiring again is harmless.
	if err := s.Expire(active); err != nil {
		t.Errorf("expire twice: %v", err)
	}
	// Every later time sees both expired: the pending one never starts.
	for _, at := range []time.Duration{time.Minute, 90 * time.Minute} {
		for _, sil := range s.List(t0.Add(at)) {
			if st := sil.State(t0.Add(at)); st != StateExpired {
				t.Errorf("at +%v silence %s is %s, want expired", at, sil.ID, st)
			}
		}
		if got := s.Match(map[string]string{"host": "b"}, t0.Add(at)); got != "" {
			t.Errorf("at +%v expired silence %s still matches", at, got)
		}
	}
	if err := s.Expire("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("expire unknown: %v, want ErrNotFound naming it", err)
	}
}

func TestPersistAcrossReopen(t *testing.T) {
	s, c, path := openStore(t)
	a := mustSet(t, s, 0, time.Hour, re("host", "www.*"), neq("check", "ping"))
	b := mustSet(t, s, time.Hour, 2*time.Hour, eq("alertname", "db-lag"))
	c.Set(t0.Add(time.Minute))
	if err := s.Expire(b); err != nil {
		t.Fatal(err)
	}
	before := s.List(c.Now())

	r, err := Open(path, Options{Now: c.Now})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	after := r.List(c.Now())
	gotJSON, _ := json.Marshal(after)
	wantJSON, _ := json.Marshal(before)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("after reopen:\n%s\nwant\n%s", gotJSON, wantJSON)
	}
	// The reopened store's matchers work: compiled again on load.
	if got := r.Match(map[string]string{"host": "www7", "check": "http"}, c.Now()); got != a {
		t.Errorf("reopened Match = %q, want %s", got, a)
	}
	if got := r.Match(map[string]string{"host": "www7", "check": "ping"}, c.Now()); got != "" {
		t.Errorf("reopened Match with check=ping = %q, want none", got)
	}
}

func TestOpenRefusesBadFile(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		// A truncated or hand-mangled file.
		{"not json", `{"version": 1, "silences": [`, "unexpected end of JSON input"},
		// A file from a later dmonitor.
		{"other version", `{"version": 2, "silences": []}`, "format version 2, want 1"},
		// A hand-edited silence with a regexp that does not compile.
		{"bad regex", `{"version": 1, "silences": [{"id": "s1", "matchers": [{"name": "host", "value": "(", "isRegex": true, "isEqual": true}]}]}`, `silence s1: invalid silence: matcher 1 (host=~"(")`},
		// Two silences under one id.
		{"duplicate id", `{"version": 1, "silences": [{"id": "s1", "matchers": [{"name": "host", "value": "a", "isEqual": true}]}, {"id": "s1", "matchers": [{"name": "host", "value": "b", "isEqual": true}]}]}`, `duplicate id "s1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "silences.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, Options{})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error naming %s and containing %q", err, path, tt.want)
			}
		})
	}
}

func TestWriteIsAtomic(t *testing.T) {
	s, _, path := openStore(t)
	keep := mustSet(t, s, 0, time.Hour, eq("host", "a"))
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A change is written whole, leaving no temporary file behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 || entries[0].Name() != "silences.json" {
		t.Errorf("directory holds %v, want only silences.json", entries)
	}
	var f file
	if err := json.Unmarshal(good, &f); err != nil || len(f.Silences) != 1 || f.Silences[0].ID != keep {
		t.Fatalf("file = %s (%v), want one silence %s", good, err, keep)
	}

	// When the file cannot be replaced, the change is refused: neither
	// the file nor what Match sees changes, and no temporary file stays.
	// A directory in the file's place makes the rename fail even for root.
	blocked := filepath.Join(t.TempDir(), "silences.json")
	b, err := Open(blocked, Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(blocked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blocked, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := b.Set(Silence{Matchers: []Matcher{eq("host", "a")}, EndsAt: t0.Add(time.Hour), CreatedBy: "a"}); err == nil || !strings.Contains(err.Error(), blocked) {
		t.Fatalf("Set over a directory = %s, %v; want an error naming %s", id, err, blocked)
	}
	if got := b.Match(map[string]string{"host": "a"}, t0); got != "" || len(b.List(t0)) != 0 {
		t.Errorf("unwritten silence visible: Match = %q, List = %v", got, b.List(t0))
	}
	entries, _ = os.ReadDir(filepath.Dir(blocked))
	if len(entries) != 1 {
		t.Errorf("temporary file left behind: %v", entries)
	}
}

func TestGC(t *testing.T) {
	s, c, path := openStore(t)
	old := mustSet(t, s, 0, time.Hour, eq("host", "a"))
	recent := mustSet(t, s, 0, 3*24*time.Hour, eq("host", "b"))
	running := mustSet(t, s, 0, 30*24*time.Hour, eq("host", "c"))
	// old ended at +1h, recent at +3d; retention is 5 days.
	tests := []struct {
		name string
		at   time.Duration
		want []string // what is left
	}{
		{"just before old's retention ends", time.Hour + DefaultRetention - time.Second, []string{old, recent, running}},
		{"at old's retention end", time.Hour + DefaultRetention, []string{recent, running}},
		{"after recent's retention", 3*24*time.Hour + DefaultRetention, []string{running}},
	}
	for _, tt := range tests {
		n0 := len(s.List(t0))
		n, err := s.GC(t0.Add(tt.at))
		if err != nil {
			t.Fatalf("%s: GC: %v", tt.name, err)
		}
		left := s.List(t0)
		if n != n0-len(left) || len(left) != len(tt.want) {
			t.Errorf("%s: GC dropped %d, %d left; want %d left", tt.name, n, len(left), len(tt.want))
		}
		for _, id := range tt.want {
			found := false
			for _, sil := range left {
				found = found || sil.ID == id
			}
			if !found {
				t.Errorf("%s: %s was dropped", tt.name, id)
			}
		}
	}
	// What GC drops is gone from disk too.
	c.Set(t0.Add(40 * 24 * time.Hour))
	r, err := Open(path, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.List(c.Now()); len(got) != 1 || got[0].ID != running {
		t.Errorf("after reopen: %+v, want only %s", got, running)
	}
}

// TestConcurrentUse runs the engine's reads against the API's writes; -race
// checks that Match needs no lock.
func TestConcurrentUse(t *testing.T) {
	s, _, _ := openStore(t)
	labels := map[string]string{"host": "www1"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				s.Match(labels, t0)
				s.List(t0)
			}
		}
	})
	var ids []string
	for range 20 {
		ids = append(ids, mustSet(t, s, 0, time.Hour, eq("host", "www1")))
	}
	for _, id := range ids[:10] {
		if err := s.Expire(id); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if got := s.Match(labels, t0.Add(time.Second)); got == "" {
		t.Errorf("no match with 10 active silences")
	}
}

func TestRunCollects(t *testing.T) {
	c := fakeclock.New(t0)
	s, err := Open(filepath.Join(t.TempDir(), "silences.json"), Options{Now: c.Now, GCInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, s, 0, time.Hour, eq("host", "a"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Past the retention, the next collection drops the silence.
	c.Set(t0.Add(time.Hour + DefaultRetention))
	for deadline := time.Now().Add(10 * time.Second); len(s.List(c.Now())) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("Run did not collect the expired silence within 10s")
		}
		time.Sleep(5 * time.Millisecond) // the poll interval, not a wait for the event
	}
}

// TestMerge: a peer's silences are taken in by id, the later UpdatedAt
// winning, persisted, and not handed on again; an operator's Set and
// Expire are handed on.
func TestMerge(t *testing.T) {
	var handed [][]Silence
	c := fakeclock.New(t0)
	path := filepath.Join(t.TempDir(), "silences.json")
	s, err := Open(path, Options{Now: c.Now, Changed: func(sils []Silence) { handed = append(handed, sils) }})
	if err != nil {
		t.Fatal(err)
	}
	mine := mustSet(t, s, 0, time.Hour, eq("host", "www1"))
	if len(handed) != 1 || handed[0][0].ID != mine {
		t.Fatalf("Set handed on %v, want the new silence", handed)
	}
	held := s.List(t0)[0]
	theirs := Silence{ID: "peer-1", Matchers: []Matcher{eq("host", "db1")}, StartsAt: t0, EndsAt: t0.Add(time.Hour),
		CreatedBy: "bob", UpdatedAt: t0.Add(time.Second)}
	older, newer := held, held
	older.Comment, older.UpdatedAt = "older", held.UpdatedAt.Add(-time.Second)
	newer.Comment, newer.UpdatedAt = "newer", held.UpdatedAt.Add(time.Second)

	steps := []struct {
		name  string
		in    []Silence
		taken int
	}{
		// A silence this store never saw is added as it is.
		{"unknown", []Silence{theirs}, 1},
		// The same again changes nothing.
		{"same", []Silence{theirs}, 0},
		// An older version of one held loses.
		{"older", []Silence{older}, 0},
		// A newer version wins.
		{"newer", []Silence{newer}, 1},
	}
	for _, st := range steps {
		n, err := s.Merge(st.in)
		if err != nil || n != st.taken {
			t.Errorf("%s: Merge = %d, %v; want %d taken", st.name, n, err, st.taken)
		}
	}
	if _, err := s.Merge([]Silence{{ID: "bad", Matchers: []Matcher{re("host", "(")}, CreatedBy: "x"}, {ID: "other", Matchers: []Matcher{eq("a", "b")}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bad matcher: Merge error %v, want ErrInvalid", err)
	}
	if len(handed) != 1 {
		t.Errorf("Merge handed silences on: %v", handed[1:])
	}
	if got := s.Match(map[string]string{"host": "db1"}, t0.Add(time.Minute)); got != "peer-1" {
		t.Errorf("the peer's silence matches %q, want peer-1", got)
	}

	// What was merged is on disk.
	r, err := Open(path, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	var comments []string
	for _, sil := range r.List(t0) {
		comments = append(comments, sil.ID+":"+sil.Comment)
	}
	if want := []string{mine + ":newer", "peer-1:"}; !slices.Equal(comments, want) && !slices.Equal(comments, []string{want[1], want[0]}) {
		t.Errorf("reopened store holds %v, want %v", comments, want)
	}
	if id := r.Match(map[string]string{"a": "b"}, t0.Add(time.Minute)); id != "" {
		t.Errorf("silence %s of the refused batch was taken", id)
	}

	if err := s.Expire(mine); err != nil {
		t.Fatal(err)
	}
	if len(handed) != 2 || handed[1][0].ID != mine || handed[1][0].State(c.Now()) != StateExpired {
		t.Errorf("Expire handed on %v, want the expired silence", handed[1:])
	}
}
