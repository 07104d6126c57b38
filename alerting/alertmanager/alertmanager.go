// Package alertmanager is the Prometheus Alertmanager notifier: it posts each
// notification as an alert to Alertmanager's API (POST /api/v2/alerts), which
// then groups, silences, inhibits and routes it like an alert of Prometheus.
// A group of notifications is posted as one list, one request.
package alertmanager

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/webhook"
)

// Defaults of Config.
const (
	DefaultTimeout = 10 * time.Second
	// DefaultValidity is how long a firing alert stays active in
	// Alertmanager when nothing re-sends it. dmonitor says when an incident
	// resolves, so a long validity only matters when dmonitor dies with
	// alerts open; a short one would resolve long incidents that are not
	// repeated.
	DefaultValidity = 24 * time.Hour
)

// AnnotationID is the annotation carrying the notification's id: Alertmanager
// identifies alerts by their labels, so the id cannot be a label (a repeat,
// with its own id, is the same alert).
const AnnotationID = "dmonitor_id"

// Config configures a Notifier.
type Config struct {
	// URL is the Alertmanager's base URL (http or https), as in
	// dmonitor.yaml's alertmanager.url; alerts go to URL/api/v2/alerts.
	URL string
	// GeneratorURL is sent as every alert's generatorURL: where a user
	// finds the alert's source, such as dmonitor's status page. Optional.
	GeneratorURL string
	// Validity is how far beyond the delivery a firing alert's endsAt is
	// set; DefaultValidity when zero. Alertmanager resolves the alert by
	// itself at endsAt unless it is sent again, as Prometheus re-sends its
	// alerts (Prometheus uses four times its resend interval). Repeats
	// (a rule's repeat_interval) re-send it: incidents that may last longer
	// than Validity need a repeat interval shorter than it.
	Validity time.Duration
	Timeout  time.Duration // per delivery; DefaultTimeout when zero
	// HTTPClient sends the requests; nil means a client with Go's default
	// transport.
	HTTPClient *http.Client
}

// Notifier posts notifications to an Alertmanager. It is safe for
// concurrent use.
type Notifier struct {
	url          *url.URL // of POST /api/v2/alerts
	generatorURL string
	validity     time.Duration
	timeout      time.Duration
	client       *http.Client
	now          func() time.Time
}

var _ alerting.BatchNotifier = (*Notifier)(nil)

// New returns a Notifier for cfg, or an error naming every field that is
// wrong. It does not connect.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil:
		errs = append(errs, errors.New("alertmanager url: not a valid URL")) // Parse's error would show a password
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("alertmanager url %q: scheme must be http or https", u.Redacted()))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("alertmanager url %q: no host", u.Redacted()))
	}
	if cfg.GeneratorURL != "" {
		if g, err := url.Parse(cfg.GeneratorURL); err != nil || !g.IsAbs() {
			errs = append(errs, fmt.Errorf("alertmanager generator url %q: not an absolute URL", cfg.GeneratorURL))
		}
	}
	if cfg.Validity < 0 {
		errs = append(errs, fmt.Errorf("alertmanager validity %v: negative", cfg.Validity))
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("alertmanager timeout %v: negative", cfg.Timeout))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Notifier{
		url:          u.JoinPath("api", "v2", "alerts"),
		generatorURL: cfg.GeneratorURL,
		validity:     cmp.Or(cfg.Validity, DefaultValidity),
		timeout:      cmp.Or(cfg.Timeout, DefaultTimeout),
		client:       cmp.Or(cfg.HTTPClient, &http.Client{}),
		now:          time.Now,
	}, nil
}

// postableAlert is Alertmanager's API v2 postableAlert.
type postableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Notify posts n as one alert. Its labels are webhook.Labels(n) (alertname is
// the rule) with names made valid for Alertmanager (every character outside
// [a-zA-Z0-9_] becomes "_", a leading digit gets a "_" before it) and empty
// values left out, as Prometheus does. Its annotations are n's, named the
// same way, plus AnnotationID. startsAt is n.StartsAt; endsAt is the
// resolution time when resolved, and Validity past the later of now and
// n.EvaluatedAt while firing, so a firing alert delivered late is still
// active when it arrives.
//
// A failure is worth retrying (retry true) when the request did not get
// through or Alertmanager answered 5xx or 429; a 400 (an alert it rejects)
// is permanent.
func (a *Notifier) Notify(ctx context.Context, n *alerting.Notification) (retry bool, err error) {
	body, err := json.Marshal([]postableAlert{a.alert(n)})
	if err != nil {
		return false, fmt.Errorf("encode alert of notification %s: %w", n.ID, err)
	}
	return webhook.Post(ctx, a.client, a.url, a.timeout, []string{n.ID}, body)
}

// NotifyBatch posts ns as one list of alerts, each as Notify makes it, in
// one request. group is not sent: Alertmanager groups by its own routes.
// Its outcome is classified as Notify's; Alertmanager takes or refuses a
// list as a whole.
func (a *Notifier) NotifyBatch(ctx context.Context, _ map[string]string, ns []*alerting.Notification) (retry bool, err error) {
	alerts := make([]postableAlert, len(ns))
	for i, n := range ns {
		alerts[i] = a.alert(n)
	}
	ids := webhook.IDs(ns)
	body, err := json.Marshal(alerts)
	if err != nil {
		return false, fmt.Errorf("encode alerts of %s: %w", webhook.Describe(ids), err)
	}
	return webhook.Post(ctx, a.client, a.url, a.timeout, ids, body)
}

func (a *Notifier) alert(n *alerting.Notification) postableAlert {
	labels := make(map[string]string, len(n.Labels)+2)
	for k, v := range webhook.Labels(n) {
		if v != "" {
			labels[Name(k)] = v
		}
	}
	annotations := make(map[string]string, len(n.Annotations)+1)
	for k, v := range n.Annotations {
		annotations[Name(k)] = v
	}
	annotations[AnnotationID] = n.ID
	p := postableAlert{
		Labels:       labels,
		Annotations:  annotations,
		StartsAt:     n.StartsAt.UTC(),
		GeneratorURL: a.generatorURL,
	}
	if n.Status == alerting.StatusResolved {
		p.EndsAt = cmp.Or(n.EndsAt, n.EvaluatedAt).UTC()
	} else {
		p.EndsAt = later(a.now(), n.EvaluatedAt).Add(a.validity).UTC()
	}
	return p
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Name returns s as a valid Alertmanager label or annotation name: every
// character outside [a-zA-Z0-9_] replaced by "_", and "_" put before a
// leading digit. "team-name" becomes "team_name".
func Name(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	if s[0] >= '0' && s[0] <= '9' {
		b.WriteByte('_')
	}
	for _, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
