package webhook

import (
	"maps"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/dmonitor/dmonitor/alerting"
)

// Version is the version of Alertmanager's webhook payload that Message
// follows.
const Version = "4"

// LabelAlertname is the label that names the rule, as in Prometheus.
const LabelAlertname = "alertname"

// Message is the JSON body of a webhook notification: Alertmanager's webhook
// payload (version 4), so tools that accept Alertmanager webhooks accept it.
// dmonitor does not group: a Message always holds exactly one alert, so the
// group and common labels are that alert's labels.
type Message struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"` // "firing" or "resolved"
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of a Message.
type Alert struct {
	// ID is the notification's stable id (alerting.Notification.ID), a
	// dmonitor addition: a receiver drops a Message whose id it has seen.
	ID          string            `json:"id"`
	Status      string            `json:"status"` // "firing" or "resolved"
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	// EndsAt is the resolution time; while firing it is the zero time,
	// which encodes as "0001-01-01T00:00:00Z", as Alertmanager sends it.
	EndsAt       time.Time `json:"endsAt"`
	GeneratorURL string    `json:"generatorURL"`
	// Fingerprint is Alertmanager's fingerprint of Labels (64-bit FNV-1a,
	// 16 hex digits): the same for the firing and the resolved alert, and
	// the same an Alertmanager shows for these labels.
	Fingerprint string `json:"fingerprint"`
}

// Labels returns the labels under which n is announced: n's labels, with
// alertname set to the rule and severity to n.Severity when n's labels have
// none.
func Labels(n *alerting.Notification) map[string]string {
	l := make(map[string]string, len(n.Labels)+2)
	maps.Copy(l, n.Labels)
	l[LabelAlertname] = n.Rule
	if _, ok := l[alerting.LabelSeverity]; !ok && n.Severity != "" {
		l[alerting.LabelSeverity] = n.Severity
	}
	return l
}

// Payload returns the Message announcing n to the receiver named receiver.
// externalURL is the URL of this dmonitor (its control API), or empty; the
// alert's generatorURL is its status page, externalURL + "/status". Times
// are in UTC. Payload does not keep n.
func Payload(receiver, externalURL string, n *alerting.Notification) Message {
	labels := Labels(n)
	set := toLabelSet(labels)
	annotations := maps.Clone(n.Annotations)
	if annotations == nil {
		annotations = map[string]string{} // "{}", never null, in the JSON
	}
	var generator string
	if externalURL != "" {
		generator = strings.TrimSuffix(externalURL, "/") + "/status"
	}
	status := string(n.Status)
	alert := Alert{
		ID:           n.ID,
		Status:       status,
		Labels:       labels,
		Annotations:  annotations,
		StartsAt:     n.StartsAt.UTC(),
		GeneratorURL: generator,
		Fingerprint:  set.Fingerprint().String(),
	}
	if n.Status == alerting.StatusResolved {
		alert.EndsAt = n.EndsAt.UTC()
	}
	return Message{
		Version: Version,
		// Alertmanager's form, route key ":" group labels, with the root
		// route's key: one group per alert, the same while it fires and
		// once it is resolved.
		GroupKey:          "{}:" + set.String(),
		Status:            status,
		Receiver:          receiver,
		GroupLabels:       maps.Clone(labels),
		CommonLabels:      maps.Clone(labels),
		CommonAnnotations: maps.Clone(annotations),
		ExternalURL:       externalURL,
		Alerts:            []Alert{alert},
	}
}

func toLabelSet(m map[string]string) model.LabelSet {
	s := make(model.LabelSet, len(m))
	for k, v := range m {
		s[model.LabelName(k)] = model.LabelValue(v)
	}
	return s
}
