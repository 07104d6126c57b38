package alerting

import (
	"maps"
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
	// Reason says why State is Unknown; empty otherwise.
	Reason string `json:"reason,omitempty"`
	// Annotations are those of the last evaluation in which the condition
	// held, so a resolved notification still says what was wrong.
	Annotations map[string]string `json:"annotations,omitempty"`
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
	// Annotations are the rule's annotations rendered for this evaluation:
	// summary, description, the observers' outputs.
	Annotations map[string]string
}

// Params are the rule settings the state machine needs.
type Params struct {
	// For is how long the condition must hold before the instance fires;
	// 0 fires on the first evaluation that finds it true.
	For time.Duration
}

// Transition records a change of state made by Next.
type Transition struct {
	From, To State
	At       time.Time // the evaluation time
	Reason   string    // why To is Unknown; empty otherwise
	// Notification is what to send about this transition, or nil when
	// nobody is to be told (pending, back to ok from pending, to or from
	// unknown without an incident being opened or closed).
	Notification *Notification
}

// Next returns the instance after an evaluation at ts found in, and the
// transition it made, or nil when the state did not change. It reads no
// clock and has no side effects: the same arguments give the same result.
//
// The transitions:
//
//	ok/pending/unknown --active, ts-ActiveAt >= For--> firing   (notified: firing)
//	ok/unknown         --active, ts-ActiveAt <  For--> pending
//	pending            --inactive-->                   ok
//	firing             --inactive-->                   ok       (notified: resolved)
//	any                --unknown-->                    unknown
//	unknown (incident open) --active-->                firing   (same incident, not notified again)
//	unknown (incident open) --inactive-->              ok       (notified: resolved)
//
// Unknown interrupts a pending instance: the condition is no longer known to
// have held throughout, so its `for` starts again. Unknown does not end a
// firing incident: Prometheus and Icinga users expect no recovery mail just
// because data went missing, and no second firing mail when it comes back.
func (i Instance) Next(ts time.Time, in Input, p Params) (Instance, *Transition) {
	next := i
	next.LastEval = ts
	var n *Notification
	incidentOpen := !i.FiredAt.IsZero()

	switch {
	case in.Unknown:
		next.State = Unknown
		next.Reason = in.Reason
		if !incidentOpen {
			next.ActiveAt = time.Time{}
		}

	case in.Active:
		next.Reason = ""
		next.Annotations = maps.Clone(in.Annotations)
		if next.ActiveAt.IsZero() {
			next.ActiveAt = ts
		}
		switch {
		case incidentOpen:
			next.State = Firing
		case ts.Sub(next.ActiveAt) >= p.For:
			next.State = Firing
			next.FiredAt = ts
			n = next.notification(StatusFiring, ts)
		default:
			next.State = Pending
		}

	default:
		next.Reason = ""
		next.State = OK
		if incidentOpen {
			next.ResolvedAt = ts
			n = next.notification(StatusResolved, ts)
		}
		next.ActiveAt = time.Time{}
		next.FiredAt = time.Time{}
		next.Annotations = nil
	}

	if next.State == i.State {
		return next, nil
	}
	return next, &Transition{From: i.State, To: next.State, At: ts, Reason: next.Reason, Notification: n}
}

// notification builds the notification of i's incident as of ts. For a
// resolved one, i must still hold the incident's ActiveAt.
func (i Instance) notification(status Status, ts time.Time) *Notification {
	n := &Notification{
		ID:          NotificationID(i.Rule, i.Labels, status, i.ActiveAt),
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
