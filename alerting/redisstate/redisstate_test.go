package redisstate

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/internal/redistest"
)

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// firing is an acknowledged, firing instance of www-http on host, with
// every field a restore needs set.
func firing(host string) alerting.Instance {
	return alerting.Instance{
		Rule:        "www-http",
		Labels:      map[string]string{"host": host, "check": "http", "severity": "critical"},
		State:       alerting.Acknowledged,
		ActiveAt:    base.Add(-5 * time.Minute),
		FiredAt:     base.Add(-2 * time.Minute),
		LastEval:    base,
		Repeats:     2,
		AckedAt:     base.Add(-time.Minute),
		AckedBy:     "alice",
		AckComment:  "on it",
		Annotations: map[string]string{"summary": host + " http down", "outputs": "obs1: CRITICAL - timeout"},
	}
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := New(redistest.Start(t).Client(t), Options{})
	if err := st.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	pending := alerting.Instance{Rule: "disk", Labels: map[string]string{"host": "db1", "check": "disk"},
		State: alerting.Pending, ActiveAt: base, LastEval: base}
	unknown := firing("www2")
	unknown.State, unknown.Reason = alerting.Unknown, "1 fresh observers, quorum is 2"
	saves := map[string]alerting.Instance{
		InstanceKey("www-http", "www1", "http"): firing("www1"),
		InstanceKey("www-http", "www2", "http"): unknown,
		InstanceKey("disk", "db1", "disk"):      pending,
		InstanceKey("disk", "db2", "disk"):      pending,
	}
	for k, inst := range saves {
		if err := st.Save(ctx, 1, k, inst); err != nil {
			t.Fatal(err)
		}
	}
	// db2 is healthy again: nothing to remember. db1 fires: overwritten.
	if err := st.Delete(ctx, 1, InstanceKey("disk", "db2", "disk")); err != nil {
		t.Fatal(err)
	}
	fired := pending
	fired.State, fired.FiredAt = alerting.Firing, base.Add(time.Minute)
	if err := st.Save(ctx, 1, InstanceKey("disk", "db1", "disk"), fired); err != nil {
		t.Fatal(err)
	}

	// A new leader with its own Store resumes from what was stored.
	st2 := New(st.client, Options{})
	if err := st2.TakeOver(ctx, 2); err != nil {
		t.Fatal(err)
	}
	got, err := st2.LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]alerting.Instance{
		InstanceKey("www-http", "www1", "http"): firing("www1"),
		InstanceKey("www-http", "www2", "http"): unknown,
		InstanceKey("disk", "db1", "disk"):      fired,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded\n%+v\nwant\n%+v", got, want)
	}

	// Another prefix is another set of keys.
	other, err := New(st.client, Options{Prefix: "{other}:"}).LoadAll(ctx)
	if err != nil || len(other) != 0 {
		t.Errorf("LoadAll under another prefix: %v, %v; want nothing", other, err)
	}

	// An instance that cannot be decoded does not hide the others.
	if err := st.client.HSet(ctx, "dmonitor:alerts", "broken/x/y", "{not json").Err(); err != nil {
		t.Fatal(err)
	}
	got, err = st2.LoadAll(ctx)
	if err == nil || !strings.Contains(err.Error(), "broken/x/y") {
		t.Errorf("LoadAll with an undecodable instance: %v, want an error naming it", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadAll with an undecodable instance loaded\n%+v\nwant the others\n%+v", got, want)
	}
}

func TestInstanceKey(t *testing.T) {
	for _, tc := range []struct {
		rule, host, check, want string
	}{
		// The plain case reads plainly.
		{"www-http", "www1.example.org", "http", "www-http/www1.example.org/http"},
		// A separator inside a part is escaped...
		{"a/b", "c", "d", "a%2Fb/c/d"},
		// ...so the same characters split differently give another key.
		{"a", "b/c", "d", "a/b%2Fc/d"},
		// Empty parts still give three fields.
		{"r", "", "", "r//"},
	} {
		if got := InstanceKey(tc.rule, tc.host, tc.check); got != tc.want {
			t.Errorf("InstanceKey(%q, %q, %q) = %q, want %q", tc.rule, tc.host, tc.check, got, tc.want)
		}
	}
}

func TestTakeOver(t *testing.T) {
	ctx := context.Background()
	st := New(redistest.Start(t).Client(t), Options{})
	// One after another on the same fence.
	for _, tc := range []struct {
		epoch  int64
		fenced bool // refused as stale; otherwise taken
	}{
		{5, false},  // the first leader: no fence yet
		{5, true},   // the same epoch again: not newer
		{4, true},   // an older leader waking up
		{6, false},  // the next term
		{10, false}, // more digits: compared as a number, not as text
		{9, true},   // fewer digits, larger first one: still older
		// Beyond 2^53, where a Lua number can no longer tell them apart.
		{9007199254740993, false},
		{9007199254740992, true},
	} {
		err := st.TakeOver(ctx, tc.epoch)
		if tc.fenced != errors.Is(err, ErrFenced) || !tc.fenced && err != nil {
			t.Errorf("TakeOver(%d): %v, want fenced %v", tc.epoch, err, tc.fenced)
		}
	}
	if got, err := st.client.Get(ctx, "dmonitor:fence").Result(); err != nil || got != "9007199254740993" {
		t.Errorf("fence %q, %v; want the highest epoch taken", got, err)
	}
	// No term has epoch 0: a caller bug, not a stale leader.
	if err := st.TakeOver(ctx, 0); err == nil || errors.Is(err, ErrFenced) {
		t.Errorf("TakeOver(0): %v, want an error that is not ErrFenced", err)
	}
}

// TestFencedWrites checks that every write made under an epoch that is not
// the fence's is refused with ErrFenced and changes nothing.
func TestFencedWrites(t *testing.T) {
	ctx := context.Background()
	client := redistest.Start(t).Client(t)
	st := New(client, Options{})
	key := InstanceKey("www-http", "www1", "http")
	old := firing("www1")

	// Before any TakeOver, nobody may write.
	if err := st.Save(ctx, 1, key, old); !errors.Is(err, ErrFenced) {
		t.Fatalf("Save before any TakeOver: %v, want ErrFenced", err)
	}
	if err := st.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := st.Save(ctx, 1, key, old); err != nil {
		t.Fatal(err)
	}
	j1 := st.journal("ops", "1", 10)
	n := alerting.Notification{ID: "n1", Rule: "www-http", Status: alerting.StatusFiring}
	if err := j1.Append(ctx, &n); err != nil {
		t.Fatal(err)
	}
	if err := st.TakeOver(ctx, 2); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, st, "ops")

	resolved := old
	resolved.State = alerting.OK
	stale := alerting.Notification{ID: "n2", Rule: "www-http", Status: alerting.StatusResolved}
	for _, tc := range []struct {
		name  string
		write func() error
	}{
		// The deposed leader records the resolution it saw.
		{"Save", func() error { return st.Save(ctx, 1, key, resolved) }},
		{"Delete", func() error { return st.Delete(ctx, 1, key) }},
		// It queues the recovery notification.
		{"Append", func() error { return j1.Append(ctx, &stale) }},
		// It is about to deliver what it had queued...
		{"Attempt", func() error { return j1.Attempt(ctx, "n1") }},
		// ...or has delivered it and records that.
		{"Done", func() error { return j1.Done(ctx, "n1") }},
		// It opens its dispatcher again.
		{"OpenDispatcher", func() error {
			_, err := st.OpenDispatcher(ctx, 1, map[string]alerting.Notifier{"ops": nil}, nil, alerting.DispatcherOptions{})
			return err
		}},
		// It settles the state it reconciled: followers would copy
		// the deposed leader's view.
		{"Settle", func() error { return st.Settle(ctx, 1) }},
		// An epoch ahead of the fence is no better: it never took over.
		{"Save ahead", func() error { return st.Save(ctx, 3, key, resolved) }},
	} {
		if err := tc.write(); !errors.Is(err, ErrFenced) {
			t.Errorf("%s under epoch 1 after TakeOver(2): %v, want ErrFenced", tc.name, err)
		}
	}
	if after := snapshot(t, st, "ops"); !reflect.DeepEqual(after, before) {
		t.Errorf("fenced writes changed the journal:\nbefore %+v\nafter  %+v", before, after)
	}
	got, err := st.LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]alerting.Instance{key: old}) {
		t.Errorf("fenced writes changed the state: %+v", got)
	}

	// The current leader writes.
	if err := st.Save(ctx, 2, key, resolved); err != nil {
		t.Errorf("Save under the current epoch: %v", err)
	}
	if err := st.journal("ops", "2", 10).Done(ctx, "n1"); err != nil {
		t.Errorf("Done under the current epoch: %v", err)
	}
}
