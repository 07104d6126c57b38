// Package webhook is the generic webhook notifier: it POSTs Alertmanager's
// webhook payload (version 4) about a notification, or a group of them, to a
// URL. Payload and Message are also the JSON that alerting/exec writes to a
// command's stdin.
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
)

// DefaultTimeout bounds one delivery (connect, request and reply) when
// Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// HeaderNotificationID carries the notification's id in every request, so a
// receiver can drop a duplicate without parsing the body. A request about a
// group carries the ids of all its alerts, in their order, as one list
// separated by ", " (HTTP's list syntax; each id is hex).
const HeaderNotificationID = "X-Dmonitor-Notification-Id"

// maxErrorBody is how much of a refusal's body goes into the error.
const maxErrorBody = 512

// Config configures a Notifier.
type Config struct {
	URL string // http or https; user:password@ in it is sent as basic auth
	// Receiver is the receiver's name in dmonitor.yaml, sent as the
	// payload's "receiver".
	Receiver string
	// ExternalURL is this dmonitor's URL, sent as "externalURL"; see
	// Payload. Empty is allowed.
	ExternalURL string
	Timeout     time.Duration // per delivery; DefaultTimeout when zero
	// HTTPClient sends the requests; nil means a client with Go's default
	// transport (which honours HTTP_PROXY and friends).
	HTTPClient *http.Client
}

// Notifier posts notifications to a webhook. It is safe for concurrent use.
type Notifier struct {
	url         *url.URL
	receiver    string
	externalURL string
	timeout     time.Duration
	client      *http.Client
}

var _ alerting.BatchNotifier = (*Notifier)(nil)

// New returns a Notifier for cfg, or an error naming every field that is
// wrong. It does not connect: a receiver that is down is a delivery failure,
// not a configuration error.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	u, err := parseURL(cfg.URL)
	if err != nil {
		errs = append(errs, fmt.Errorf("webhook url: %w", err))
	}
	if cfg.ExternalURL != "" {
		if _, err := parseURL(cfg.ExternalURL); err != nil {
			errs = append(errs, fmt.Errorf("webhook external url: %w", err))
		}
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("webhook timeout %v: negative", cfg.Timeout))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Notifier{
		url:         u,
		receiver:    cfg.Receiver,
		externalURL: cfg.ExternalURL,
		timeout:     cmp.Or(cfg.Timeout, DefaultTimeout),
		client:      cmp.Or(cfg.HTTPClient, &http.Client{}),
	}, nil
}

// parseURL accepts an absolute http or https URL with a host. Its errors
// show the URL with any password redacted.
func parseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's error quotes the input, password and all.
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", u.Redacted())
	}
	return u, nil
}

// Notify posts Payload(receiver, externalURL, n) to the URL. Any 2xx reply
// is success. A failure is worth retrying (retry true) when the request did
// not get through (connection refused, timeout, reset) or the reply is 5xx
// or 429 Too Many Requests; any other reply, a 4xx refusal or an unfollowed
// redirect, is permanent.
func (w *Notifier) Notify(ctx context.Context, n *alerting.Notification) (retry bool, err error) {
	body, err := json.Marshal(Payload(w.receiver, w.externalURL, n))
	if err != nil {
		return false, fmt.Errorf("encode webhook payload of notification %s: %w", n.ID, err)
	}
	return Post(ctx, w.client, w.url, w.timeout, []string{n.ID}, body)
}

// NotifyBatch posts GroupPayload(receiver, externalURL, group, ns) to the
// URL: one request with one alert per notification, the ids of all in
// HeaderNotificationID. Its outcome is classified as Notify's.
func (w *Notifier) NotifyBatch(ctx context.Context, group map[string]string, ns []*alerting.Notification) (retry bool, err error) {
	ids := IDs(ns)
	body, err := json.Marshal(GroupPayload(w.receiver, w.externalURL, group, ns))
	if err != nil {
		return false, fmt.Errorf("encode webhook payload of %s: %w", Describe(ids), err)
	}
	return Post(ctx, w.client, w.url, w.timeout, ids, body)
}

// IDs returns the ids of ns, in order.
func IDs(ns []*alerting.Notification) []string {
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	return ids
}

// Describe names the notifications ids in an error: "notification ID", or
// "3 notifications (ID and 2 more)", the first id being the one a log
// names too.
func Describe(ids []string) string {
	switch len(ids) {
	case 0:
		return "no notification"
	case 1:
		return "notification " + ids[0]
	}
	return fmt.Sprintf("%d notifications (%s and %d more)", len(ids), ids[0], len(ids)-1)
}

// Post POSTs body as JSON to u with ids in HeaderNotificationID, within
// timeout, and classifies the outcome as Notify documents. The error names
// the notifications and the URL (without its password). It is shared with
// the Alertmanager notifier, whose API answers the same way.
func Post(ctx context.Context, client *http.Client, u *url.URL, timeout time.Duration, ids []string, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := Describe(ids)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("%s to %s: %w", what, u.Redacted(), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dmonitor")
	req.Header.Set(HeaderNotificationID, strings.Join(ids, ", "))
	resp, err := client.Do(req)
	if err != nil {
		// Do's error already names the method and the redacted URL.
		return true, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		// Read the rest so the connection can be reused; a reply that
		// does not end is not our problem once the status said yes.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return false, nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
	return retry, fmt.Errorf("%s to %s: %s: %s", what, u.Redacted(), resp.Status, strings.TrimSpace(string(msg)))
}
