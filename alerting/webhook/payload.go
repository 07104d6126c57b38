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
const LabelAlertname = alerting.LabelAlertname

// Message is the JSON body of a webhook notification: Alertmanager's webhook
// payload (version 4), so tools that accept Alertmanager webhooks accept it.
// Payload's Message holds one alert, and its group and common labels are
// that alert's labels; GroupPayload's holds a group of alerts, as an
// Alertmanager route's group_by gathers them.
type Message struct {
	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts int    `json:"truncatedAlerts"`
	// Status is "firing" when any of the alerts fires, "resolved" when all
	// are resolved.
	Status            string            `json:"status"`
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

// Payload returns the Message announcing n alone to the receiver named
// receiver: its group is the alert itself, so groupLabels, commonLabels and
// groupKey are made of all its labels. externalURL is the URL of this
// dmonitor (its control API), or empty; the alert's generatorURL is its
// status page, externalURL + "/status". Times are in UTC. Payload does not
// keep n.
func Payload(receiver, externalURL string, n *alerting.Notification) Message {
	a := alert(generator(externalURL), n)
	return Message{
		Version: Version,
		// Alertmanager's form, route key ":" group labels, with the root
		// route's key: one group per alert, the same while it fires and
		// once it is resolved.
		GroupKey:          "{}:" + toLabelSet(a.Labels).String(),
		Status:            a.Status,
		Receiver:          receiver,
		GroupLabels:       maps.Clone(a.Labels),
		CommonLabels:      maps.Clone(a.Labels),
		CommonAnnotations: maps.Clone(a.Annotations),
		ExternalURL:       externalURL,
		Alerts:            []Alert{a},
	}
}

// GroupPayload returns the Message announcing ns, one alert each in their
// order, to the receiver named receiver, as Alertmanager announces a group:
// groupLabels is group (the labels named by the receiver's group_by, see
// alerting.BatchNotifier), groupKey is "{}:" and group as a label set
// (the same for every message of the group), commonLabels and
// commonAnnotations are those every alert has with the same value, and
// status is firing when any alert fires. externalURL is as for Payload.
// GroupPayload does not keep ns or group.
func GroupPayload(receiver, externalURL string, group map[string]string, ns []*alerting.Notification) Message {
	gen := generator(externalURL)
	alerts := make([]Alert, len(ns))
	status := alerting.StatusResolved
	for i, n := range ns {
		alerts[i] = alert(gen, n)
		if n.Status == alerting.StatusFiring {
			status = alerting.StatusFiring
		}
	}
	groupLabels := maps.Clone(group)
	if groupLabels == nil {
		groupLabels = map[string]string{}
	}
	m := Message{
		Version:           Version,
		GroupKey:          "{}:" + toLabelSet(groupLabels).String(),
		Status:            string(status),
		Receiver:          receiver,
		GroupLabels:       groupLabels,
		CommonLabels:      map[string]string{},
		CommonAnnotations: map[string]string{},
		ExternalURL:       externalURL,
		Alerts:            alerts,
	}
	if len(alerts) > 0 {
		m.CommonLabels = common(alerts, func(a Alert) map[string]string { return a.Labels })
		m.CommonAnnotations = common(alerts, func(a Alert) map[string]string { return a.Annotations })
	}
	return m
}

// common returns the pairs of field that every alert has.
func common(alerts []Alert, field func(Alert) map[string]string) map[string]string {
	out := maps.Clone(field(alerts[0]))
	for _, a := range alerts[1:] {
		m := field(a)
		maps.DeleteFunc(out, func(k, v string) bool {
			w, ok := m[k]
			return !ok || w != v
		})
	}
	return out
}

// generator returns the generatorURL of the alerts: the status page of
// externalURL, or "" without one.
func generator(externalURL string) string {
	if externalURL == "" {
		return ""
	}
	return strings.TrimSuffix(externalURL, "/") + "/status"
}

// alert returns n as an Alert of a Message.
func alert(generatorURL string, n *alerting.Notification) Alert {
	labels := Labels(n)
	annotations := maps.Clone(n.Annotations)
	if annotations == nil {
		annotations = map[string]string{} // "{}", never null, in the JSON
	}
	a := Alert{
		ID:           n.ID,
		Status:       string(n.Status),
		Labels:       labels,
		Annotations:  annotations,
		StartsAt:     n.StartsAt.UTC(),
		GeneratorURL: generatorURL,
		Fingerprint:  toLabelSet(labels).Fingerprint().String(),
	}
	if n.Status == alerting.StatusResolved {
		a.EndsAt = n.EndsAt.UTC()
	}
	return a
}

func toLabelSet(m map[string]string) model.LabelSet {
	s := make(model.LabelSet, len(m))
	for k, v := range m {
		s[model.LabelName(k)] = model.LabelValue(v)
	}
	return s
}
