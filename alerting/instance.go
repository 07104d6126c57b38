package alerting

import (
	"fmt"
	"maps"
	"strconv"
	"time"
)

// AnnotationFlapping marks the notifications of flap detection: the
// start of flapping ("started: 5 changes within 10m0s") and its end, the
// state the instance settled in ("settled: firing", "settled: ok").
const AnnotationFlapping = "flapping"

// Annotations a parent's notifications carry about the dependents that
// name it in depends_on: whom a firing one holds back ("3 held back: http
// on www1 (www-http), ..."); whom a resolved one held back during its
// incident that recovered with it, and which still fail (and page in
// their own right).
const (
	AnnotationHeldBack     = "held_back"
	AnnotationRecovered    = "recovered_with_it"
	AnnotationStillFailing = "still_failing"
)

// Instance is the persisted state of one rule instance: one rule over one
// set of labels (host, check, severity, the rule's own labels). It is a
// value: Next returns a new Instance and never changes the receiver, so a
// leader can store it, restore it on takeover and carry on.
//
// An incident is open from the evaluation that makes the instance fire until
// the one that resolves it; FiredAt is non-zero exactly while one is open.
// An open incident survives Unknown: missing data is neither a new alert nor
// a recovery.
type Instance struct {
	Rule   string            `json:"rule"`
	Labels map[string]string `json:"labels"`
	State  State             `json:"state"`
	// ActiveAt is when the condition became true, the alert's StartsAt. It
	// is zero while the condition is not known to hold, except that an open
	// incident keeps it through Unknown.
	ActiveAt time.Time `json:"active_at,omitzero"`
	// FiredAt is when the open incident started firing; zero when none is
	// open.
	FiredAt time.Time `json:"fired_at,omitzero"`
	// ResolvedAt is when the last incident was resolved.
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	// LastEval is the evaluation time of the last call to Next.
	LastEval time.Time `json:"last_eval,omitzero"`
	// KeepFiringSince is when the condition of a firing instance cleared
	// while keep_firing_for holds it firing; zero otherwise.
	KeepFiringSince time.Time `json:"keep_firing_since,omitzero"`
	// Repeats counts the repeat notifications of the open incident.
	Repeats int `json:"repeats,omitempty"`
	// AckedAt, AckedBy and AckComment record an acknowledgement of the open
	// incident; cleared when it resolves.
	AckedAt    time.Time `json:"acked_at,omitzero"`
	AckedBy    string    `json:"acked_by,omitempty"`
	AckComment string    `json:"ack_comment,omitempty"`
	// Reason says why State is Unknown; empty otherwise.
	Reason string `json:"reason,omitempty"`
	// Annotations are those of the last evaluation in which the condition
	// held, so a resolved notification still says what was wrong.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Held and Changes are the flap detection's memory, kept only while
	// the rule's Params.Flap is on. Held is the condition's outcome at the
	// last evaluation that counted (see Next); Changes are the times the
	// outcome changed, oldest first: never older than Flap.Window, never
	// more than Flap.Changes+1 of them.
	Held    bool        `json:"held,omitempty"`
	Changes []time.Time `json:"changes,omitempty"`
	// FlappingSince is when the instance started flapping; zero when it
	// is not. Its incident is open all the while.
	FlappingSince time.Time `json:"flapping_since,omitzero"`
	// Flaps counts the flapping episodes of the open incident; it numbers
	// their notifications' ids.
	Flaps int `json:"flaps,omitempty"`
	// Outbox is a notification decided and stored but not yet known to be
	// queued for delivery: the leader stores an instance with it before it
	// queues the notification, and without it after, so a crash in between
	// leaves the notification to the next leader (it queues it again under
	// its id, and the queues drop it if they had it). Next and Retire do
	// not carry it.
	Outbox *Notification `json:"outbox,omitempty"`
}

// Input is what one evaluation of a rule instance found.
type Input struct {
	// Active reports whether the rule's condition holds. It is ignored when
	// Unknown is set.
	Active bool
	// Unknown reports that the condition could not be evaluated (too few
	// fresh observers, a failed TSDB query); Reason says why.
	Unknown bool
	Reason  string
	// Suppressed, when not empty, says which parent in the rule's
	// depends_on is firing or unknown (e.g. `parent "host-up" is firing`):
	// the instance is held back and its own state reads Suppressed.
	Suppressed string
	// Silenced, when not empty, names the operator's silence that matches
	// the instance.
	Silenced string
	// Annotations are the rule's annotations rendered for this evaluation:
	// summary, description, the observers' outputs.
	Annotations map[string]string
}

// Params are the rule settings the state machine needs.
type Params struct {
	// For is how long the condition must hold before the instance fires;
	// 0 fires on the first evaluation that finds it true.
	For time.Duration
	// KeepFiringFor is how long a firing instance stays firing after its
	// condition clears, so a flapping check does not resolve and fire again.
	KeepFiringFor time.Duration
	// RepeatInterval, when positive, re-notifies a firing instance that is
	// neither acknowledged, silenced nor suppressed, once per interval.
	RepeatInterval time.Duration
	// Flap detects an instance whose condition keeps changing and
	// notifies it once instead of once per change; the zero value turns
	// detection off.
	Flap FlapParams
}

// FlapParams are the thresholds of flap detection. An instance starts
// flapping when more than Changes changes of its condition fall within
// Window, and settles when at most Changes/2 do: the gap between the two
// keeps an instance near the threshold from starting and settling over
// and over, as Nagios' high and low flap thresholds do. Detection is on
// when both are positive.
type FlapParams struct {
	Changes int
	Window  time.Duration
}

func (f FlapParams) on() bool { return f.Changes > 0 && f.Window > 0 }

// Transition records a change of state made by Next.
type Transition struct {
	From, To State
	At       time.Time // the evaluation time
	Reason   string    // why To is Unknown; empty otherwise
	// Notification is what to send about this transition, or nil when
	// nobody is to be told (pending, back to ok from pending, to or from
	// unknown without an incident being opened or closed, anything held
	// back). A repeat notification comes in a Transition with From == To.
	Notification *Notification
}

// Next returns the instance after an evaluation at ts found in, and the
// transition it made, or nil when the state did not change and nothing is to
// be notified. It reads no clock and has no side effects: the same arguments
// give the same result.
//
// An incident is open from the firing notification to the resolved one
// (FiredAt is set exactly then): whatever happens in between, its recovery
// is owed and is notified. An instance that is held back never opens one:
//
//	ok/pending/unknown --active, ts-ActiveAt >= For--> firing   (notified: firing)
//	ok/unknown         --active, ts-ActiveAt <  For--> pending
//	pending            --inactive-->                   ok
//	firing             --inactive, KeepFiringFor over-> ok      (notified: resolved)
//	any                --unknown-->                    unknown
//	any                --active or unknown, a parent firing or unknown--> suppressed
//	any                --active, a silence matching-->  silenced
//	firing             --acknowledged-->               acknowledged (no repeats)
//	unknown (incident open) --active-->                firing   (same incident, not notified again)
//	unknown/suppressed/silenced (incident open) --inactive--> ok (notified: resolved)
//	suppressed/silenced (no incident) --inactive-->    ok       (nothing was said, nothing to take back)
//	suppressed/silenced --hold lifted, still active--> firing   (notified then, StartsAt = ActiveAt)
//
// and with flap detection on (Params.Flap), where "changes" are those within
// Flap.Window and a held-back evaluation is one that makes the instance
// suppressed or silenced:
//
//	any (not held back) --more than Flap.Changes changes--> flapping (notified: firing, "started: …")
//	flapping            --active, inactive or unknown-->   flapping (nothing notified)
//	flapping            --held back-->                     suppressed/silenced (still flapping, nothing notified)
//	flapping (also held back) --active, at most Flap.Changes/2 changes-->   firing (notified: firing, "settled: firing")
//	flapping (also held back) --inactive, at most Flap.Changes/2 changes--> ok     (notified: resolved, "settled: ok")
//
// Unknown interrupts a pending instance: the condition is no longer known to
// have held throughout, so its `for` starts again. Unknown does not end a
// firing incident: Prometheus and Icinga users expect no recovery mail just
// because data went missing, and no second firing mail when it comes back.
// A suppressed or silenced instance keeps counting its `for`, so when the
// hold lifts it fires at once if it has been failing long enough.
//
// Flap detection counts the changes of the condition between holding and
// not holding. Only evaluations that find it and are not held back count,
// each against the last one that counted (so active, unknown, active is no
// change): unknown says nothing, a failing parent explains its children's
// changes, and a silence must not let an instance page by flapping.
// Flapping starts at the change that makes more than Flap.Changes. With no
// incident open, it opens one (StartsAt is ActiveAt, or ts if the condition
// does not hold now) and its start is the incident's firing notification.
// With one open, the start is a message of its own about it: the firing id
// plus ".flapping.N", N counting the incident's flapping episodes.
//
// While it flaps, nothing is notified: no firing or resolved per change, no
// repeats; Annotations stay those of the last evaluation in which the
// condition held. A hold shows in the state but does not end the episode,
// so whoever heard it start hears it settle. It settles at the first counted
// evaluation with at most Flap.Changes/2 changes; unknown stays flapping
// until known. Settled holding, the incident goes on firing, notified with
// the firing id plus ".settled.N" even when acknowledged (it is news, not a
// reminder), and the repeats missed while flapping are skipped, not sent at
// once. Settled not holding, the incident resolves with its resolved
// notification at once, whatever KeepFiringFor says: the flapping was the
// wait. Turning detection off ends an episode at the next counted
// evaluation, as if it had settled.
func (i Instance) Next(ts time.Time, in Input, p Params) (Instance, *Transition) {
	heldBack := (in.Suppressed != "" && (in.Active || in.Unknown)) || (in.Active && in.Silenced != "")
	counted := !in.Unknown && !heldBack
	var held bool
	var changes []time.Time
	if p.Flap.on() {
		held = i.held()
		changes = recentChanges(i.Changes, ts, p.Flap)
		if counted {
			if in.Active != held {
				changes = append(changes, ts)
				// More than Changes+1 would never change a decision.
				changes = changes[max(0, len(changes)-p.Flap.Changes-1):]
			}
			held = in.Active
		}
	}

	var next Instance
	var n *Notification
	flapping := !i.FlappingSince.IsZero()
	switch {
	case !flapping && counted && p.Flap.on() && len(changes) > p.Flap.Changes:
		next, n = i.startFlapping(ts, in, len(changes), p.Flap.Window)
	case flapping && (!counted || len(changes) > p.Flap.Changes/2):
		next = i.flap(ts, in)
	case flapping:
		next, n = i.settle(ts, in, p)
	default:
		next, n = i.step(ts, in, p)
	}
	next.Held, next.Changes = held, changes
	if next.Annotations == nil && len(changes) > 0 {
		// Flapping may start on an evaluation that does not hold: its
		// notification must still say what was wrong.
		next.Annotations = i.Annotations
	}

	if next.State == i.State && n == nil {
		return next, nil
	}
	return next, &Transition{From: i.State, To: next.State, At: ts, Reason: next.Reason, Notification: n}
}

// Forgettable reports whether i holds nothing that a new instance, made
// from its rule and labels, would not know: healthy, no incident, no
// notification in its outbox and no flap memory. Keeping only the others
// keeps the state of ten thousand healthy checks out of memory and store.
func (i Instance) Forgettable() bool {
	return i.State == OK && i.ActiveAt.IsZero() && i.FiredAt.IsZero() && i.Outbox == nil &&
		!i.Held && len(i.Changes) == 0 && i.FlappingSince.IsZero()
}

// held reports whether the condition held at the last evaluation that
// counted for flap detection. An instance that has no flap memory yet
// (detection just turned on, or stored by a version without it) is taken
// at its state's word.
func (i Instance) held() bool {
	if i.Held || len(i.Changes) > 0 || !i.FlappingSince.IsZero() {
		return i.Held
	}
	return !i.ActiveAt.IsZero() && i.KeepFiringSince.IsZero()
}

// recentChanges returns, in a new slice, the changes within f.Window of ts.
func recentChanges(changes []time.Time, ts time.Time, f FlapParams) []time.Time {
	var out []time.Time
	for _, c := range changes {
		if ts.Sub(c) < f.Window {
			out = append(out, c)
		}
	}
	return out
}

// step is Next without flap detection.
func (i Instance) step(ts time.Time, in Input, p Params) (Instance, *Notification) {
	next := i
	next.LastEval = ts
	next.Outbox = nil
	var n *Notification
	incidentOpen := !i.FiredAt.IsZero()

	switch {
	case in.Suppressed != "" && (in.Active || in.Unknown):
		// The cause is known: whatever the instance itself shows, say
		// nothing about the symptom, and say why in the state.
		next.State, next.Reason = Suppressed, in.Suppressed
		next.KeepFiringSince = time.Time{}
		if in.Active {
			next.Annotations = maps.Clone(in.Annotations)
			if next.ActiveAt.IsZero() {
				next.ActiveAt = ts
			}
		} else if !incidentOpen {
			next.ActiveAt = time.Time{}
		}

	case in.Unknown:
		next.State = Unknown
		next.Reason = in.Reason
		if !incidentOpen {
			next.ActiveAt = time.Time{}
		}

	case in.Active:
		next.Reason = ""
		next.KeepFiringSince = time.Time{}
		next.Annotations = maps.Clone(in.Annotations)
		if next.ActiveAt.IsZero() {
			next.ActiveAt = ts
		}
		switch {
		case in.Silenced != "":
			next.State, next.Reason = Silenced, "silenced by "+in.Silenced
		case incidentOpen:
			next.State = Firing
			if due := i.FiredAt.Add(time.Duration(i.Repeats+1) * p.RepeatInterval); p.RepeatInterval > 0 && i.AckedAt.IsZero() && !ts.Before(due) {
				next.Repeats++
				n = next.notification(StatusFiring, ts)
			}
		case ts.Sub(next.ActiveAt) >= p.For:
			next.State = Firing
			next.FiredAt = ts
			n = next.notification(StatusFiring, ts)
		default:
			next.State = Pending
		}
		if next.State == Firing && !next.AckedAt.IsZero() {
			next.State = Acknowledged
		}

	case incidentOpen && p.KeepFiringFor > 0 && (i.KeepFiringSince.IsZero() || ts.Sub(i.KeepFiringSince) < p.KeepFiringFor):
		// Cleared, but not for long enough: a flapping check stays one
		// incident instead of a resolved and a firing mail per flap.
		if next.KeepFiringSince.IsZero() {
			next.KeepFiringSince = ts
		}
		if next.State != Acknowledged {
			next.State = Firing
		}
		next.Reason = ""

	default:
		next, n = i.resolve(ts)
	}
	return next, n
}

// resolve returns i at ts with its condition cleared and, when an incident
// was open, the resolved notification.
func (i Instance) resolve(ts time.Time) (Instance, *Notification) {
	next := i
	next.LastEval = ts
	next.Outbox = nil
	next.Reason = ""
	next.State = OK
	var n *Notification
	if !i.FiredAt.IsZero() {
		next.ResolvedAt = ts
		n = next.notification(StatusResolved, ts)
	}
	next.ActiveAt = time.Time{}
	next.FiredAt = time.Time{}
	next.KeepFiringSince = time.Time{}
	next.Repeats = 0
	next.AckedAt, next.AckedBy, next.AckComment = time.Time{}, "", ""
	next.Annotations = nil
	next.FlappingSince, next.Flaps = time.Time{}, 0
	return next, n
}

// startFlapping returns i flapping from ts on, after a counted evaluation
// found in and made changes changes within window, and the notification of
// the start.
func (i Instance) startFlapping(ts time.Time, in Input, changes int, window time.Duration) (Instance, *Notification) {
	next := i
	next.LastEval = ts
	next.Outbox = nil
	next.State, next.Reason = Flapping, ""
	next.KeepFiringSince = time.Time{}
	next.FlappingSince = ts
	next.Flaps++
	if in.Active {
		next.Annotations = maps.Clone(in.Annotations)
	}
	if next.ActiveAt.IsZero() {
		next.ActiveAt = ts
	}
	id := NotificationID(next.Rule, next.Labels, StatusFiring, next.ActiveAt)
	if i.FiredAt.IsZero() {
		next.FiredAt = ts
	} else {
		id += ".flapping." + strconv.Itoa(next.Flaps)
	}
	return next, flapNote(next.notification(StatusFiring, ts), id, fmt.Sprintf("started: %d changes within %v", changes, window))
}

// flap returns i, flapping, after an evaluation at ts found in: held back,
// unknown, or with too many changes still to settle.
func (i Instance) flap(ts time.Time, in Input) Instance {
	next := i
	next.LastEval = ts
	next.Outbox = nil
	next.KeepFiringSince = time.Time{}
	next.State, next.Reason = Flapping, ""
	switch {
	case in.Suppressed != "" && (in.Active || in.Unknown):
		next.State, next.Reason = Suppressed, in.Suppressed
	case in.Unknown:
	case in.Active && in.Silenced != "":
		next.State, next.Reason = Silenced, "silenced by "+in.Silenced
	}
	if in.Active {
		next.Annotations = maps.Clone(in.Annotations)
	}
	return next
}

// settle returns i no longer flapping after a counted evaluation at ts
// found in, and the notification that says how it settled.
func (i Instance) settle(ts time.Time, in Input, p Params) (Instance, *Notification) {
	if !in.Active {
		// A flapping instance always has an incident open.
		next, n := i.resolve(ts)
		if n != nil {
			n = flapNote(n, n.ID, "settled: ok")
		}
		return next, n
	}
	next := i
	next.LastEval = ts
	next.Outbox = nil
	next.KeepFiringSince = time.Time{}
	next.State, next.Reason = Firing, ""
	if !next.AckedAt.IsZero() {
		next.State = Acknowledged
	}
	next.Annotations = maps.Clone(in.Annotations)
	next.FlappingSince = time.Time{}
	if p.RepeatInterval > 0 {
		// The next reminder comes at the next interval's end, not at once
		// for the intervals spent flapping.
		next.Repeats = max(next.Repeats, int(ts.Sub(next.FiredAt)/p.RepeatInterval))
	}
	id := NotificationID(next.Rule, next.Labels, StatusFiring, next.ActiveAt) + ".settled." + strconv.Itoa(next.Flaps)
	return next, flapNote(next.notification(StatusFiring, ts), id, "settled: firing")
}

// Retire ends i at ts because it is no longer evaluated: its rule, check
// or host left the configuration. An open incident is resolved (why goes
// in the notification's AnnotationResolvedBy), so no page is left open
// when its subject goes away; without one, nothing is said. The returned
// Instance is healthy; the Transition is nil when i was healthy already.
func (i Instance) Retire(ts time.Time, why string) (Instance, *Transition) {
	next := Instance{Rule: i.Rule, Labels: i.Labels, State: OK, LastEval: ts}
	var n *Notification
	if !i.FiredAt.IsZero() {
		next.ResolvedAt = ts
		closing := i
		closing.Annotations = maps.Clone(i.Annotations)
		if closing.Annotations == nil {
			closing.Annotations = make(map[string]string, 1)
		}
		closing.Annotations[AnnotationResolvedBy] = why
		n = closing.notification(StatusResolved, ts)
	}
	if i.State == OK && n == nil {
		return next, nil
	}
	return next, &Transition{From: i.State, To: OK, At: ts, Reason: why, Notification: n}
}

// Acknowledge records that who has seen the open incident of i: it reads
// Acknowledged from the next evaluation on (Flapping while it flaps) and is
// not repeated until it resolves; how its flapping settles is still
// notified. The bool is false, and i unchanged, when no incident is open.
func (i Instance) Acknowledge(who, comment string, ts time.Time) (Instance, bool) {
	if i.FiredAt.IsZero() {
		return i, false
	}
	i.AckedAt, i.AckedBy, i.AckComment = ts, who, comment
	return i, true
}

// flapNote makes n, which it changes and returns, the notification with id
// that says how its instance's flapping stands: not a reminder, whatever
// the incident's repeats.
func flapNote(n *Notification, id, flapping string) *Notification {
	n.ID, n.Repeat = id, 0
	if n.Annotations == nil {
		n.Annotations = make(map[string]string, 1)
	}
	n.Annotations[AnnotationFlapping] = flapping
	return n
}

// notification builds the notification of i's incident as of ts. For a
// resolved one, i must still hold the incident's ActiveAt.
func (i Instance) notification(status Status, ts time.Time) *Notification {
	id := NotificationID(i.Rule, i.Labels, status, i.ActiveAt)
	if status == StatusFiring && i.Repeats > 0 {
		// A repeat is a message of its own: a receiver that drops
		// duplicates by id must not drop it.
		id += "." + strconv.Itoa(i.Repeats)
	}
	n := &Notification{
		ID:          id,
		Repeat:      i.Repeats,
		Status:      status,
		Rule:        i.Rule,
		Labels:      maps.Clone(i.Labels),
		Annotations: maps.Clone(i.Annotations),
		Severity:    i.Labels[LabelSeverity],
		StartsAt:    i.ActiveAt,
		EvaluatedAt: ts,
	}
	if status == StatusResolved {
		n.EndsAt = ts
	}
	return n
}
