package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/webhook"
	"github.com/dmonitor/dmonitor/internal/loopback"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// incident returns the firing and the resolved notification of one incident
// of www-http on host, as Instance.Next makes them, with a rule label "team".
func incident(host string, start time.Time) (firing, resolved *alerting.Notification) {
	l := map[string]string{"host": host, "check": "http", "severity": "critical", "team": "web"}
	i := alerting.Instance{Rule: "www-http", Labels: l}
	in := alerting.Input{Active: true, Annotations: map[string]string{
		"summary": host + " http down from 2 of 3 observers",
		"outputs": "eu-1: CRITICAL - Socket timeout\nus-1: CRITICAL - Connection refused",
	}}
	i, tr := i.Next(start, in, alerting.Params{})
	firing = tr.Notification
	_, tr = i.Next(start.Add(5*time.Minute), alerting.Input{}, alerting.Params{})
	return firing, tr.Notification
}

// request is what the test server saw of one POST.
type request struct {
	method, path, contentType, id string
	body                          map[string]any
}

// recorder starts a webhook endpoint on loopback that answers 200 and hands
// every request to the test.
func recorder(t *testing.T) (*httptest.Server, <-chan request) {
	t.Helper()
	h, got := recording(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, got
}

// recording returns a handler that answers 200 and hands every request to
// the test.
func recording(t *testing.T) (http.Handler, <-chan request) {
	got := make(chan request, 100)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("request body: %v", err)
		}
		got <- request{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get(webhook.HeaderNotificationID), body}
	}), got
}

func next(t *testing.T, got <-chan request) request {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
		return request{}
	}
}

func newNotifier(t *testing.T, cfg webhook.Config) *webhook.Notifier {
	t.Helper()
	n, err := webhook.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNotifyPayload checks every field of the JSON as a receiver reads it,
// by name, for a firing and a resolved notification.
func TestNotifyPayload(t *testing.T) {
	srv, got := recorder(t)
	w := newNotifier(t, webhook.Config{URL: srv.URL + "/alerts", Receiver: "hooks", ExternalURL: "http://dmonitor.example.org:2929"})
	firing, resolved := incident("www1", t0)
	wantLabels := map[string]any{"alertname": "www-http", "host": "www1", "check": "http", "severity": "critical", "team": "web"}
	wantAnnotations := map[string]any{
		"summary": "www1 http down from 2 of 3 observers",
		"outputs": "eu-1: CRITICAL - Socket timeout\nus-1: CRITICAL - Connection refused",
	}
	var fingerprint string
	for _, tc := range []struct {
		n              *alerting.Notification
		status, endsAt string
	}{
		// While firing, endsAt is Alertmanager's zero time.
		{firing, "firing", "0001-01-01T00:00:00Z"},
		// Resolved: endsAt is the resolution, five minutes later.
		{resolved, "resolved", "2025-03-01T12:05:00Z"},
	} {
		if retry, err := w.Notify(context.Background(), tc.n); err != nil {
			t.Fatalf("Notify %s: %v (retry %v)", tc.status, err, retry)
		}
		r := next(t, got)
		if r.method != http.MethodPost || r.path != "/alerts" || r.contentType != "application/json" {
			t.Errorf("%s: %s %s %s, want POST /alerts application/json", tc.status, r.method, r.path, r.contentType)
		}
		if r.id != tc.n.ID {
			t.Errorf("%s: header %s %q, want %q", tc.status, webhook.HeaderNotificationID, r.id, tc.n.ID)
		}
		b := r.body
		wantKeys(t, tc.status+" payload", b, "version", "groupKey", "truncatedAlerts", "status", "receiver",
			"groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts")
		field(t, b, "version", "4")
		field(t, b, "groupKey", `{}:{alertname="www-http", check="http", host="www1", severity="critical", team="web"}`)
		field(t, b, "truncatedAlerts", 0.0)
		field(t, b, "status", tc.status)
		field(t, b, "receiver", "hooks")
		field(t, b, "groupLabels", wantLabels)
		field(t, b, "commonLabels", wantLabels)
		field(t, b, "commonAnnotations", wantAnnotations)
		field(t, b, "externalURL", "http://dmonitor.example.org:2929")

		alerts, _ := b["alerts"].([]any)
		if len(alerts) != 1 {
			t.Fatalf("%s: alerts %v, want one", tc.status, b["alerts"])
		}
		a, _ := alerts[0].(map[string]any)
		wantKeys(t, tc.status+" alert", a, "id", "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint")
		field(t, a, "id", tc.n.ID)
		field(t, a, "status", tc.status)
		field(t, a, "labels", wantLabels)
		field(t, a, "annotations", wantAnnotations)
		field(t, a, "startsAt", "2025-03-01T12:00:00Z") // the original time, however late
		field(t, a, "endsAt", tc.endsAt)
		field(t, a, "generatorURL", "http://dmonitor.example.org:2929/status")
		fp, _ := a["fingerprint"].(string)
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(fp) {
			t.Errorf("%s: fingerprint %q, want 16 hex digits", tc.status, fp)
		}
		if fingerprint != "" && fp != fingerprint {
			t.Errorf("resolved fingerprint %s differs from firing %s: a receiver cannot pair them", fp, fingerprint)
		}
		fingerprint = fp
	}
	if firing.ID == resolved.ID {
		t.Fatal("firing and resolved share an id")
	}

	// Another host is another alert: another fingerprint.
	other, _ := incident("www2", t0)
	if fp := webhook.Payload("hooks", "", other).Alerts[0].Fingerprint; fp == fingerprint {
		t.Errorf("www2 has the fingerprint of www1 (%s)", fp)
	}
}

// TestPayloadEmpty checks a notification without annotations or external URL
// still gives objects, not nulls, where receivers expect objects.
func TestPayloadEmpty(t *testing.T) {
	n := &alerting.Notification{ID: "x", Status: alerting.StatusFiring, Rule: "r", Severity: "warning", StartsAt: t0}
	raw, err := json.Marshal(webhook.Payload("ops", "", n))
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	field(t, b, "commonAnnotations", map[string]any{})
	a := b["alerts"].([]any)[0].(map[string]any)
	field(t, a, "annotations", map[string]any{})
	// Severity comes from the notification when the labels lack it.
	field(t, a, "labels", map[string]any{"alertname": "r", "severity": "warning"})
	field(t, a, "generatorURL", "")
}

func wantKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	want := make(map[string]bool, len(keys))
	for _, k := range keys {
		want[k] = true
		if _, ok := m[k]; !ok {
			t.Errorf("%s: no %q", what, k)
		}
	}
	for k := range m {
		if !want[k] {
			t.Errorf("%s: unexpected %q", what, k)
		}
	}
}

func field(t *testing.T, m map[string]any, key string, want any) {
	t.Helper()
	got := m[key]
	if gm, ok := got.(map[string]any); ok {
		if wm, ok := want.(map[string]any); ok && maps.EqualFunc(gm, wm, func(a, b any) bool { return a == b }) {
			return
		}
	} else if got == want {
		return
	}
	t.Errorf("%s = %#v, want %#v", key, got, want)
}

func TestNotifyRetryClassification(t *testing.T) {
	firing, _ := incident("www1", t0)
	for _, tc := range []struct {
		name   string
		status int // reply; 0: nobody listens
		hang   bool
		retry  bool
		ok     bool
	}{
		{name: "200 delivered", status: 200, ok: true},
		{name: "204 delivered", status: 204, ok: true},
		// The receiver is broken or overloaded: try again later.
		{name: "500", status: 500, retry: true},
		{name: "503", status: 503, retry: true},
		{name: "429 rate limited", status: 429, retry: true},
		// The receiver refuses this message: it would refuse it again.
		{name: "400", status: 400},
		{name: "404", status: 404},
		{name: "401", status: 401},
		// Nothing listens: the receiver is down.
		{name: "closed port", retry: true},
		// No reply within the timeout.
		{name: "timeout", status: 200, hang: true, retry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "http://" + loopback.FreeAddr(t) + "/"
			if tc.status != 0 {
				release := make(chan struct{})
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if tc.hang {
						select {
						case <-release:
						case <-r.Context().Done():
						}
					}
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, "refusal reason")
				}))
				t.Cleanup(srv.Close)
				t.Cleanup(func() { close(release) })
				url = srv.URL
			}
			w := newNotifier(t, webhook.Config{URL: url, Receiver: "hooks", Timeout: 200 * time.Millisecond})
			retry, err := w.Notify(context.Background(), firing)
			if tc.ok {
				if err != nil {
					t.Fatalf("Notify: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			if retry != tc.retry {
				t.Errorf("retry %v, want %v (err %v)", retry, tc.retry, err)
			}
			if !strings.Contains(err.Error(), firing.ID) {
				t.Errorf("error %q does not name the notification", err)
			}
			if tc.status >= 400 && !strings.Contains(err.Error(), "refusal reason") {
				t.Errorf("error %q does not carry the reply", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  webhook.Config
		want string // in the error
	}{
		// Not HTTP.
		{webhook.Config{URL: "ftp://example.org/x"}, "scheme"},
		// Relative.
		{webhook.Config{URL: "/alerts"}, "scheme"},
		// No host.
		{webhook.Config{URL: "http:///alerts"}, "no host"},
		// A password is never shown.
		{webhook.Config{URL: "http://u:secret@/x"}, "no host"},
		// Negative timeout.
		{webhook.Config{URL: "http://127.0.0.1/", Timeout: -time.Second}, "negative"},
		// A bad external URL.
		{webhook.Config{URL: "http://127.0.0.1/", ExternalURL: "dmonitor:2929"}, "external url"},
	} {
		_, err := webhook.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error about %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// TestNotifyBatchPayload posts a group of three alerts, two firing and one
// resolved, and checks every group field as Alertmanager fills it and each
// alert as Payload makes it, with its own id.
func TestNotifyBatchPayload(t *testing.T) {
	srv, got := recorder(t)
	w := newNotifier(t, webhook.Config{URL: srv.URL + "/alerts", Receiver: "hooks", ExternalURL: "http://dmonitor.example.org:2929"})
	f1, r1 := incident("www1", t0)
	f2, _ := incident("www2", t0.Add(time.Minute))
	// Another rule's labels and annotations: only what all three share is
	// common.
	f3, _ := incident("www3", t0.Add(2*time.Minute))
	f3.Rule = "www-tls"
	f3.Annotations = map[string]string{"outputs": f1.Annotations["outputs"]}
	ns := []*alerting.Notification{f2, r1, f3}
	group := map[string]string{"check": "http"}

	if retry, err := w.NotifyBatch(context.Background(), group, ns); err != nil {
		t.Fatalf("NotifyBatch: %v (retry %v)", err, retry)
	}
	r := next(t, got)
	if want := f2.ID + ", " + r1.ID + ", " + f3.ID; r.id != want {
		t.Errorf("header %s %q, want every id, %q", webhook.HeaderNotificationID, r.id, want)
	}
	b := r.body
	wantKeys(t, "batch payload", b, "version", "groupKey", "truncatedAlerts", "status", "receiver",
		"groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts")
	field(t, b, "version", "4")
	// Alertmanager's form: the route key and the group labels.
	field(t, b, "groupKey", `{}:{check="http"}`)
	field(t, b, "truncatedAlerts", 0.0)
	// One alert fires: the group fires.
	field(t, b, "status", "firing")
	field(t, b, "receiver", "hooks")
	field(t, b, "groupLabels", map[string]any{"check": "http"})
	field(t, b, "commonLabels", map[string]any{"check": "http", "severity": "critical", "team": "web"})
	field(t, b, "commonAnnotations", map[string]any{"outputs": f1.Annotations["outputs"]})
	field(t, b, "externalURL", "http://dmonitor.example.org:2929")
	alerts, _ := b["alerts"].([]any)
	if len(alerts) != 3 {
		t.Fatalf("alerts %v, want three", b["alerts"])
	}
	for i, n := range ns {
		a, _ := alerts[i].(map[string]any)
		single := webhook.Payload("hooks", "http://dmonitor.example.org:2929", n).Alerts[0]
		wantKeys(t, "alert", a, "id", "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint")
		field(t, a, "id", n.ID)
		field(t, a, "status", string(n.Status))
		field(t, a, "startsAt", single.StartsAt.Format(time.RFC3339))
		field(t, a, "endsAt", single.EndsAt.Format(time.RFC3339))
		field(t, a, "fingerprint", single.Fingerprint)
		field(t, a, "generatorURL", "http://dmonitor.example.org:2929/status")
		field(t, a, "labels", toAny(single.Labels))
		field(t, a, "annotations", toAny(single.Annotations))
	}

	// All resolved: the group is resolved. No group_by: no group labels,
	// and one groupKey for the receiver.
	_, r2 := incident("www2", t0.Add(time.Minute))
	if _, err := w.NotifyBatch(context.Background(), map[string]string{}, []*alerting.Notification{r1, r2}); err != nil {
		t.Fatal(err)
	}
	b = next(t, got).body
	field(t, b, "status", "resolved")
	field(t, b, "groupKey", "{}:{}")
	field(t, b, "groupLabels", map[string]any{})
	field(t, b, "commonLabels", map[string]any{"alertname": "www-http", "check": "http", "severity": "critical", "team": "web"})
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestNotifyBatchRetryClassification: a group is refused or retried as one
// request is, and the error names how many notifications it held.
func TestNotifyBatchRetryClassification(t *testing.T) {
	f1, _ := incident("www1", t0)
	f2, _ := incident("www2", t0)
	for _, tc := range []struct {
		status int
		retry  bool
	}{{503, true}, {429, true}, {400, false}, {413, false}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
		}))
		t.Cleanup(srv.Close)
		w := newNotifier(t, webhook.Config{URL: srv.URL, Receiver: "hooks"})
		retry, err := w.NotifyBatch(context.Background(), nil, []*alerting.Notification{f1, f2})
		if err == nil || retry != tc.retry {
			t.Errorf("%d: retry %v, err %v; want retry %v and an error", tc.status, retry, err, tc.retry)
		}
		if err != nil && !strings.Contains(err.Error(), "2 notifications ("+f1.ID+" and 1 more)") {
			t.Errorf("%d: error %q does not name the notifications", tc.status, err)
		}
	}
}
