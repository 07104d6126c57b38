package alerting

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"
)

// Status says which side of an incident a notification announces. The
// values are Alertmanager's, so webhook payloads can carry them unchanged.
type Status string

// The two notified transitions.
const (
	StatusFiring   Status = "firing"
	StatusResolved Status = "resolved"
)

// Well-known label and annotation names.
const (
	// LabelAlertname is the label that names the rule, as in Prometheus
	// and Alertmanager: notifiers announce n.Rule under it, and group_by
	// may name it.
	LabelAlertname = "alertname"
	LabelHost      = "host"
	LabelCheck     = "check"
	LabelSeverity  = "severity"

	AnnotationSummary     = "summary"
	AnnotationDescription = "description"
	// AnnotationOutputs holds the observers' plugin outputs, one
	// "observer: output" per line, when the evaluator provides them.
	AnnotationOutputs = "outputs"
	// AnnotationResolvedBy says why an incident was resolved when it was not
	// its condition clearing: its check, host or rule left the
	// configuration.
	AnnotationResolvedBy = "resolved_by"
)

// Notification is one message about one transition of one rule instance, as
// every notifier receives it.
type Notification struct {
	// ID identifies this transition of this incident: the same rule, labels,
	// status and StartsAt give the same ID in every process, before and after
	// a restart, so a receiver can drop a duplicate. See NotificationID.
	ID          string
	Status      Status
	Rule        string
	Labels      map[string]string
	Annotations map[string]string
	Severity    string
	// StartsAt is when the condition became true (the incident's ActiveAt).
	StartsAt time.Time
	// EndsAt is when the incident was resolved; zero while firing.
	EndsAt time.Time
	// EvaluatedAt is the evaluation time that made the transition, the time
	// a message about it should carry however late it is delivered.
	EvaluatedAt time.Time
	// Repeat counts the reminders of a firing incident: 0 for the first
	// firing notification and for resolved ones. A repeat's ID is the
	// incident's firing ID with "."+Repeat appended.
	Repeat int
}

// NotificationID returns the stable id of the notification with status about
// the incident of rule with labels that started at startsAt: the hex of the
// first 16 bytes of the SHA-256 of
//
//	rule 0xff (key 0xff value 0xff, for each label by key) 0xff status 0xff startsAt
//
// with startsAt in UTC as RFC 3339 with nanoseconds. Label order does not
// matter; startsAt counts to the nanosecond, in any time zone.
func NotificationID(rule string, labels map[string]string, status Status, startsAt time.Time) string {
	h := sha256.New()
	// 0xff cannot occur in UTF-8 text, so the fields cannot run into each
	// other and two different inputs cannot hash the same bytes.
	sep := []byte{0xff}
	h.Write([]byte(rule))
	h.Write(sep)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write(sep)
		h.Write([]byte(labels[k]))
		h.Write(sep)
	}
	h.Write(sep)
	h.Write([]byte(status))
	h.Write(sep)
	h.Write([]byte(startsAt.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Notifier delivers a notification to one destination.
type Notifier interface {
	// Notify delivers n. On failure, retry reports whether the same n may
	// succeed later (a connection error, a timeout, a temporary refusal)
	// rather than never (a permanent refusal, an invalid message). Notify
	// must not keep n after it returns.
	Notify(ctx context.Context, n *Notification) (retry bool, err error)
}

// Label returns the value of the label name as notifiers announce n:
// LabelAlertname is the rule, LabelSeverity is n.Severity when n's labels
// have none, and any other name is n's label. ok is false when n has no
// such label.
func (n *Notification) Label(name string) (value string, ok bool) {
	switch name {
	case LabelAlertname:
		return n.Rule, true
	case LabelSeverity:
		if v, ok := n.Labels[name]; ok {
			return v, true
		}
		return n.Severity, n.Severity != ""
	}
	v, ok := n.Labels[name]
	return v, ok
}

// BatchNotifier is a Notifier that can deliver several notifications in
// one message: one webhook call listing them, one mail. A Dispatcher
// whose queue groups (Grouping) delivers through NotifyBatch, batches of
// one included, and through Notify otherwise.
type BatchNotifier interface {
	Notifier
	// NotifyBatch delivers ns, in their queue order, as one message, each
	// still carrying its own ID. group holds the labels they all share by
	// the receiver's group_by, as Notification.Label gives them (empty
	// when group_by is). The outcome is the whole batch's: nil when the
	// destination took it; on failure, retry says whether the same batch
	// may succeed later, as for Notify. NotifyBatch must not keep ns or
	// group after it returns.
	NotifyBatch(ctx context.Context, group map[string]string, ns []*Notification) (retry bool, err error)
}
