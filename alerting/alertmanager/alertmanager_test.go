package alertmanager_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/alertmanager"
	"github.com/dmonitor/dmonitor/alerting/webhook"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/syncbuf"
)

// binary is Debian's prometheus-alertmanager (scripts/test-deps installs it).
const binary = "/usr/bin/prometheus-alertmanager"

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// startAlertmanager runs a real Alertmanager on a free loopback port, with
// one receiver that sends nothing and no clustering, and returns its base
// URL once it is ready.
func startAlertmanager(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(binary); err != nil {
		t.Skipf("Alertmanager not installed (%v): run scripts/test-deps or apt-get install prometheus-alertmanager", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte("route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The port is free when we pick it, but another process may take it
	// before Alertmanager binds it; then Alertmanager exits, and we try a
	// new one.
	var out syncbuf.Buffer
	for try := 0; try < 3; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cmd := exec.Command(binary,
			"--config.file="+cfg,
			"--storage.path="+filepath.Join(dir, fmt.Sprint("data", try)),
			"--cluster.listen-address=", // no gossip: one node, no port of its own
			"--web.listen-address="+addr,
		)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		base := "http://" + addr
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{} // try another port
				continue
			default:
			}
			if resp, err := http.Get(base + "/-/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return base
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		select {
		case <-exited:
		default:
			t.Fatalf("Alertmanager on %s not ready within 20s:\n%s", addr, out.String())
		}
	}
	t.Fatalf("Alertmanager did not start:\n%s", out.String())
	return ""
}

// amAlert is what GET /api/v2/alerts shows of an alert.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

// alerts returns what Alertmanager lists for the rule, as its UI and amtool
// do: the default query, active alerts only.
func alerts(t *testing.T, base, rule string) []amAlert {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts?filter=" + url.QueryEscape(`alertname="`+rule+`"`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v2/alerts: %s", resp.Status)
	}
	var out []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func newNotifier(t *testing.T, cfg alertmanager.Config) *alertmanager.Notifier {
	t.Helper()
	n, err := alertmanager.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// incident runs one instance of www-http on www1 through the state machine:
// it fires, is repeated once, and resolves.
func incident() (firing, repeat, resolved *alerting.Notification) {
	i := alerting.Instance{Rule: "www-http", Labels: map[string]string{
		"host": "www1", "check": "http", "severity": "critical", "team-name": "web",
	}}
	p := alerting.Params{RepeatInterval: time.Minute}
	in := alerting.Input{Active: true, Annotations: map[string]string{"summary": "www1 http down from 2 of 3 observers"}}
	i, tr := i.Next(t0, in, p)
	firing = tr.Notification
	i, tr = i.Next(t0.Add(time.Minute), in, p)
	repeat = tr.Notification
	_, tr = i.Next(t0.Add(5*time.Minute), alerting.Input{}, p)
	return firing, repeat, tr.Notification
}

func TestAlertmanagerShowsFiringThenResolved(t *testing.T) {
	base := startAlertmanager(t)
	am := newNotifier(t, alertmanager.Config{URL: base, GeneratorURL: "http://dmonitor.example.org:2929/status"})
	firing, repeat, resolved := incident()
	ctx := context.Background()

	if retry, err := am.Notify(ctx, firing); err != nil {
		t.Fatalf("Notify firing: %v (retry %v)", err, retry)
	}
	got := alerts(t, base, "www-http")
	if len(got) != 1 {
		t.Fatalf("Alertmanager lists %d alerts for www-http while it fires, want 1: %+v", len(got), got)
	}
	a := got[0]
	// The label that Alertmanager would refuse is renamed, not dropped.
	wantLabels := map[string]string{"alertname": "www-http", "host": "www1", "check": "http", "severity": "critical", "team_name": "web"}
	if !maps.Equal(a.Labels, wantLabels) {
		t.Errorf("labels %v, want %v", a.Labels, wantLabels)
	}
	if a.Status.State != "active" {
		t.Errorf("state %q, want active", a.Status.State)
	}
	if a.Annotations[alertmanager.AnnotationID] != firing.ID || a.Annotations["summary"] != "www1 http down from 2 of 3 observers" {
		t.Errorf("annotations %v, want dmonitor_id %s and the summary", a.Annotations, firing.ID)
	}
	if !a.StartsAt.Equal(t0) {
		t.Errorf("startsAt %v, want the incident's start %v", a.StartsAt, t0)
	}
	if !a.EndsAt.After(time.Now().Add(time.Hour)) {
		t.Errorf("endsAt %v: a firing alert must stay active for the validity", a.EndsAt)
	}
	if a.GeneratorURL != "http://dmonitor.example.org:2929/status" {
		t.Errorf("generatorURL %q", a.GeneratorURL)
	}
	// The webhook's fingerprint is Alertmanager's, for the same labels.
	same := *firing
	same.Labels = maps.Clone(firing.Labels)
	same.Labels["team_name"] = same.Labels["team-name"]
	delete(same.Labels, "team-name")
	if fp := webhook.Payload("am", "", &same).Alerts[0].Fingerprint; fp != a.Fingerprint {
		t.Errorf("webhook fingerprint %s, Alertmanager's %s", fp, a.Fingerprint)
	}

	// A repeat is the same alert, with the repeat's id.
	if retry, err := am.Notify(ctx, repeat); err != nil {
		t.Fatalf("Notify repeat: %v (retry %v)", err, retry)
	}
	got = alerts(t, base, "www-http")
	if len(got) != 1 || got[0].Annotations[alertmanager.AnnotationID] != repeat.ID || got[0].Fingerprint != a.Fingerprint {
		t.Fatalf("after the repeat: %+v, want the one alert with dmonitor_id %s", got, repeat.ID)
	}

	// Resolved: it leaves the list of alerts, as Prometheus's do.
	if retry, err := am.Notify(ctx, resolved); err != nil {
		t.Fatalf("Notify resolved: %v (retry %v)", err, retry)
	}
	if got := alerts(t, base, "www-http"); len(got) != 0 {
		t.Errorf("Alertmanager still lists www-http after it resolved: %+v", got)
	}
}

func TestAlertmanagerRetryClassification(t *testing.T) {
	base := startAlertmanager(t)
	firing, _, _ := incident()
	for _, tc := range []struct {
		name  string
		url   string
		n     *alerting.Notification
		retry bool
	}{
		// Alertmanager rejects an alert that ends before it starts with
		// 400: the same alert would be rejected again.
		{name: "rejected", url: base, n: &alerting.Notification{ID: "bad", Status: alerting.StatusResolved, Rule: "r",
			StartsAt: t0, EndsAt: t0.Add(-time.Minute), EvaluatedAt: t0}},
		// Nothing listens: the Alertmanager is down.
		{name: "down", url: "http://" + loopback.FreeAddr(t), n: firing, retry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			am := newNotifier(t, alertmanager.Config{URL: tc.url, Timeout: 5 * time.Second})
			retry, err := am.Notify(context.Background(), tc.n)
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			if retry != tc.retry {
				t.Errorf("retry %v, want %v (err %v)", retry, tc.retry, err)
			}
			if !strings.Contains(err.Error(), tc.n.ID) {
				t.Errorf("error %q does not name the notification", err)
			}
		})
	}
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"host":       "host",       // valid already
		"team-name":  "team_name",  // dash
		"a.b/c":      "a_b_c",      // punctuation
		"9lives":     "_9lives",    // leading digit
		"grüße":      "gr__e",      // non-ASCII, one "_" per character
		"":           "_",          // empty
		"Under_Case": "Under_Case", // case kept
	} {
		if got := alertmanager.Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  alertmanager.Config
		want string
	}{
		{alertmanager.Config{URL: "localhost:9093"}, "scheme"},                                              // no scheme
		{alertmanager.Config{URL: "http://"}, "no host"},                                                    // no host
		{alertmanager.Config{URL: "http://127.0.0.1:9093", Validity: -time.Minute}, "validity"},             // negative
		{alertmanager.Config{URL: "http://127.0.0.1:9093", GeneratorURL: "/status"}, "generator url"},       // relative
		{alertmanager.Config{URL: "http://127.0.0.1:9093", Timeout: -time.Second}, "timeout -1s: negative"}, // negative
	} {
		if _, err := alertmanager.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error about %q", tc.cfg, err, tc.want)
		}
	}
}

// hostIncident is www-http on host: its firing and resolved notification.
func hostIncident(host string) (firing, resolved *alerting.Notification) {
	i := alerting.Instance{Rule: "www-http", Labels: map[string]string{"host": host, "check": "http"}}
	in := alerting.Input{Active: true}
	i, tr := i.Next(t0, in, alerting.Params{})
	firing = tr.Notification
	_, tr = i.Next(t0.Add(5*time.Minute), alerting.Input{}, alerting.Params{})
	return firing, tr.Notification
}

// TestAlertmanagerBatch posts a group as one list: a real Alertmanager
// shows each of its alerts, with its own id, and drops them all when the
// resolved group follows; a recorder sees one request per group.
func TestAlertmanagerBatch(t *testing.T) {
	var firing, resolved []*alerting.Notification
	for _, h := range []string{"www1", "www2", "www3"} {
		f, r := hostIncident(h)
		firing, resolved = append(firing, f), append(resolved, r)
	}
	ctx := context.Background()

	t.Run("one request", func(t *testing.T) {
		type request struct {
			ids    string
			alerts int
		}
		got := make(chan request, 10)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var list []map[string]any
			if err := json.NewDecoder(r.Body).Decode(&list); err != nil {
				t.Errorf("body: %v", err)
			}
			got <- request{r.Header.Get(webhook.HeaderNotificationID), len(list)}
		}))
		t.Cleanup(srv.Close)
		am := newNotifier(t, alertmanager.Config{URL: srv.URL})
		if _, err := am.NotifyBatch(ctx, map[string]string{"alertname": "www-http"}, firing); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		close(got)
		var reqs []request
		for r := range got {
			reqs = append(reqs, r)
		}
		want := request{firing[0].ID + ", " + firing[1].ID + ", " + firing[2].ID, 3}
		if len(reqs) != 1 || reqs[0] != want {
			t.Errorf("requests %+v, want one: %+v", reqs, want)
		}
	})

	t.Run("alertmanager", func(t *testing.T) {
		base := startAlertmanager(t)
		am := newNotifier(t, alertmanager.Config{URL: base})
		if retry, err := am.NotifyBatch(ctx, nil, firing); err != nil {
			t.Fatalf("NotifyBatch firing: %v (retry %v)", err, retry)
		}
		got := alerts(t, base, "www-http")
		ids := map[string]string{}
		for _, a := range got {
			ids[a.Labels["host"]] = a.Annotations[alertmanager.AnnotationID]
		}
		want := map[string]string{"www1": firing[0].ID, "www2": firing[1].ID, "www3": firing[2].ID}
		if !maps.Equal(ids, want) {
			t.Errorf("Alertmanager shows %v (host: dmonitor_id), want %v", ids, want)
		}
		if retry, err := am.NotifyBatch(ctx, nil, resolved); err != nil {
			t.Fatalf("NotifyBatch resolved: %v (retry %v)", err, retry)
		}
		if got := alerts(t, base, "www-http"); len(got) != 0 {
			t.Errorf("Alertmanager still lists %d alerts after the resolved group", len(got))
		}
	})
}
