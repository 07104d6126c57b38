// Package silence keeps the operators' silences: label matchers over a time
// window that mute the rule instances they match. It follows the shape of
// Alertmanager's silence package (matchers =, !=, =~, !~; states pending,
// active and expired; an update that would rewrite history expires the old
// silence and creates a new one) without its gossip: a Store is one JSON
// file, rewritten atomically on every change. The rules themselves live in
// Snapshot, so a store elsewhere (package redissilence, for a cluster)
// applies the same ones.
//
// Every decision takes the time as an argument or from Options.Now, so tests
// and replays drive it without a clock.
package silence

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound is returned, wrapped with the id, for a silence that does not
// exist (or has been garbage collected).
var ErrNotFound = errors.New("silence not found")

// ErrInvalid is wrapped by every error that refuses a silence as malformed:
// the caller's input is wrong, not the store.
var ErrInvalid = errors.New("invalid silence")

// Matcher matches one label of a rule instance. The labels an instance has
// are "alertname" and "rule" (both the rule's name), "host", "check",
// "severity" and the rule's own labels. A label the instance lacks reads as
// the empty string, as in Alertmanager.
type Matcher struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// IsRegex makes Value a regular expression anchored at both ends
	// (host=~"www.*" matches "www1" but not "old-www1").
	IsRegex bool `json:"isRegex"`
	// IsEqual false negates the matcher: != or !~.
	IsEqual bool `json:"isEqual"`
}

// String renders m as Alertmanager writes matchers: name="value", name!="value",
// name=~"regex" or name!~"regex".
func (m Matcher) String() string {
	op := "="
	switch {
	case m.IsRegex && m.IsEqual:
		op = "=~"
	case m.IsRegex:
		op = "!~"
	case !m.IsEqual:
		op = "!="
	}
	return m.Name + op + strconv.Quote(m.Value)
}

// Silence mutes, from StartsAt until EndsAt, every rule instance that all of
// its Matchers match.
type Silence struct {
	// ID is set by Store.Set; an ID given to Set names the silence to update.
	ID        string    `json:"id"`
	Matchers  []Matcher `json:"matchers"`
	StartsAt  time.Time `json:"startsAt"`
	EndsAt    time.Time `json:"endsAt"`
	CreatedBy string    `json:"createdBy"`
	Comment   string    `json:"comment"`
	// UpdatedAt is when the store last changed the silence.
	UpdatedAt time.Time `json:"updatedAt"`
}

// State is where a silence stands at a given time.
type State string

// The states of a silence, named as Alertmanager names them.
const (
	// StatePending: it has not started yet.
	StatePending State = "pending"
	// StateActive: it mutes what it matches.
	StateActive State = "active"
	// StateExpired: it has ended; it is kept for the retention so people
	// can see what was muted, then garbage collected.
	StateExpired State = "expired"
)

// State returns the state of s at now: pending before StartsAt, active from
// StartsAt until just before EndsAt, expired from EndsAt on. Expiring sets
// EndsAt to the current time, so an expired silence mutes nothing even at
// that instant.
func (s Silence) State(now time.Time) State {
	switch {
	case now.Before(s.StartsAt):
		return StatePending
	case now.Before(s.EndsAt):
		return StateActive
	}
	return StateExpired
}

// compiled is a matcher ready to be applied: its regexp compiled once, when
// the silence is stored, not per instance and evaluation.
type compiled struct {
	Matcher
	re *regexp.Regexp
}

func compile(m Matcher) (compiled, error) {
	c := compiled{Matcher: m}
	if m.IsRegex {
		// Compiled alone first, so an error quotes what the user wrote.
		if _, err := regexp.Compile(m.Value); err != nil {
			return c, err
		}
		// Anchored as Alertmanager and Prometheus anchor label regexps: a
		// silence for "www" must not also mute "www-old".
		re, err := regexp.Compile("^(?:" + m.Value + ")$")
		if err != nil {
			return c, err
		}
		c.re = re
	}
	return c, nil
}

func (c compiled) matches(v string) bool {
	var ok bool
	if c.re != nil {
		ok = c.re.MatchString(v)
	} else {
		ok = v == c.Value
	}
	return ok == c.IsEqual
}

// compileAll compiles the matchers of s, or reports every bad one, each
// named by its position and as written.
func compileAll(ms []Matcher) ([]compiled, error) {
	if len(ms) == 0 {
		return nil, fmt.Errorf("%w: at least one matcher is required", ErrInvalid)
	}
	var problems []string
	out := make([]compiled, len(ms))
	allMatchEmpty := true
	for i, m := range ms {
		if m.Name == "" {
			problems = append(problems, fmt.Sprintf("matcher %d (%s): label name is empty", i+1, m))
			continue
		}
		c, err := compile(m)
		if err != nil {
			problems = append(problems, fmt.Sprintf("matcher %d (%s): bad regular expression: %v", i+1, m, err))
			continue
		}
		out[i] = c
		// Only = and =~ count, as in Alertmanager: host!="www1" alone
		// is a deliberate "everything but".
		allMatchEmpty = allMatchEmpty && c.IsEqual && c.matches("")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	// A silence whose every matcher accepts the empty value also mutes
	// every instance that lacks those labels: with host=~".*" alone, all
	// of them. Alertmanager refuses it for the same reason.
	if allMatchEmpty {
		return nil, fmt.Errorf("%w: matchers %s accept an empty value, so they would silence every alert without those labels; at least one = or =~ matcher must require a value", ErrInvalid, matcherList(ms))
	}
	// All must match, so the order is free: string comparisons first, so
	// most silences are ruled out before any regexp runs.
	slices.SortStableFunc(out, func(a, b compiled) int {
		return cmp.Compare(boolInt(a.re != nil), boolInt(b.re != nil))
	})
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func matcherList(ms []Matcher) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return "{" + strings.Join(s, ", ") + "}"
}
