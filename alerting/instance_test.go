package alerting

import (
	"encoding/json"
	"maps"
	"reflect"
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
	for s := OK; s <= Unknown; s++ {
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
	if OK != 0 || Pending != 1 || Firing != 2 || Suppressed != 3 || Unknown != 4 {
		t.Error("state values differ from DESIGN.md's dmonitor.alert.state")
	}
	if _, err := State(7).MarshalText(); err == nil {
		t.Error("MarshalText(7) succeeded")
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
