package localstate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dmonitor/dmonitor/alerting"
)

// The crash test runs a writer as a child process: this test binary,
// re-executed with crashChildEnv set to the state file's path, runs
// crashChild instead of the tests.
const crashChildEnv = "DMONITOR_LOCALSTATE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(crashChild(path))
	}
	os.Exit(m.Run())
}

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// openStore opens the store at path, closed when the test ends.
func openStore(t *testing.T, path string, o Options) *Store {
	t.Helper()
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// clockAt returns a clock reading *now, for Options.Now.
func clockAt(now *time.Time) func() time.Time { return func() time.Time { return *now } }

// firing is a firing instance of www-http on host, with an open incident
// and annotations.
func firing(host string) alerting.Instance {
	return alerting.Instance{
		Rule:        "www-http",
		Labels:      map[string]string{"host": host, "check": "http", "severity": "critical"},
		State:       alerting.Firing,
		ActiveAt:    base.Add(-5 * time.Minute),
		FiredAt:     base.Add(-2 * time.Minute),
		LastEval:    base,
		Repeats:     1,
		Annotations: map[string]string{"summary": host + " http down", "outputs": "obs1: CRITICAL - timeout"},
	}
}

// normalize makes equal times compare equal with reflect.DeepEqual,
// whatever their location.
func normalize(i alerting.Instance) alerting.Instance {
	for _, t := range []*time.Time{&i.ActiveAt, &i.FiredAt, &i.ResolvedAt, &i.LastEval, &i.KeepFiringSince, &i.AckedAt} {
		*t = t.UTC()
	}
	return i
}

func sameRecord(a, b Record) bool {
	a.Updated, b.Updated = a.Updated.UTC(), b.Updated.UTC()
	a.Instance, b.Instance = normalize(a.Instance), normalize(b.Instance)
	return reflect.DeepEqual(a, b)
}

// checkInstances fails t unless got holds exactly want.
func checkInstances(t *testing.T, got, want map[string]alerting.Instance) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s missing", k)
			continue
		}
		if !reflect.DeepEqual(normalize(g), normalize(w)) {
			t.Errorf("%s:\n got %+v\nwant %+v", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %+v", k, got[k])
		}
	}
}

// checkRecords fails t unless got is want, in order.
func checkRecords(t *testing.T, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if !sameRecord(got[i], want[i]) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func loadAll(t *testing.T, s *Store) map[string]alerting.Instance {
	t.Helper()
	got, err := s.LoadAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func records(t *testing.T, s *Store) []Record {
	t.Helper()
	got, err := s.Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// storedKeys returns every key in the file, the expired tombstones that
// Records hides included.
func storedKeys(t *testing.T, s *Store) []string {
	t.Helper()
	var keys []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(recordsBucket)).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "data", "alerts.db")
	now := base
	s := openStore(t, path, Options{Now: clockAt(&now)})
	if err := s.TakeOver(ctx, 3); err != nil {
		t.Fatal(err)
	}

	acked, _ := firing("www2").Acknowledge("alice", "on it", base.Add(-time.Minute))
	acked.State = alerting.Acknowledged
	suppressed := firing("www3")
	suppressed.State, suppressed.FiredAt, suppressed.Reason = alerting.Suppressed, time.Time{}, `parent "host-up" is firing`
	unknown := firing("www4")
	unknown.State, unknown.Reason = alerting.Unknown, "1 fresh observers, quorum is 2"
	saved := map[string]alerting.Instance{
		"www-http\x00www1\x00http": firing("www1"),
		"www-http\x00www2\x00http": acked,
		"www-http\x00www3\x00http": suppressed,
		"www-http\x00www4\x00http": unknown,
	}
	for k, inst := range saved {
		if err := s.Save(ctx, 3, k, inst); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart, what was saved is back, and so is the fence.
	s = openStore(t, path, Options{Now: clockAt(&now)})
	checkInstances(t, loadAll(t, s), saved)
	if got := s.Epoch(); got != 3 {
		t.Errorf("Epoch after reopening = %d, want 3", got)
	}
	for _, r := range records(t, s) {
		if !r.Updated.Equal(base) || r.Epoch != 3 || r.Deleted {
			t.Errorf("record %s: updated %s, epoch %d, deleted %v; want %s, 3, false", r.Key, r.Updated, r.Epoch, r.Deleted, base)
		}
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "dmonitor")
	path := filepath.Join(dir, "alerts.db")
	openStore(t, path, Options{})
	for p, most := range map[string]os.FileMode{dir: 0o750, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&^most != 0 {
			t.Errorf("%s has mode %v, want at most %v: the state is not everyone's to read", p, perm, most)
		}
	}
}

func TestOpenErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	notBolt := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notBolt, []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
	}{
		// The path is a directory, not a file.
		{"directory", dir},
		// Some other file is in the way.
		{"not a bbolt file", notBolt},
		// The parent directory cannot be created.
		{"parent is a file", filepath.Join(blocker, "alerts.db")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, Options{})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.db")
	openStore(t, path, Options{})

	s, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		_ = s.Close()
		t.Fatal("a second Open of the same file succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "locked by another process?") {
		t.Errorf("error %q: want it to name %s and say it is locked", msg, path)
	}
}

func TestDeleteLeavesTombstone(t *testing.T) {
	ctx := context.Background()
	now := base
	s := openStore(t, filepath.Join(t.TempDir(), "alerts.db"), Options{Now: clockAt(&now)})
	if err := s.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if err := s.Save(ctx, 1, k, firing(k)); err != nil {
			t.Fatal(err)
		}
	}
	now = base.Add(time.Minute)
	// a resolves; "never" was not stored, but a peer may hold it.
	for _, k := range []string{"a", "never"} {
		if err := s.Delete(ctx, 1, k); err != nil {
			t.Fatal(err)
		}
	}

	checkInstances(t, loadAll(t, s), map[string]alerting.Instance{"b": firing("b")})
	checkRecords(t, records(t, s), []Record{
		{Key: "a", Deleted: true, Updated: now, Epoch: 1},
		{Key: "b", Instance: firing("b"), Updated: base, Epoch: 1},
		{Key: "never", Deleted: true, Updated: now, Epoch: 1},
	})
}

func TestFencing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "alerts.db"), Options{})

	// Before any TakeOver nobody may write: there is no current term.
	if err := s.Save(ctx, 1, "k", firing("w")); !errors.Is(err, alerting.ErrFenced) {
		t.Fatalf("Save before TakeOver: %v, want ErrFenced", err)
	}
	if err := s.TakeOver(ctx, 5); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		write  func() error
		fenced bool
	}{
		// The current term writes.
		{"save with the current epoch", func() error { return s.Save(ctx, 5, "ok", firing("w")) }, false},
		{"delete with the current epoch", func() error { return s.Delete(ctx, 5, "ok-gone") }, false},
		// A term that has ended may not.
		{"save with an older epoch", func() error { return s.Save(ctx, 4, "stale", firing("w")) }, true},
		{"delete with an older epoch", func() error { return s.Delete(ctx, 4, "ok") }, true},
		// Nor one this store was not told about.
		{"save with a newer epoch", func() error { return s.Save(ctx, 6, "stale", firing("w")) }, true},
		// 0 is no term, even if the fence were 0.
		{"save with epoch 0", func() error { return s.Save(ctx, 0, "stale", firing("w")) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.write()
			if got := errors.Is(err, alerting.ErrFenced); got != tc.fenced {
				t.Errorf("error %v: fenced %v, want %v", err, got, tc.fenced)
			}
			if !tc.fenced && err != nil {
				t.Error(err)
			}
		})
	}
	// The refused writes left nothing behind.
	checkInstances(t, loadAll(t, s), map[string]alerting.Instance{"ok": firing("w")})
}

func TestTakeOver(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "alerts.db")
	s := openStore(t, path, Options{})

	for _, epoch := range []int64{0, -1} {
		if err := s.TakeOver(ctx, epoch); err == nil {
			t.Errorf("TakeOver(%d) succeeded", epoch)
		}
	}
	if got := s.Epoch(); got != 0 {
		t.Fatalf("Epoch after refused TakeOvers = %d, want 0", got)
	}

	if err := s.TakeOver(ctx, 7); err != nil {
		t.Fatal(err)
	}
	// A smaller epoch takes over too. Epochs come from different lease
	// sources: a Redis counter starts again at 1 when Redis loses its
	// data, and a node may switch between Redis and peer-mode epochs. The
	// lease decides who leads; the store only stops the term before.
	if err := s.TakeOver(ctx, 3); err != nil {
		t.Fatalf("TakeOver with a smaller epoch: %v", err)
	}
	if got := s.Epoch(); got != 3 {
		t.Errorf("Epoch = %d, want 3", got)
	}
	if err := s.Save(ctx, 7, "k", firing("w")); !errors.Is(err, alerting.ErrFenced) {
		t.Errorf("Save by the previous term: %v, want ErrFenced", err)
	}

	// The fence is durable: after a restart the old term is still out.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, Options{})
	if got := s.Epoch(); got != 3 {
		t.Errorf("Epoch after reopening = %d, want 3", got)
	}
	if err := s.Save(ctx, 7, "k", firing("w")); !errors.Is(err, alerting.ErrFenced) {
		t.Errorf("Save by the previous term after reopening: %v, want ErrFenced", err)
	}
	if err := s.Save(ctx, 3, "k", firing("w")); err != nil {
		t.Errorf("Save by the current term after reopening: %v", err)
	}
}

func TestMerge(t *testing.T) {
	ctx := context.Background()
	stored, incoming := firing("w"), firing("w")
	incoming.State, incoming.AckedAt, incoming.AckedBy = alerting.Acknowledged, base, "bob"

	// Each case starts with "k" saved (live) or deleted (tomb) at base in
	// epoch 2, or with nothing stored, and merges in.
	const (
		nothing = iota
		live
		tomb
	)
	rec := func(inst alerting.Instance, deleted bool, updated time.Time, epoch int64) Record {
		return Record{Key: "k", Instance: inst, Deleted: deleted, Updated: updated, Epoch: epoch}
	}
	for _, tc := range []struct {
		name    string
		stored  int
		in      Record
		applied bool
		want    *alerting.Instance // what LoadAll then holds under "k"
	}{
		// Nothing stored: any record is news.
		{"unknown key", nothing, rec(incoming, false, base.Add(-time.Hour), 1), true, &incoming},
		// Written after the stored one: it replaces it.
		{"newer live replaces live", live, rec(incoming, false, base.Add(time.Second), 1), true, &incoming},
		// Written before: a peer that missed the stored write.
		{"older live ignored", live, rec(incoming, false, base.Add(-time.Second), 3), false, &stored},
		// Written at the same instant: the later term wins.
		{"equal updated, higher epoch wins", live, rec(incoming, false, base, 3), true, &incoming},
		{"equal updated, lower epoch loses", live, rec(incoming, false, base, 1), false, &stored},
		// This store's own record, coming back from a peer.
		{"identical record", live, rec(stored, false, base, 2), false, &stored},
		// The incident resolved after the stored write.
		{"tombstone beats older live", live, rec(alerting.Instance{}, true, base.Add(time.Second), 2), true, nil},
		// The incident opened again after that resolution.
		{"older tombstone loses to live", live, rec(alerting.Instance{}, true, base.Add(-time.Second), 2), false, &stored},
		{"newer live beats tombstone", tomb, rec(incoming, false, base.Add(time.Second), 2), true, &incoming},
		// A peer that never saw the resolution cannot resurrect it.
		{"older live loses to tombstone", tomb, rec(incoming, false, base.Add(-time.Second), 2), false, nil},
		// Forgotten by now everywhere: it must not come back from a peer
		// either.
		{"expired tombstone ignored", nothing, rec(alerting.Instance{}, true, base.Add(-25*time.Hour), 2), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := base
			s := openStore(t, filepath.Join(t.TempDir(), "alerts.db"), Options{Now: clockAt(&now)})
			if err := s.TakeOver(ctx, 2); err != nil {
				t.Fatal(err)
			}
			switch tc.stored {
			case live:
				if err := s.Save(ctx, 2, "k", stored); err != nil {
					t.Fatal(err)
				}
			case tomb:
				if err := s.Delete(ctx, 2, "k"); err != nil {
					t.Fatal(err)
				}
			}
			before := records(t, s)

			applied, err := s.Merge(ctx, []Record{tc.in})
			if err != nil {
				t.Fatal(err)
			}
			if tc.applied {
				checkRecords(t, applied, []Record{tc.in})
				checkRecords(t, records(t, s), []Record{tc.in})
			} else {
				checkRecords(t, applied, nil)
				checkRecords(t, records(t, s), before)
			}
			want := map[string]alerting.Instance{}
			if tc.want != nil {
				want["k"] = *tc.want
			}
			checkInstances(t, loadAll(t, s), want)
		})
	}
}

func TestMergeReturnsApplied(t *testing.T) {
	ctx := context.Background()
	now := base
	s := openStore(t, filepath.Join(t.TempDir(), "alerts.db"), Options{Now: clockAt(&now)})
	if err := s.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"newer", "older", "same"} {
		if err := s.Save(ctx, 1, k, firing(k)); err != nil {
			t.Fatal(err)
		}
	}
	in := []Record{
		{Key: "newer", Instance: firing("newer2"), Updated: base.Add(time.Minute), Epoch: 1},
		{Key: "older", Instance: firing("older2"), Updated: base.Add(-time.Minute), Epoch: 1},
		{Key: "same", Instance: firing("same"), Updated: base, Epoch: 1},
		{Key: "added", Instance: firing("added"), Updated: base, Epoch: 9},
		{Key: "expired", Deleted: true, Updated: base.Add(-48 * time.Hour), Epoch: 1},
		{Key: "", Instance: firing("nokey"), Updated: base, Epoch: 1},
	}
	applied, err := s.Merge(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, applied, []Record{in[0], in[3]})
	checkInstances(t, loadAll(t, s), map[string]alerting.Instance{
		"newer": firing("newer2"), "older": firing("older"), "same": firing("same"), "added": firing("added"),
	})
}

func TestSaveSupersedesAfterClockStepBack(t *testing.T) {
	ctx := context.Background()
	now := base
	leader := openStore(t, filepath.Join(t.TempDir(), "leader.db"), Options{Now: clockAt(&now)})
	peer := openStore(t, filepath.Join(t.TempDir(), "peer.db"), Options{Now: clockAt(&now)})
	if err := leader.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := leader.Save(ctx, 1, "k", firing("first")); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Merge(ctx, records(t, leader)); err != nil {
		t.Fatal(err)
	}

	// NTP steps the leader's clock back; its next write is still the
	// newer one on the peer.
	now = base.Add(-time.Hour)
	if err := leader.Save(ctx, 1, "k", firing("second")); err != nil {
		t.Fatal(err)
	}
	applied, err := peer.Merge(ctx, records(t, leader))
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 1 {
		t.Fatalf("peer applied %+v, want the second write", applied)
	}
	checkInstances(t, loadAll(t, peer), map[string]alerting.Instance{"k": firing("second")})
}

func TestTombstoneExpiry(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "alerts.db")
	now := base
	s := openStore(t, path, Options{Now: clockAt(&now), TombstoneTTL: 24 * time.Hour})
	if err := s.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"gone", "reopened"} {
		if err := s.Delete(ctx, 1, k); err != nil {
			t.Fatal(err)
		}
	}

	// Within the TTL the tombstone holds off a stale peer.
	now = base.Add(23 * time.Hour)
	stale := Record{Key: "gone", Instance: firing("w"), Updated: base.Add(-time.Minute), Epoch: 1}
	if applied, err := s.Merge(ctx, []Record{stale}); err != nil || len(applied) != 0 {
		t.Fatalf("Merge of a record older than the tombstone: applied %+v, %v", applied, err)
	}
	if got := len(records(t, s)); got != 2 {
		t.Errorf("%d records within the TTL, want the 2 tombstones", got)
	}

	// Past it, the tombstone is no longer offered to peers, and the next
	// write drops it from the file.
	now = base.Add(25 * time.Hour)
	checkRecords(t, records(t, s), nil)
	if err := s.Save(ctx, 1, "reopened", firing("w")); err != nil {
		t.Fatal(err)
	}
	if got, want := storedKeys(t, s), []string{"reopened"}; !reflect.DeepEqual(got, want) {
		t.Errorf("keys in the file after a write past the TTL: %q, want %q", got, want)
	}

	// Open prunes as well.
	if err := s.Delete(ctx, 1, "reopened"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(25 * time.Hour)
	s = openStore(t, path, Options{Now: clockAt(&now)})
	if got := storedKeys(t, s); len(got) != 0 {
		t.Errorf("keys in the file after reopening past the TTL: %q, want none", got)
	}
}

func TestUndecodableRecordSkipped(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	s := openStore(t, filepath.Join(t.TempDir(), "alerts.db"), Options{
		Now:    func() time.Time { return base },
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err := s.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "c"} {
		if err := s.Save(ctx, 1, k, firing(k)); err != nil {
			t.Fatal(err)
		}
	}
	// A record written by a future version, or damaged on disk.
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(recordsBucket)).Put([]byte("b-broken"), []byte(`{"instance":{"state":"exploded"}}`))
	})
	if err != nil {
		t.Fatal(err)
	}

	checkInstances(t, loadAll(t, s), map[string]alerting.Instance{"a": firing("a"), "c": firing("c")})
	if got := len(records(t, s)); got != 2 {
		t.Errorf("Records returned %d, want the 2 good ones", got)
	}
	if !strings.Contains(logs.String(), "b-broken") {
		t.Errorf("the log does not name the bad record:\n%s", logs.String())
	}
}

// crashRecords bounds what the crash child writes if nobody kills it.
const crashRecords = 20000

func crashKey(i int) string { return fmt.Sprintf("rule\x00host%05d\x00check", i) }

// crashChild saves records one by one to the store at path, saying "saved"
// on stdout after each Save returns, and then waits for its stdin to close.
func crashChild(path string) int {
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.TakeOver(ctx, 1); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := range crashRecords {
		if err := s.Save(ctx, 1, crashKey(i), firing(fmt.Sprint(i))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := os.Stdout.WriteString("saved\n"); err != nil {
			return 1
		}
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func TestSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "alerts.db")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close() })
	// A deadline: a child that hangs is killed, ending the read below.
	watchdog := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()

	// Kill it mid-stream, after k Saves have returned.
	const k = 100
	saved := 0
	for sc := bufio.NewScanner(stdout); saved < k && sc.Scan(); {
		if sc.Text() == "saved" {
			saved++
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); saved < k || !ok || !ws.Signaled() {
		t.Fatalf("child saved %d of %d before it ended (%s):\n%s", saved, k, cmd.ProcessState, stderr.String())
	}

	var logs bytes.Buffer
	s := openStore(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	got := loadAll(t, s)
	t.Logf("%d records survived the kill after %d Saves had returned", len(got), saved)
	if len(got) < k {
		t.Errorf("%d records after the kill, want at least the %d saved", len(got), k)
	}
	// Saves are sequential: what survived is the first len(got), each as
	// written, with no gap a torn write would leave.
	for i := range len(got) {
		inst, ok := got[crashKey(i)]
		if !ok {
			t.Errorf("record %d of %d missing", i, len(got))
			continue
		}
		if !reflect.DeepEqual(normalize(inst), normalize(firing(fmt.Sprint(i)))) {
			t.Errorf("record %d: %+v", i, inst)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("undecodable records after the kill:\n%s", logs.String())
	}
}
