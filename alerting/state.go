// Package alerting holds dmonitor's alert state machine and the delivery of
// its notifications. A rule instance (one rule over one host×check) moves
// between states by Instance.Next, a pure function of the evaluation time;
// the transitions that people must hear about yield a Notification, which a
// Dispatcher hands to the receivers' Notifiers, in order, with retries.
//
// Notifiers live in sub-packages (alerting/smtp) so that this package can be
// used and tested without any of them.
package alerting

import "fmt"

// State is the state of one rule instance. Its numeric value is what the
// time series dmonitor.alert.state stores.
type State int

// The states of a rule instance, with their dmonitor.alert.state values.
const (
	// OK: the condition does not hold.
	OK State = 0
	// Pending: the condition holds, but not yet for the rule's `for`.
	Pending State = 1
	// Firing: the condition has held for `for`; the alert is notified.
	Firing State = 2
	// Suppressed: the instance would fire (or is firing), but a parent in
	// its rule's depends_on is firing or unknown: the cause is known, so
	// nothing about this symptom is notified.
	Suppressed State = 3
	// Unknown: the condition could not be evaluated, e.g. fewer fresh
	// observers than the quorum. Never read as OK.
	Unknown State = 4
	// Silenced: the instance would fire (or is firing), but an operator's
	// silence matches it: nothing new is notified while it lasts. The design
	// lists values 0..4; 5 and 6 extend dmonitor.alert.state.
	Silenced State = 5
	// Acknowledged: the instance is firing and an operator has said they are
	// on it: no repeat notifications until it resolves.
	Acknowledged State = 6
	// Flapping: the condition has changed more often than the rule allows
	// within its window. An incident is open; its start was notified once,
	// and nothing more is until it settles (see Instance.Next).
	Flapping State = 7
)

var stateNames = [...]string{"ok", "pending", "firing", "suppressed", "unknown", "silenced", "acknowledged", "flapping"}

// String returns the lower-case name of s, or "state(N)" for a value outside
// the defined ones.
func (s State) String() string {
	if s < OK || s > Flapping {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// ParseState returns the State named by s (ok, pending, firing, suppressed,
// unknown, silenced, acknowledged, flapping).
func ParseState(s string) (State, error) {
	for i, n := range stateNames {
		if n == s {
			return State(i), nil
		}
	}
	return Unknown, fmt.Errorf("unknown alert state %q (want ok, pending, firing, suppressed, unknown, silenced, acknowledged or flapping)", s)
}

// MarshalText encodes s by name, so persisted state and JSON read "firing",
// not 2.
func (s State) MarshalText() ([]byte, error) {
	if s < OK || s > Flapping {
		return nil, fmt.Errorf("invalid alert state %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name, so persisted state can be restored.
func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
