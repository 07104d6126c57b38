package alerting

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	t0     = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	labels = map[string]string{"host": "www1", "check": "http", "severity": "critical"}
	down   = map[string]string{"summary": "www1 http down from 2 of 3 observers", "outputs": "eu-1: CRITICAL - connection refused"}
	down2  = map[string]string{"summary": "www1 http down from 3 of 3 observers"}
)

// inst returns an instance of rule www-http in state s; mutate adjusts it.
func inst(s State, mutate func(*Instance)) Instance {
	i := Instance{Rule: "www-http", Labels: maps.Clone(labels), State: s}
	if mutate != nil {
		mutate(&i)
	}
	return i
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func firingNote(startsAt, ts time.Time, ann map[string]string) *Notification {
	return &Notification{
		ID: NotificationID("www-http", labels, StatusFiring, startsAt), Status: StatusFiring,
		Rule: "www-http", Labels: labels, Annotations: ann, Severity: "critical",
		StartsAt: startsAt, EvaluatedAt: ts,
	}
}

func resolvedNote(startsAt, ts time.Time, ann map[string]string) *Notification {
	return &Notification{
		ID: NotificationID("www-http", labels, StatusResolved, startsAt), Status: StatusResolved,
		Rule: "www-http", Labels: labels, Annotations: ann, Severity: "critical",
		StartsAt: startsAt, EndsAt: ts, EvaluatedAt: ts,
	}
}

func TestInstanceNext(t *testing.T) {
	active := Input{Active: true, Annotations: down}
	inactive := Input{}
	unknown := Input{Unknown: true, Reason: "1 of 3 observers fresh, quorum 2"}
	for30 := Params{For: 30 * time.Second}

	tests := []struct {
		name   string
		from   Instance
		ts     time.Time
		in     Input
		p      Params
		want   Instance
		wantTr *Transition
	}{
		{
			// Nothing wrong, nothing changes, nothing to say.
			name: "ok stays ok",
			from: inst(OK, nil), ts: at(0), in: inactive,
			want: inst(OK, func(i *Instance) { i.LastEval = at(0) }),
		},
		{
			// for=0: the first evaluation that finds the condition true
			// fires, and the firing is notified with StartsAt = now.
			name: "for 0 fires at once",
			from: inst(OK, nil), ts: at(0), in: active,
			want: inst(Firing, func(i *Instance) {
				i.ActiveAt, i.FiredAt, i.LastEval, i.Annotations = at(0), at(0), at(0), down
			}),
			wantTr: &Transition{From: OK, To: Firing, At: at(0), Notification: firingNote(at(0), at(0), down)},
		},
		{
			// for=30s: the condition is true but has not held long enough.
			name: "for 30s goes pending",
			from: inst(OK, nil), ts: at(0), in: active, p: for30,
			want: inst(Pending, func(i *Instance) {
				i.ActiveAt, i.LastEval, i.Annotations = at(0), at(0), down
			}),
			wantTr: &Transition{From: OK, To: Pending, At: at(0)},
		},
		{
			// 29s of 30s: still pending, no transition.
			name: "pending before for has elapsed stays pending",
			from: inst(Pending, func(i *Instance) { i.ActiveAt = at(0) }),
			ts:   at(29 * time.Second), in: active, p: for30,
			want: inst(Pending, func(i *Instance) {
				i.ActiveAt, i.LastEval, i.Annotations = at(0), at(29*time.Second), down
			}),
		},
		{
			// ts-ActiveAt == for: fires; StartsAt is when the condition
			// became true, not when the alert fired.
			name: "pending fires once for has elapsed",
			from: inst(Pending, func(i *Instance) { i.ActiveAt = at(0) }),
			ts:   at(30 * time.Second), in: active, p: for30,
			want: inst(Firing, func(i *Instance) {
				i.ActiveAt, i.FiredAt, i.LastEval, i.Annotations = at(0), at(30*time.Second), at(30*time.Second), down
			}),
			wantTr: &Transition{From: Pending, To: Firing, At: at(30 * time.Second),
				Notification: firingNote(at(0), at(30*time.Second), down)},
		},
		{
			// A blip shorter than for: back to ok, nobody is told.
			name: "pending that clears goes back to ok silently",
			from: inst(Pending, func(i *Instance) { i.ActiveAt, i.Annotations = at(0), down }),
			ts:   at(10 * time.Second), in: inactive, p: for30,
			want:   inst(OK, func(i *Instance) { i.LastEval = at(10 * time.Second) }),
			wantTr: &Transition{From: Pending, To: OK, At: at(10 * time.Second)},
		},
		{
			// Still down: no new transition, the annotations follow the
			// latest evaluation.
			name: "firing stays firing",
			from: inst(Firing, func(i *Instance) { i.ActiveAt, i.FiredAt, i.Annotations = at(0), at(0), down }),
			ts:   at(time.Minute), in: Input{Active: true, Annotations: down2},
			want: inst(Firing, func(i *Instance) {
				i.ActiveAt, i.FiredAt, i.LastEval, i.Annotations = at(0), at(0), at(time.Minute), down2
			}),
		},
		{
			// Recovery: resolved notification with EndsAt, carrying the
			// annotations of the last bad evaluation (what was wrong).
			name: "firing that clears resolves",
			from: inst(Firing, func(i *Instance) { i.ActiveAt, i.FiredAt, i.Annotations = at(0), at(30*time.Second), down }),
			ts:   at(5 * time.Minute), in: inactive, p: for30,
			want: inst(OK, func(i *Instance) { i.ResolvedAt, i.LastEval = at(5*time.Minute), at(5*time.Minute) }),
			wantTr: &Transition{From: Firing, To: OK, At: at(5 * time.Minute),
				Notification: resolvedNote(at(0), at(5*time.Minute), down)},
		},
		{
			// Too few fresh observers: unknown, never ok; not notified.
			name: "ok becomes unknown",
			from: inst(OK, nil), ts: at(0), in: unknown,
			want:   inst(Unknown, func(i *Instance) { i.LastEval, i.Reason = at(0), unknown.Reason }),
			wantTr: &Transition{From: OK, To: Unknown, At: at(0), Reason: unknown.Reason},
		},
		{
			// The condition is no longer known to have held throughout, so
			// the for timer is dropped.
			name: "pending becomes unknown and forgets ActiveAt",
			from: inst(Pending, func(i *Instance) { i.ActiveAt, i.Annotations = at(0), down }),
			ts:   at(10 * time.Second), in: unknown, p: for30,
			want: inst(Unknown, func(i *Instance) {
				i.LastEval, i.Reason, i.Annotations = at(10*time.Second), unknown.Reason, down
			}),
			wantTr: &Transition{From: Pending, To: Unknown, At: at(10 * time.Second), Reason: unknown.Reason},
		},
		{
			// Missing data is not a recovery: no resolved notification, the
			// incident stays open (ActiveAt, FiredAt kept).
			name: "firing becomes unknown without resolving",
			from: inst(Firing, func(i *Instance) { i.ActiveAt, i.FiredAt, i.Annotations = at(0), at(0), down }),
			ts:   at(time.Minute), in: unknown,
			want: inst(Unknown, func(i *Instance) {
				i.ActiveAt, i.FiredAt, i.LastEval, i.Reason, i.Annotations = at(0), at(0), at(time.Minute), unknown.Reason, down
			}),
			wantTr: &Transition{From: Firing, To: Unknown, At: at(time.Minute), Reason: unknown.Reason},
		},
		{
			// Still unknown for another reason: the reason is kept up to
			// date, but it is not a transition.
			name: "unknown stays unknown with a new reason",
			from: inst(Unknown, func(i *Instance) { i.Reason = "old" }),
			ts:   at(0), in: unknown,
			want: inst(Unknown, func(i *Instance) { i.LastEval, i.Reason = at(0), unknown.Reason }),
		},
		{
			// Data is back and fine; no incident was open: silent.
			name: "unknown without incident recovers to ok silently",
			from: inst(Unknown, func(i *Instance) { i.Reason = "old" }),
			ts:   at(0), in: inactive,
			want:   inst(OK, func(i *Instance) { i.LastEval = at(0) }),
			wantTr: &Transition{From: Unknown, To: OK, At: at(0)},
		},
		{
			// Data is back and bad, no incident open: for starts now.
			name: "unknown without incident goes pending",
			from: inst(Unknown, nil), ts: at(0), in: active, p: for30,
			want:   inst(Pending, func(i *Instance) { i.ActiveAt, i.LastEval, i.Annotations = at(0), at(0), down }),
			wantTr: &Transition{From: Unknown, To: Pending, At: at(0)},
		},
		{
			// ... or fires at once with for=0.
			name: "unknown without incident fires with for 0",
			from: inst(Unknown, nil), ts: at(0), in: active,
			want: inst(Firing, func(i *Instance) {
				i.ActiveAt, i.FiredAt, i.LastEval, i.Annotations = at(0), at(0), at(0), down
			}),
			wantTr: &Transition{From: Unknown, To: Firing, At: at(0), Notification: firingNote(at(0), at(0), down)},
		},
		{
			// The open incident goes on: firing again, but people were told
			// already, so no second firing notification; StartsAt unchanged.
			name: "unknown with open incident returns to firing silently",
			from: inst(Unknown, func(i *Instance) { i.ActiveAt, i.FiredAt, i.Reason, i.Annotations = at(0), at(0), "old", down }),
			ts:   at(2 * time.Minute), in: Input{Active: true, Annotations: down2}, p: for30,
			want: inst(Firing, func(i *Instance) {
				i.ActiveAt, i.FiredAt, i.LastEval, i.Annotations = at(0), at(0), at(2*time.Minute), down2
			}),
			wantTr: &Transition{From: Unknown, To: Firing, At: at(2 * time.Minute)},
		},
		{
			// The open incident ends while we knew nothing: people were told
			// it fired, so they are told it resolved.
			name: "unknown with open incident recovers with resolved",
			from: inst(Unknown, func(i *Instance) { i.ActiveAt, i.FiredAt, i.Reason, i.Annotations = at(0), at(0), "old", down }),
			ts:   at(3 * time.Minute), in: inactive,
			want: inst(OK, func(i *Instance) { i.ResolvedAt, i.LastEval = at(3*time.Minute), at(3*time.Minute) }),
			wantTr: &Transition{From: Unknown, To: OK, At: at(3 * time.Minute),
				Notification: resolvedNote(at(0), at(3*time.Minute), down)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := inst(tt.from.State, func(i *Instance) { *i = tt.from; i.Labels = maps.Clone(tt.from.Labels) })
			got, tr := tt.from.Next(tt.ts, tt.in, tt.p)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("instance:\n got %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(tr, tt.wantTr) {
				t.Errorf("transition:\n got %s\nwant %s", show(tr), show(tt.wantTr))
			}
			if !reflect.DeepEqual(tt.from, before) {
				t.Errorf("Next changed its receiver: %+v", tt.from)
			}
		})
	}
}

func show(tr *Transition) string {
	if tr == nil {
		return "<nil>"
	}
	b, _ := json.Marshal(tr)
	return string(b)
}

// TestNextDoesNotShareMaps guards the notification queued for delivery
// against the caller reusing its annotation map for the next evaluation.
func TestNextDoesNotShareMaps(t *testing.T) {
	ann := map[string]string{"summary": "down"}
	_, tr := inst(OK, nil).Next(t0, Input{Active: true, Annotations: ann}, Params{})
	ann["summary"] = "changed"
	if got := tr.Notification.Annotations["summary"]; got != "down" {
		t.Errorf("notification summary = %q after the caller changed its map, want %q", got, "down")
	}
}

func TestNotificationIDStable(t *testing.T) {
	// A literal: the id must not change between releases either, or a
	// receiver deduplicating across an upgrade would see a new alert.
	const want = "4569e316ffc58c521640a14c2d7abc64"
	if got := NotificationID("www-http", labels, StatusFiring, t0); got != want {
		t.Errorf("NotificationID = %s, want %s", got, want)
	}
	// Same instant in another zone, labels built in another order.
	other := map[string]string{}
	for _, k := range []string{"severity", "check", "host"} {
		other[k] = labels[k]
	}
	if got := NotificationID("www-http", other, StatusFiring, t0.In(time.FixedZone("CET", 3600))); got != want {
		t.Errorf("NotificationID in another zone = %s, want %s", got, want)
	}
}

func TestNotificationIDDistinct(t *testing.T) {
	base := NotificationID("www-http", labels, StatusFiring, t0)
	otherHost := maps.Clone(labels)
	otherHost["host"] = "www2"
	for name, id := range map[string]string{
		"resolved":       NotificationID("www-http", labels, StatusResolved, t0),
		"later incident": NotificationID("www-http", labels, StatusFiring, t0.Add(time.Nanosecond)),
		"other host":     NotificationID("www-http", otherHost, StatusFiring, t0),
		"other rule":     NotificationID("www-ping", labels, StatusFiring, t0),
		// Field boundaries matter: rule "a" + label "bc" is not rule "ab" + label "c".
		"shifted": NotificationID("www-httphost", map[string]string{"": "www1"}, StatusFiring, t0),
	} {
		if id == base {
			t.Errorf("%s: id %s equals the base id", name, id)
		}
	}
}

// TestIncidentsAcrossRestart runs two incidents of one instance through
// Next, persisting and restoring the instance as JSON between every
// evaluation (a restart or a leader change each time), and checks that the
// ids agree with an uninterrupted run and differ where they should.
func TestIncidentsAcrossRestart(t *testing.T) {
	steps := []struct {
		ts     time.Time
		active bool
	}{
		{at(0), true},                 // pending
		{at(30 * time.Second), true},  // firing #1
		{at(time.Minute), false},      // resolved #1
		{at(2 * time.Minute), true},   // pending
		{at(150 * time.Second), true}, // firing #2
		{at(3 * time.Minute), false},  // resolved #2
	}
	run := func(restart bool) []*Notification {
		var out []*Notification
		i := inst(OK, nil)
		for _, s := range steps {
			if restart {
				b, err := json.Marshal(i)
				if err != nil {
					t.Fatal(err)
				}
				i = Instance{}
				if err := json.Unmarshal(b, &i); err != nil {
					t.Fatal(err)
				}
			}
			var tr *Transition
			i, tr = i.Next(s.ts, Input{Active: s.active, Annotations: down}, Params{For: 30 * time.Second})
			if tr != nil && tr.Notification != nil {
				out = append(out, tr.Notification)
			}
		}
		return out
	}
	plain, restarted := run(false), run(true)
	if len(plain) != 4 || len(restarted) != 4 {
		t.Fatalf("got %d and %d notifications, want 4 each", len(plain), len(restarted))
	}
	seen := map[string]int{}
	for k := range plain {
		if plain[k].ID != restarted[k].ID {
			t.Errorf("notification %d: id %s without restarts, %s with", k, plain[k].ID, restarted[k].ID)
		}
		if j, dup := seen[plain[k].ID]; dup {
			t.Errorf("notifications %d and %d share id %s", j, k, plain[k].ID)
		}
		seen[plain[k].ID] = k
	}
	wantStatus := []Status{StatusFiring, StatusResolved, StatusFiring, StatusResolved}
	for k, n := range restarted {
		if n.Status != wantStatus[k] {
			t.Errorf("notification %d: status %s, want %s", k, n.Status, wantStatus[k])
		}
	}
	if !restarted[1].StartsAt.Equal(at(0)) || !restarted[1].EndsAt.Equal(at(time.Minute)) {
		t.Errorf("first resolved: StartsAt %v EndsAt %v, want %v and %v", restarted[1].StartsAt, restarted[1].EndsAt, at(0), at(time.Minute))
	}
}

func TestStateText(t *testing.T) {
	for s := OK; s <= Flapping; s++ {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatalf("%d: %v", s, err)
		}
		var back State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%d -> %q -> %d, %v", s, b, back, err)
		}
	}
	// The numbers are the TSDB contract (dmonitor.alert.state).
	if OK != 0 || Pending != 1 || Firing != 2 || Suppressed != 3 || Unknown != 4 ||
		Silenced != 5 || Acknowledged != 6 || Flapping != 7 {
		t.Error("state values differ from DESIGN.md's dmonitor.alert.state")
	}
	if s, err := ParseState("flapping"); err != nil || s != Flapping {
		t.Errorf(`ParseState("flapping") = %v, %v; want flapping`, s, err)
	}
	if _, err := State(8).MarshalText(); err == nil {
		t.Error("MarshalText(8) succeeded")
	}
	var s State
	if err := s.UnmarshalText([]byte("FIRING")); err == nil {
		t.Error(`UnmarshalText("FIRING") succeeded; names are lower case`)
	}
}

// step is one evaluation in a scenario: its input and what must come out.
type step struct {
	at        time.Duration
	in        Input
	wantState State
	wantNote  Status // "" when nothing may be notified
	wantID    string // checked when not empty
}

// runSteps drives an instance through steps and checks every one.
func runSteps(t *testing.T, p Params, steps []step) Instance {
	t.Helper()
	i := inst(OK, nil)
	for k, s := range steps {
		var tr *Transition
		i, tr = i.Next(at(s.at), s.in, p)
		if i.State != s.wantState {
			t.Fatalf("step %d (t+%v): state %v, want %v", k, s.at, i.State, s.wantState)
		}
		var got Status
		if tr != nil && tr.Notification != nil {
			got = tr.Notification.Status
			if s.wantID != "" && tr.Notification.ID != s.wantID {
				t.Errorf("step %d: id %s, want %s", k, tr.Notification.ID, s.wantID)
			}
		}
		if got != s.wantNote {
			t.Fatalf("step %d (t+%v): notified %q, want %q", k, s.at, got, s.wantNote)
		}
	}
	return i
}

func TestInstanceHolds(t *testing.T) {
	active := Input{Active: true, Annotations: down}
	inactive := Input{}
	parentDown := Input{Active: true, Suppressed: `parent "www-ping" is firing`}
	parentDownClear := Input{Suppressed: `parent "www-ping" is firing`}
	parentUnknown := Input{Active: true, Suppressed: `parent "www-ping" is unknown`}
	ownUnknownParentDown := Input{Unknown: true, Reason: "0 fresh observers", Suppressed: `parent "www-ping" is firing`}
	silenced := Input{Active: true, Silenced: "maintenance-42"}

	tests := []struct {
		name  string
		p     Params
		steps []step
	}{
		{
			// The Bosun/Icinga behaviour: the child fails while its parent
			// fails; it is suppressed, and neither its failure nor its
			// recovery is notified: nothing was said, nothing to take back.
			name: "child failing under a failing parent sends nothing",
			steps: []step{
				{at: 0, in: parentDown, wantState: Suppressed},
				{at: time.Minute, in: parentDown, wantState: Suppressed},
				{at: 2 * time.Minute, in: parentDownClear, wantState: OK},
			},
		},
		{
			// The parent recovers while the child still fails: the child
			// fires then, and its alert starts when it started failing.
			name: "parent recovers, still-failing child fires",
			steps: []step{
				{at: 0, in: parentDown, wantState: Suppressed},
				{at: time.Minute, in: active, wantState: Firing, wantNote: StatusFiring,
					wantID: NotificationID("www-http", labels, StatusFiring, at(0))},
			},
		},
		{
			// A parent that is unknown holds the child back too.
			name:  "child of an unknown parent is suppressed",
			steps: []step{{at: 0, in: parentUnknown, wantState: Suppressed}},
		},
		{
			// With its parent down, a child whose own data is missing is
			// suppressed, not unknown: the cause is known.
			name:  "own data unknown under a failing parent is suppressed",
			steps: []step{{at: 0, in: ownUnknownParentDown, wantState: Suppressed}},
		},
		{
			// A child already firing when its parent fails: held back, and
			// its recovery is still owed because its firing was sent.
			name: "firing child held back still resolves",
			steps: []step{
				{at: 0, in: active, wantState: Firing, wantNote: StatusFiring},
				{at: time.Minute, in: parentDown, wantState: Suppressed},
				{at: 2 * time.Minute, in: parentDownClear, wantState: OK, wantNote: StatusResolved},
			},
		},
		{
			// keep_firing_for: a check flapping faster than it holds stays
			// one incident, with one firing and, at the end, one resolved.
			name: "keep_firing_for holds a flapping instance firing",
			p:    Params{KeepFiringFor: 5 * time.Minute},
			steps: []step{
				{at: 0, in: active, wantState: Firing, wantNote: StatusFiring},
				{at: time.Minute, in: inactive, wantState: Firing},
				{at: 2 * time.Minute, in: active, wantState: Firing},
				{at: 3 * time.Minute, in: inactive, wantState: Firing},
				{at: 7 * time.Minute, in: inactive, wantState: Firing},
				{at: 8 * time.Minute, in: inactive, wantState: OK, wantNote: StatusResolved},
			},
		},
		{
			// A silence holds a new incident back; when it ends, the
			// still-failing instance fires.
			name: "silenced, then fires when the silence ends",
			steps: []step{
				{at: 0, in: silenced, wantState: Silenced},
				{at: time.Minute, in: active, wantState: Firing, wantNote: StatusFiring},
			},
		},
		{
			// Repeats while firing, each with an id of its own.
			name: "repeat interval re-notifies",
			p:    Params{RepeatInterval: 10 * time.Minute},
			steps: []step{
				{at: 0, in: active, wantState: Firing, wantNote: StatusFiring},
				{at: 9 * time.Minute, in: active, wantState: Firing},
				{at: 10 * time.Minute, in: active, wantState: Firing, wantNote: StatusFiring,
					wantID: NotificationID("www-http", labels, StatusFiring, at(0)) + ".1"},
				{at: 15 * time.Minute, in: active, wantState: Firing},
				{at: 20 * time.Minute, in: active, wantState: Firing, wantNote: StatusFiring,
					wantID: NotificationID("www-http", labels, StatusFiring, at(0)) + ".2"},
				{at: 21 * time.Minute, in: inactive, wantState: OK, wantNote: StatusResolved,
					wantID: NotificationID("www-http", labels, StatusResolved, at(0))},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.p, tc.steps) })
	}
}

func TestAcknowledgeStopsRepeatsNotRecovery(t *testing.T) {
	p := Params{RepeatInterval: 10 * time.Minute}
	active := Input{Active: true, Annotations: down}
	i := runSteps(t, p, []step{{at: 0, in: active, wantState: Firing, wantNote: StatusFiring}})
	if _, ok := inst(OK, nil).Acknowledge("ann", "on it", at(time.Minute)); ok {
		t.Fatal("acknowledged an instance with no open incident")
	}
	i, ok := i.Acknowledge("ann", "on it", at(time.Minute))
	if !ok {
		t.Fatal("could not acknowledge a firing instance")
	}
	i, tr := i.Next(at(30*time.Minute), active, p)
	if i.State != Acknowledged || (tr != nil && tr.Notification != nil) {
		t.Fatalf("after ack: state %v, transition %+v; want acknowledged and no repeat", i.State, tr)
	}
	i, tr = i.Next(at(31*time.Minute), Input{}, p)
	if i.State != OK || tr == nil || tr.Notification == nil || tr.Notification.Status != StatusResolved {
		t.Fatalf("recovery of an acknowledged incident: state %v, transition %+v; want resolved notified", i.State, tr)
	}
	if !i.AckedAt.IsZero() || i.AckedBy != "" {
		t.Error("the acknowledgement outlived its incident")
	}
}

// The flap tests evaluate once a minute: evaluation k is at evalAt(k).
func evalAt(k int) time.Time { return at(time.Duration(k) * time.Minute) }

func firingID(k int) string   { return NotificationID("www-http", labels, StatusFiring, evalAt(k)) }
func resolvedID(k int) string { return NotificationID("www-http", labels, StatusResolved, evalAt(k)) }

var (
	flapFail   = Input{Active: true, Annotations: down}
	flapPass   = Input{}
	flapNoData = Input{Unknown: true, Reason: "1 of 3 observers fresh, quorum 2"}
	// flap4in10 flaps at the fifth change within ten evaluations and
	// settles at two.
	flap4in10 = FlapParams{Changes: 4, Window: 10 * time.Minute}
)

// flips returns n evaluations that alternate between failing and passing,
// failing first.
func flips(n int) []Input {
	out := make([]Input, n)
	for k := range out {
		out[k] = flapPass
		if k%2 == 0 {
			out[k] = flapFail
		}
	}
	return out
}

// times returns n evaluations that each find in.
func times(in Input, n int) []Input { return slices.Repeat([]Input{in}, n) }

// sent is a notification as a receiver sees it, and the evaluation that
// sent it.
type sent struct {
	k        int
	status   Status
	id       string
	flapping string // its AnnotationFlapping
}

// drive evaluates i on each of ins in turn, evaluation k (from first on)
// at evalAt(k), and returns the instance after the last and what was
// notified. each, when not nil, sees every evaluation.
func drive(i Instance, p Params, first int, ins []Input, each func(k int, before, after Instance, tr *Transition)) (Instance, []sent) {
	var out []sent
	for j, in := range ins {
		k := first + j
		next, tr := i.Next(evalAt(k), in, p)
		if each != nil {
			each(k, i, next, tr)
		}
		if tr != nil && tr.Notification != nil {
			n := tr.Notification
			out = append(out, sent{k: k, status: n.Status, id: n.ID, flapping: n.Annotations[AnnotationFlapping]})
		}
		i = next
	}
	return i, out
}

func TestFlapping(t *testing.T) {
	for2 := 2 * time.Minute // two evaluations
	started := "started: 5 changes within 10m0s"
	// ordinary is the firing and resolved pair of each of the first n
	// changes of flips with for 0.
	ordinary := func(n int) []sent {
		var out []sent
		for k := range n {
			if k%2 == 0 {
				out = append(out, sent{k: k, status: StatusFiring, id: firingID(k)})
			} else {
				out = append(out, sent{k: k, status: StatusResolved, id: resolvedID(k - 1)})
			}
		}
		return out
	}

	tests := []struct {
		name string
		p    Params
		ins  []Input
		want []sent
		// states are the states expected after some evaluations.
		states map[int]State
	}{
		{
			// 40 changes in a row: one message when it starts, none while
			// it flaps, one when it settles failing; the incident it
			// opened resolves once when the check recovers.
			name: "a check that flaps then fails hears start, settled firing, then one resolved",
			p:    Params{For: for2, Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapFail, 20), times(flapPass, 5)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 48, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
				{k: 60, status: StatusResolved, id: resolvedID(4)},
			},
			states: map[int]State{3: OK, 4: Flapping, 5: Flapping, 39: Flapping, 47: Flapping, 48: Firing, 59: Firing, 60: OK},
		},
		{
			// Settling ok is the incident's ordinary resolved message,
			// saying how it settled.
			name: "a check that flaps then passes hears start, then one resolved",
			p:    Params{For: for2, Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapPass, 20)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 47, status: StatusResolved, id: resolvedID(4), flapping: "settled: ok"},
			},
			states: map[int]State{4: Flapping, 46: Flapping, 47: OK},
		},
		{
			// With for 0 each change pages until flapping is detected:
			// fired, resolved, fired, resolved, then the start opens a new
			// incident, and settling resolves it: six messages.
			name: "for 0 pages each change until the fifth, then start and settled ok",
			p:    Params{Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapPass, 20)),
			want: append(ordinary(4),
				sent{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				sent{k: 47, status: StatusResolved, id: resolvedID(4), flapping: "settled: ok"}),
			states: map[int]State{3: OK, 4: Flapping, 47: OK},
		},
		{
			// ... seven when it settles failing and later recovers.
			name: "for 0 pages each change until the fifth, then start, settled firing and resolved",
			p:    Params{Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapFail, 20), times(flapPass, 1)),
			want: append(ordinary(4),
				sent{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				sent{k: 48, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
				sent{k: 60, status: StatusResolved, id: resolvedID(4)}),
		},
		{
			// Without flap detection, every change is a page: 20 fired,
			// 20 resolved, as before flap detection existed.
			name: "detection off pages every change",
			p:    Params{},
			ins:  flips(40),
			want: ordinary(40),
		},
		{
			// Flapping can be detected on an evaluation that passes; the
			// message still says what was wrong, and the incident starts
			// when the condition last became true.
			name: "flapping detected on a passing evaluation still says what was wrong",
			p:    Params{For: for2, Flap: FlapParams{Changes: 3, Window: 10 * time.Minute}},
			ins:  slices.Concat(flips(4), times(flapPass, 12)),
			want: []sent{
				{k: 3, status: StatusFiring, id: firingID(2), flapping: "started: 4 changes within 10m0s"},
				{k: 12, status: StatusResolved, id: resolvedID(2), flapping: "settled: ok"},
			},
			states: map[int]State{3: Flapping, 11: Flapping, 12: OK},
		},
		{
			// keep_firing_for holds the page open through the changes;
			// flapping is news about that page, under an id of its own.
			name: "a paging check that starts flapping says so under an id of its own",
			p:    Params{KeepFiringFor: 5 * time.Minute, Flap: flap4in10},
			ins:  slices.Concat(flips(10), times(flapPass, 20)),
			want: []sent{
				{k: 0, status: StatusFiring, id: firingID(0)},
				{k: 4, status: StatusFiring, id: firingID(0) + ".flapping.1", flapping: started},
				{k: 17, status: StatusResolved, id: resolvedID(0), flapping: "settled: ok"},
			},
			states: map[int]State{3: Firing, 4: Flapping, 16: Flapping, 17: OK},
		},
		{
			// Missing data at the moment it would settle: it stays
			// flapping, and settles once the data says how.
			name: "unknown when it would settle stays flapping until known",
			p:    Params{For: for2, Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapNoData, 20), times(flapFail, 1)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 60, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
			},
			states: map[int]State{40: Flapping, 59: Flapping, 60: Firing},
		},
		{
			// A failing parent explains its child: the child reads
			// suppressed and is quiet, but whoever heard it start flapping
			// hears how it settled once the parent is back.
			name: "a flapping check held back by its parent settles when the parent is back",
			p:    Params{For: for2, Flap: flap4in10},
			ins: slices.Concat(flips(20), times(Input{Active: true, Annotations: down, Suppressed: `parent "www-ping" is firing`}, 10),
				times(flapFail, 1), times(flapPass, 1)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 30, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
				{k: 31, status: StatusResolved, id: resolvedID(4)},
			},
			states: map[int]State{19: Flapping, 20: Suppressed, 29: Suppressed, 30: Firing, 31: OK},
		},
		{
			// A silence keeps a flapping check quiet, and its changes do
			// not count while it lasts; the page that was sent still gets
			// its resolved.
			name: "a flapping check under a silence stays quiet and still resolves",
			p:    Params{For: for2, Flap: flap4in10},
			ins: slices.Concat(flips(20),
				times(Input{Active: true, Annotations: down, Silenced: "maintenance-42"}, 10), times(flapPass, 1)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 30, status: StatusResolved, id: resolvedID(4), flapping: "settled: ok"},
			},
			states: map[int]State{20: Silenced, 29: Silenced, 30: OK},
		},
		{
			// No reminders while flapping; after settling, the next comes
			// at the end of the interval then running (FiredAt + 5×10m),
			// not at once for the intervals spent flapping.
			name: "a check that settles failing is reminded an interval on, not at once",
			p:    Params{For: for2, RepeatInterval: 10 * time.Minute, Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapFail, 15)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 48, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
				{k: 54, status: StatusFiring, id: firingID(4) + ".5"},
			},
		},
		{
			// Settled failing, then flapping again while keep_firing_for
			// holds the page open: each episode's messages have ids of
			// their own.
			name: "a second episode of the same page has ids of its own",
			p:    Params{For: for2, KeepFiringFor: 5 * time.Minute, Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapFail, 10), flips(10), times(flapFail, 10)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 48, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
				{k: 55, status: StatusFiring, id: firingID(4) + ".flapping.2", flapping: started},
				{k: 68, status: StatusFiring, id: firingID(4) + ".settled.2", flapping: "settled: firing"},
			},
		},
		{
			// Without keep_firing_for, the first pass after settling
			// failing resolves the page; flapping again is a new page.
			name: "flapping again after the page resolved is a new page",
			p:    Params{For: for2, Flap: flap4in10},
			ins:  slices.Concat(flips(40), times(flapFail, 10), flips(10), times(flapFail, 10)),
			want: []sent{
				{k: 4, status: StatusFiring, id: firingID(4), flapping: started},
				{k: 48, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
				{k: 51, status: StatusResolved, id: resolvedID(4)},
				{k: 55, status: StatusFiring, id: firingID(54), flapping: started},
				{k: 68, status: StatusFiring, id: firingID(54) + ".settled.1", flapping: "settled: firing"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := drive(inst(OK, nil), tt.p, 0, tt.ins, func(k int, before, after Instance, tr *Transition) {
				if want, ok := tt.states[k]; ok && after.State != want {
					t.Errorf("evaluation %d: state %v, want %v", k, after.State, want)
				}
				if tr != nil && tr.Notification != nil && tr.Notification.Annotations[AnnotationSummary] != down[AnnotationSummary] {
					t.Errorf("evaluation %d: notification says %q, want what was wrong", k, tr.Notification.Annotations[AnnotationSummary])
				}
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("notified:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestFlappingAcknowledged: an acknowledgement stops reminders, not the
// news of how the flapping settled.
func TestFlappingAcknowledged(t *testing.T) {
	p := Params{For: 2 * time.Minute, RepeatInterval: 5 * time.Minute, Flap: flap4in10}
	i, got := drive(inst(OK, nil), p, 0, flips(20), nil)
	i, ok := i.Acknowledge("ann", "on it", evalAt(19))
	if !ok {
		t.Fatal("could not acknowledge a flapping instance")
	}
	i, later := drive(i, p, 20, times(flapFail, 20), func(k int, _, after Instance, _ *Transition) {
		want := Flapping // settles at 28, with two changes left in the window
		if k >= 28 {
			want = Acknowledged
		}
		if after.State != want {
			t.Errorf("evaluation %d: state %v, want %v", k, after.State, want)
		}
	})
	got = append(got, later...)
	_, later = drive(i, p, 40, times(flapPass, 1), nil)
	got = append(got, later...)
	want := []sent{
		{k: 4, status: StatusFiring, id: firingID(4), flapping: "started: 5 changes within 10m0s"},
		{k: 28, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
		{k: 40, status: StatusResolved, id: resolvedID(4)},
	}
	if !slices.Equal(got, want) {
		t.Errorf("notified:\n got %+v\nwant %+v", got, want)
	}
}

// TestFlapMemoryAcrossRestart persists and restores the instance as JSON
// before every evaluation (a restart or a leader change each time): a
// flapping check is told the same as without restarts.
func TestFlapMemoryAcrossRestart(t *testing.T) {
	p := Params{For: 2 * time.Minute, Flap: flap4in10}
	ins := slices.Concat(flips(40), times(flapFail, 20), times(flapPass, 1))
	_, plain := drive(inst(OK, nil), p, 0, ins, nil)
	if len(plain) != 3 {
		t.Fatalf("without restarts: %d notifications, want 3: %+v", len(plain), plain)
	}

	var restarted []sent
	i := inst(OK, nil)
	for k, in := range ins {
		b, err := json.Marshal(i)
		if err != nil {
			t.Fatal(err)
		}
		if k == 21 {
			for _, field := range []string{`"state":"flapping"`, `"held":true`, `"changes":[`, `"flapping_since":`, `"flaps":1`} {
				if !strings.Contains(string(b), field) {
					t.Errorf("a flapping instance stores %s without %s", b, field)
				}
			}
		}
		var back Instance
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, i) {
			t.Fatalf("evaluation %d: JSON round trip\n gave %+v\n  of %+v", k, back, i)
		}
		var out []sent
		i, out = drive(back, p, k, []Input{in}, nil)
		restarted = append(restarted, out...)
	}
	if !slices.Equal(plain, restarted) {
		t.Errorf("with restarts:\n got %+v\nwant %+v", restarted, plain)
	}
}

// TestFlapMemoryBounded: however long a check flaps, an instance keeps at
// most Changes+1 change times, none older than the window, and none once
// the check has been steady for a window.
func TestFlapMemoryBounded(t *testing.T) {
	p := Params{Flap: FlapParams{Changes: 3, Window: 10 * time.Minute}}
	i, _ := drive(inst(OK, nil), p, 0, slices.Concat(flips(1000), times(flapPass, 10)), func(k int, _, after Instance, _ *Transition) {
		if len(after.Changes) > 4 {
			t.Fatalf("evaluation %d: %d changes kept, want at most 4", k, len(after.Changes))
		}
		for _, c := range after.Changes {
			if evalAt(k).Sub(c) >= p.Flap.Window {
				t.Fatalf("evaluation %d: kept a change from %v, older than the window", k, c)
			}
		}
	})
	if i.State != OK || i.Changes != nil || !i.FlappingSince.IsZero() {
		t.Errorf("steady for a window: state %v, changes %v, flapping since %v; want ok and no flap memory", i.State, i.Changes, i.FlappingSince)
	}
}

// TestFlapDetectionOffKeepsNoMemory: without flap detection an instance
// stores nothing of it, and one that had memory from when detection was
// on drops it.
func TestFlapDetectionOffKeepsNoMemory(t *testing.T) {
	i, _ := drive(inst(OK, nil), Params{}, 0, flips(5), nil)
	b, err := json.Marshal(i)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"held", "changes", "flapping_since", "flaps"} {
		if strings.Contains(string(b), field) {
			t.Errorf("detection off: instance stores %s: %s", field, b)
		}
	}
	i, _ = drive(inst(OK, nil), Params{Flap: flap4in10}, 0, flips(3), nil)
	i, _ = i.Next(evalAt(3), flapFail, Params{})
	if i.Held || i.Changes != nil {
		t.Errorf("detection turned off: held %v, changes %v kept", i.Held, i.Changes)
	}
}

// TestFlapDetectionTurnedOffSettles: a rule that loses its flapping
// thresholds while flapping settles at its next evaluation, so the page
// it sent is not left without its end.
func TestFlapDetectionTurnedOffSettles(t *testing.T) {
	p := Params{For: 2 * time.Minute, Flap: flap4in10}
	i, _ := drive(inst(OK, nil), p, 0, flips(20), nil)
	if i.State != Flapping {
		t.Fatalf("after 20 changes: %v, want flapping", i.State)
	}
	i, got := drive(i, Params{For: p.For}, 20, []Input{flapFail, flapPass}, nil)
	want := []sent{
		{k: 20, status: StatusFiring, id: firingID(4) + ".settled.1", flapping: "settled: firing"},
		{k: 21, status: StatusResolved, id: resolvedID(4)},
	}
	if !slices.Equal(got, want) || i.State != OK {
		t.Errorf("detection off while flapping: state %v, notified\n got %+v\nwant %+v", i.State, got, want)
	}
}

// TestRetireFlapping: a flapping instance whose check is removed resolves
// the page its start sent.
func TestRetireFlapping(t *testing.T) {
	i, _ := drive(inst(OK, nil), Params{For: 2 * time.Minute, Flap: flap4in10}, 0, flips(10), nil)
	next, tr := i.Retire(evalAt(10), "check http on www1 was removed from the configuration")
	if tr == nil || tr.Notification == nil || tr.Notification.Status != StatusResolved || tr.Notification.ID != resolvedID(4) {
		t.Fatalf("retiring a flapping instance: %s, want the resolved of the page opened at evaluation 4", show(tr))
	}
	if tr.From != Flapping || next.State != OK || next.Changes != nil || !next.FlappingSince.IsZero() {
		t.Errorf("retired: from %v to %v, changes %v, flapping since %v; want flapping to ok, no flap memory",
			tr.From, next.State, next.Changes, next.FlappingSince)
	}
}

// TestFlappingNeverSilent drives random evaluations (failing, passing,
// unknown, held back by a parent or a silence, acknowledgements, restarts,
// retirements) through Next with flap detection on, and checks what the
// receivers see: every page (a firing notification under its incident's
// own firing id) is resolved exactly once, any other message is about the
// page open at the time, no id comes twice, nothing is said while an
// instance flaps, a check that then fails long enough is paged, and one
// that then passes long enough is resolved.
func TestFlappingNeverSilent(t *testing.T) {
	parent := `parent "www-ping" is firing`
	inputs := []Input{
		flapFail, flapPass, flapNoData,
		{Active: true, Annotations: down, Suppressed: parent},
		{Suppressed: parent},
		{Unknown: true, Reason: "no data", Suppressed: parent},
		{Active: true, Annotations: down, Silenced: "maintenance-42"},
	}
	rng := rand.New(rand.NewPCG(11, 3))
	for run := range 500 {
		p := Params{
			For:            time.Duration(rng.IntN(4)) * time.Minute,
			KeepFiringFor:  time.Duration(rng.IntN(3)) * 2 * time.Minute,
			RepeatInterval: time.Duration(rng.IntN(2)) * 7 * time.Minute,
			Flap:           FlapParams{Changes: 1 + rng.IntN(5), Window: time.Duration(3+rng.IntN(13)) * time.Minute},
		}
		var ins []Input
		for len(ins) < 200 {
			n := 1 + rng.IntN(15)
			switch rng.IntN(3) {
			case 0:
				ins = append(ins, flips(n)...)
			case 1:
				ins = append(ins, times(inputs[rng.IntN(len(inputs))], n)...)
			default:
				for range n {
					ins = append(ins, inputs[rng.IntN(len(inputs))])
				}
			}
		}
		// Long enough for any flapping to settle, `for` to pass and
		// keep_firing_for to run out.
		steady := int((p.Flap.Window+p.For+p.KeepFiringFor)/time.Minute) + 2
		failedLongEnough := len(ins) + steady - 1
		ins = slices.Concat(ins, times(flapFail, steady), times(flapPass, steady))

		var (
			open      string // the firing id of the page receivers hold open
			openStart time.Time
			seen      = map[string]bool{}
		)
		fail := func(k int, i Instance, format string, args ...any) {
			t.Helper()
			t.Fatalf("run %d (%+v), evaluation %d, instance %+v: %s", run, p, k, i, fmt.Sprintf(format, args...))
		}
		receive := func(k int, i Instance, n *Notification) {
			t.Helper()
			if seen[n.ID] {
				fail(k, i, "id %s sent twice", n.ID)
			}
			seen[n.ID] = true
			page := NotificationID(n.Rule, n.Labels, StatusFiring, n.StartsAt)
			switch {
			case n.Status == StatusFiring && n.ID == page:
				if open != "" {
					fail(k, i, "paged %s while %s is open", n.ID, open)
				}
				open, openStart = page, n.StartsAt
			case n.Status == StatusFiring:
				if open == "" || !strings.HasPrefix(n.ID, open+".") {
					fail(k, i, "message %s about no open page (open: %q)", n.ID, open)
				}
			default:
				if open == "" || n.ID != NotificationID(n.Rule, n.Labels, StatusResolved, openStart) {
					fail(k, i, "resolved %s does not close the open page %q", n.ID, open)
				}
				open = ""
			}
		}

		i := inst(OK, nil)
		for k, in := range ins {
			if rng.IntN(10) == 0 {
				b, err := json.Marshal(i)
				if err != nil {
					t.Fatal(err)
				}
				i = Instance{}
				if err := json.Unmarshal(b, &i); err != nil {
					t.Fatal(err)
				}
			}
			if rng.IntN(20) == 0 {
				i, _ = i.Acknowledge("ann", "on it", evalAt(k))
			}
			var next Instance
			var tr *Transition
			if k < failedLongEnough-steady && rng.IntN(100) == 0 {
				next, tr = i.Retire(evalAt(k), "check http on www1 was removed from the configuration")
			} else {
				next, tr = i.Next(evalAt(k), in, p)
			}
			if tr != nil && tr.Notification != nil {
				if !i.FlappingSince.IsZero() && !next.FlappingSince.IsZero() {
					fail(k, next, "notified %s while flapping", tr.Notification.ID)
				}
				receive(k, next, tr.Notification)
			}
			if (open != "") != !next.FiredAt.IsZero() {
				fail(k, next, "receivers hold page %q open, the instance's FiredAt is %v", open, next.FiredAt)
			}
			if !next.FlappingSince.IsZero() && next.FiredAt.IsZero() {
				fail(k, next, "flapping without a page open")
			}
			if len(next.Changes) > p.Flap.Changes+1 {
				fail(k, next, "%d changes kept", len(next.Changes))
			}
			i = next
			if k == failedLongEnough && (open == "" || (i.State != Firing && i.State != Acknowledged)) {
				fail(k, i, "failing for %d evaluations: state %v, page open %q; want firing and paged", steady, i.State, open)
			}
		}
		if open != "" || i.State != OK {
			fail(len(ins), i, "passing for %d evaluations: state %v, page %s still open", steady, i.State, open)
		}
	}
}
