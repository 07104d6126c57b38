package alerting

import (
	"maps"
	"strconv"
	"time"
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
}

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
// Unknown interrupts a pending instance: the condition is no longer known to
// have held throughout, so its `for` starts again. Unknown does not end a
// firing incident: Prometheus and Icinga users expect no recovery mail just
// because data went missing, and no second firing mail when it comes back.
// A suppressed or silenced instance keeps counting its `for`, so when the
// hold lifts it fires at once if it has been failing long enough.
func (i Instance) Next(ts time.Time, in Input, p Params) (Instance, *Transition) {
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
		next.Reason = ""
		next.State = OK
		if incidentOpen {
			next.ResolvedAt = ts
			n = next.notification(StatusResolved, ts)
		}
		next.ActiveAt = time.Time{}
		next.FiredAt = time.Time{}
		next.KeepFiringSince = time.Time{}
		next.Repeats = 0
		next.AckedAt, next.AckedBy, next.AckComment = time.Time{}, "", ""
		next.Annotations = nil
	}

	if next.State == i.State && n == nil {
		return next, nil
	}
	return next, &Transition{From: i.State, To: next.State, At: ts, Reason: next.Reason, Notification: n}
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
// Acknowledged from the next evaluation on and is not repeated until it
// resolves. The bool is false, and i unchanged, when no incident is open.
func (i Instance) Acknowledge(who, comment string, ts time.Time) (Instance, bool) {
	if i.FiredAt.IsZero() {
		return i, false
	}
	i.AckedAt, i.AckedBy, i.AckComment = ts, who, comment
	return i, true
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
