package webhook_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/webhook"
	"github.com/dmonitor/dmonitor/internal/alertingtest"
	"github.com/dmonitor/dmonitor/internal/loopback"
)

// startDispatcher opens a Dispatcher journaled in dir with one receiver,
// "hooks", posting to url, and runs it until stop.
func startDispatcher(t *testing.T, dir, url string) (d *alerting.Dispatcher, stop func()) {
	t.Helper()
	w := newNotifier(t, webhook.Config{URL: url, Receiver: "hooks", Timeout: 5 * time.Second})
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	d, err := alerting.OpenDispatcher(map[string]alerting.Notifier{"hooks": w}, logger,
		alerting.DispatcherOptions{InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return d, stop
}

func waitStats(t *testing.T, d *alerting.Dispatcher, ok func(alerting.ReceiverStats) bool) alerting.ReceiverStats {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := d.Stats()["hooks"]
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats of hooks: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDispatcherReceiverDownThenUp queues the notifications of three
// incidents for a webhook that is down, restarts dmonitor's dispatcher while
// it is still down, and brings the webhook up: it gets every notification,
// once, in order, with the original times.
func TestDispatcherReceiverDownThenUp(t *testing.T) {
	addr := loopback.FreeAddr(t)
	dir := t.TempDir()
	f1, r1 := incident("www1", t0)
	f2, r2 := incident("www2", t0.Add(time.Minute))
	f3, r3 := incident("www3", t0.Add(2*time.Minute))
	want := []*alerting.Notification{f1, f2, r1, f3, r2, r3}

	d, stop := startDispatcher(t, dir, "http://"+addr+"/alerts")
	for _, n := range want {
		if err := d.Send("hooks", *n); err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Retried >= 3 })
	stop() // dmonitor restarts while the receiver is down

	d, stop = startDispatcher(t, dir, "http://"+addr+"/alerts")
	waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Retried >= 3 })
	if s := d.Stats()["hooks"]; s.Sent != 0 || s.Queued != len(want) {
		t.Fatalf("while the receiver is down, after the restart: %+v", s)
	}

	// The receiver comes back on its address.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not take the reserved port back: %v", err)
	}
	h, got := recording(t)
	up := httptest.NewUnstartedServer(h)
	up.Listener = l
	up.Start()
	t.Cleanup(up.Close)

	for i, n := range want {
		r := next(t, got)
		if r.id != n.ID {
			t.Fatalf("request %d: notification %s, want %s", i, r.id, n.ID)
		}
		a := r.body["alerts"].([]any)[0].(map[string]any)
		if a["startsAt"] != n.StartsAt.UTC().Format(time.RFC3339) || a["status"] != string(n.Status) {
			t.Errorf("request %d: %v startsAt %v, want %s %s", i, a["status"], a["startsAt"], n.Status, n.StartsAt.UTC().Format(time.RFC3339))
		}
	}
	s := waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Sent == uint64(len(want)) && s.Queued == 0 })
	stop()
	select {
	case r := <-got:
		t.Errorf("extra request after the backlog: %s", r.id)
	default:
	}
	if s.Failed != 0 || s.Overflowed != 0 {
		t.Errorf("stats %+v: nothing may be failed or dropped", s)
	}
}

// TestDispatcherGroupsHosts: twenty hosts go down at once and come back:
// the webhook is called twice, every firing alert in the first call, every
// resolved one in the second, each alert with its own id.
func TestDispatcherGroupsHosts(t *testing.T) {
	h, got := recording(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	w := newNotifier(t, webhook.Config{URL: srv.URL, Receiver: "hooks"})
	open := alertingtest.NewGate(t0)
	d := alerting.NewDispatcher(map[string]alerting.Notifier{"hooks": w}, nil, alerting.DispatcherOptions{
		Clock: open, Groups: map[string]alerting.Grouping{"hooks": {Wait: time.Second, By: []string{"alertname"}}}})
	var firing, resolved []*alerting.Notification
	for i := range 20 {
		f, r := incident(fmt.Sprintf("www%02d", i), t0)
		firing, resolved = append(firing, f), append(resolved, r)
	}
	alertingtest.Dispatch(t, d, open, "hooks", append(slices.Clone(firing), resolved...))

	for _, want := range []struct {
		status string
		ns     []*alerting.Notification
	}{{"firing", firing}, {"resolved", resolved}} {
		r := next(t, got)
		field(t, r.body, "status", want.status)
		field(t, r.body, "groupLabels", map[string]any{"alertname": "www-http"})
		alerts, _ := r.body["alerts"].([]any)
		if len(alerts) != len(want.ns) {
			t.Fatalf("%s call: %d alerts, want %d", want.status, len(alerts), len(want.ns))
		}
		for i, n := range want.ns {
			a := alerts[i].(map[string]any)
			if a["id"] != n.ID || a["status"] != want.status {
				t.Errorf("%s call, alert %d: %v %v, want %s %s", want.status, i, a["status"], a["id"], want.status, n.ID)
			}
		}
	}
	waitStats(t, d, func(s alerting.ReceiverStats) bool { return s.Sent == 40 && s.Queued == 0 })
	select {
	case r := <-got:
		t.Errorf("a third call: %s", r.id)
	default:
	}
}
