package smtp_test

import (
	"context"
	"net"
	netmail "net/mail"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/alerting/smtp"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

var (
	t0     = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	labels = map[string]string{"host": "www1", "check": "http", "severity": "critical"}
)

// incident returns the firing and the resolved notification of one incident
// of www-http on host, as Instance.Next makes them.
func incident(host string, start time.Time) (firing, resolved *alerting.Notification) {
	l := map[string]string{"host": host, "check": "http", "severity": "critical"}
	i := alerting.Instance{Rule: "www-http", Labels: l}
	in := alerting.Input{Active: true, Annotations: map[string]string{
		"summary": host + " http down from 2 of 3 observers",
		"outputs": "eu-1: CRITICAL - Socket timeout\nus-1: CRITICAL - Connection refused",
		"runbook": "https://wiki.example.org/www",
	}}
	i, tr := i.Next(start, in, alerting.Params{})
	firing = tr.Notification
	_, tr = i.Next(start.Add(5*time.Minute), alerting.Input{}, alerting.Params{})
	return firing, tr.Notification
}

func newNotifier(t *testing.T, cfg smtp.Config) *smtp.Notifier {
	t.Helper()
	if cfg.From == "" {
		cfg.From = "dmonitor@example.org"
	}
	if cfg.To == nil {
		cfg.To = []string{"oncall@example.org"}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	n, err := smtp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNotifyMail(t *testing.T) {
	srv := smtptest.Start(t, "127.0.0.1:0")
	// TLS left empty: opportunistic STARTTLS, and this relay offers none.
	n := newNotifier(t, smtp.Config{Addr: srv.Addr, To: []string{"oncall@example.org", "boss@example.org"}})
	firing, resolved := incident("www1", t0)

	if retry, err := n.Notify(context.Background(), firing); err != nil {
		t.Fatalf("Notify firing: %v (retry %v)", err, retry)
	}
	got := srv.Next(t)
	if got.From != "dmonitor@example.org" {
		t.Errorf("envelope from %q", got.From)
	}
	if want := []string{"oncall@example.org", "boss@example.org"}; !slices.Equal(got.To, want) {
		t.Errorf("envelope to %v, want %v", got.To, want)
	}
	h := got.Msg.Header
	for name, want := range map[string]string{
		"Subject":                    "[FIRING] www-http on www1 (http)",
		"X-Dmonitor-Notification-Id": firing.ID,
		"X-Dmonitor-Status":          "firing",
		"Message-Id":                 "<" + firing.ID + "@example.org>",
		"To":                         "<oncall@example.org>, <boss@example.org>",
	} {
		if h.Get(name) != want {
			t.Errorf("header %s: %q, want %q", name, h.Get(name), want)
		}
	}
	if date, err := h.Date(); err != nil || !date.Equal(t0) {
		t.Errorf("Date %v (%v), want the transition time %v", date, err, t0)
	}
	for _, want := range []string{
		"www1 http down from 2 of 3 observers",
		"Status:      FIRING",
		"Host:        www1",
		"Check:       http",
		"Severity:    critical",
		"Started at:  2025-03-01T12:00:00Z",
		"  severity=critical",
		"  eu-1: CRITICAL - Socket timeout\n  us-1: CRITICAL - Connection refused",
		"runbook:\n  https://wiki.example.org/www",
	} {
		if !strings.Contains(got.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, got.Body)
		}
	}
	if strings.Contains(got.Body, "Resolved at") {
		t.Errorf("firing body has a resolution time:\n%s", got.Body)
	}

	if retry, err := n.Notify(context.Background(), resolved); err != nil {
		t.Fatalf("Notify resolved: %v (retry %v)", err, retry)
	}
	got = srv.Next(t)
	h = got.Msg.Header
	for name, want := range map[string]string{
		"Subject":                    "[RESOLVED] www-http on www1 (http)",
		"X-Dmonitor-Notification-Id": resolved.ID,
		"X-Dmonitor-Status":          "resolved",
		"Message-Id":                 "<" + resolved.ID + "@example.org>",
		// Threaded under the firing mail.
		"In-Reply-To": "<" + firing.ID + "@example.org>",
	} {
		if h.Get(name) != want {
			t.Errorf("header %s: %q, want %q", name, h.Get(name), want)
		}
	}
	if date, err := h.Date(); err != nil || !date.Equal(t0.Add(5*time.Minute)) {
		t.Errorf("Date %v (%v), want the resolution time", date, err)
	}
	for _, want := range []string{"Status:      RESOLVED", "Started at:  2025-03-01T12:00:00Z", "Resolved at: 2025-03-01T12:05:00Z", "Duration:    5m0s"} {
		if !strings.Contains(got.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, got.Body)
		}
	}
}

func TestNotifyAuth(t *testing.T) {
	tests := []struct {
		name      string
		tls       string
		password  string
		wantRetry bool
		wantErr   bool
	}{
		// TLS none: the operator allows credentials over plain SMTP.
		{name: "plain relay", tls: smtp.TLSNone, password: "secret"},
		// STARTTLS not offered: PLAIN only because the relay is loopback.
		{name: "opportunistic starttls on loopback", tls: smtp.TLSStartTLS, password: "secret"},
		// 535 authentication failed is permanent: retrying cannot help.
		{name: "wrong password", tls: smtp.TLSNone, password: "wrong", wantErr: true, wantRetry: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := smtptest.Serve(t, l, "dmonitor", "secret")
			n := newNotifier(t, smtp.Config{Addr: srv.Addr, TLS: tt.tls, Username: "dmonitor", Password: tt.password})
			firing, _ := incident("www1", t0)
			retry, err := n.Notify(context.Background(), firing)
			if (err != nil) != tt.wantErr || retry != tt.wantRetry {
				t.Fatalf("Notify: retry %v, err %v; want retry %v, error %v", retry, err, tt.wantRetry, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got := srv.Next(t); got.User != "dmonitor" {
				t.Errorf("delivered as user %q, want dmonitor", got.User)
			}
		})
	}
}

func TestNotifyRetryClassification(t *testing.T) {
	refuse := func(stage string, code int) func(string) *gosmtp.SMTPError {
		return func(s string) *gosmtp.SMTPError {
			if s != stage {
				return nil
			}
			return &gosmtp.SMTPError{Code: code, Message: "refused by test"}
		}
	}
	tests := []struct {
		name      string
		refuse    func(string) *gosmtp.SMTPError
		wantRetry bool
	}{
		// 550 mailbox unavailable: permanent, retrying would fail again.
		{name: "550 at rcpt", refuse: refuse("rcpt", 550), wantRetry: false},
		// 554 transaction failed after the data: permanent.
		{name: "554 at data", refuse: refuse("data", 554), wantRetry: false},
		// 451 local error (greylisting, full queue): temporary.
		{name: "451 at rcpt", refuse: refuse("rcpt", 451), wantRetry: true},
		{name: "451 at data", refuse: refuse("data", 451), wantRetry: true},
		// 421 service not available, at the first command: temporary.
		{name: "421 at mail", refuse: refuse("mail", 421), wantRetry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, "127.0.0.1:0")
			srv.Refuse(tt.refuse)
			n := newNotifier(t, smtp.Config{Addr: srv.Addr})
			firing, _ := incident("www1", t0)
			retry, err := n.Notify(context.Background(), firing)
			if err == nil {
				t.Fatal("Notify succeeded against a refusing server")
			}
			if retry != tt.wantRetry {
				t.Errorf("retry %v, want %v (err: %v)", retry, tt.wantRetry, err)
			}
			if !strings.Contains(err.Error(), firing.ID) || !strings.Contains(err.Error(), srv.Addr) {
				t.Errorf("error %q names neither the notification nor the relay", err)
			}
			select {
			case m := <-srv.Received:
				t.Errorf("refused message was delivered: %v", m.Msg.Header)
			default:
			}
		})
	}
}

func TestNotifyUnreachable(t *testing.T) {
	firing, _ := incident("www1", t0)

	// Nothing listens: connection refused, worth retrying.
	n := newNotifier(t, smtp.Config{Addr: loopback.FreeAddr(t)})
	if retry, err := n.Notify(context.Background(), firing); err == nil || !retry {
		t.Errorf("closed port: retry %v, err %v; want a retryable error", retry, err)
	}

	// Something listens but never greets: the timeout ends the attempt,
	// worth retrying.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	n = newNotifier(t, smtp.Config{Addr: l.Addr().String(), Timeout: 200 * time.Millisecond})
	if retry, err := n.Notify(context.Background(), firing); err == nil || !retry {
		t.Errorf("silent server: retry %v, err %v; want a retryable error", retry, err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := smtp.Config{Addr: "127.0.0.1:25", From: "dmonitor@example.org", To: []string{"oncall@example.org"}}
	tests := []struct {
		name   string
		mutate func(*smtp.Config)
		want   string // in the error
	}{
		// host:port is required; a bare host would dial port 25 by surprise.
		{name: "no port", mutate: func(c *smtp.Config) { c.Addr = "mail.example.org" }, want: `smtp addr "mail.example.org"`},
		{name: "bad port", mutate: func(c *smtp.Config) { c.Addr = "127.0.0.1:smtp25" }, want: "invalid port"},
		{name: "no host", mutate: func(c *smtp.Config) { c.Addr = ":25" }, want: "no host"},
		{name: "bad from", mutate: func(c *smtp.Config) { c.From = "dmonitor" }, want: `smtp from "dmonitor"`},
		{name: "no recipients", mutate: func(c *smtp.Config) { c.To = nil }, want: "no recipients"},
		{name: "bad recipient", mutate: func(c *smtp.Config) { c.To = []string{"ok@example.org", "not an address"} }, want: `smtp to "not an address"`},
		{name: "bad tls", mutate: func(c *smtp.Config) { c.TLS = "ssl" }, want: `smtp tls "ssl"`},
		{name: "negative timeout", mutate: func(c *smtp.Config) { c.Timeout = -time.Second }, want: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			cfg.To = slices.Clone(good.To)
			tt.mutate(&cfg)
			_, err := smtp.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := smtp.New(good); err != nil {
		t.Errorf("New(good): %v", err)
	}
}

func TestSubject(t *testing.T) {
	tests := []struct {
		name string
		n    alerting.Notification
		want string
	}{
		// The usual host×check instance.
		{name: "host and check", n: alerting.Notification{Status: alerting.StatusFiring, Rule: "www-http", Labels: labels}, want: "[FIRING] www-http on www1 (http)"},
		// A rule over a TSDB metric may have a host but no check.
		{name: "host only", n: alerting.Notification{Status: alerting.StatusResolved, Rule: "load", Labels: map[string]string{"host": "db1"}}, want: "[RESOLVED] load on db1"},
		// A rule with no grouping labels at all.
		{name: "no labels", n: alerting.Notification{Status: alerting.StatusFiring, Rule: "observers-down"}, want: "[FIRING] observers-down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := smtp.Subject(&tt.n); got != tt.want {
				t.Errorf("Subject = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMessageIDParses guards the Message-ID form: a relay only deduplicates
// what it can parse.
func TestMessageIDParses(t *testing.T) {
	srv := smtptest.Start(t, "127.0.0.1:0")
	n := newNotifier(t, smtp.Config{Addr: srv.Addr, From: "Monitoring <dmonitor@mon.example.org>"})
	firing, _ := incident("www1", t0)
	if _, err := n.Notify(context.Background(), firing); err != nil {
		t.Fatal(err)
	}
	got := srv.Next(t)
	ids, err := netmail.ParseAddressList(strings.Trim(got.Msg.Header.Get("Message-Id"), "<>"))
	if err != nil || len(ids) != 1 || ids[0].Address != firing.ID+"@mon.example.org" {
		t.Errorf("Message-Id %q: %v %v", got.Msg.Header.Get("Message-Id"), ids, err)
	}
}

// TestNotifyBatchMail sends one mail about three notifications and checks
// what its reader and a duplicate filter see: the count in the subject,
// every id in the header, each alert in the body, and a Message-ID that
// the same batch always has.
func TestNotifyBatchMail(t *testing.T) {
	srv := smtptest.Start(t, "127.0.0.1:0")
	n := newNotifier(t, smtp.Config{Addr: srv.Addr})
	f1, r1 := incident("www1", t0)
	f2, _ := incident("www2", t0.Add(time.Minute))
	f3, _ := incident("www3", t0.Add(2*time.Minute))
	batch := []*alerting.Notification{f2, r1, f3}

	if retry, err := n.NotifyBatch(context.Background(), nil, batch); err != nil {
		t.Fatalf("NotifyBatch: %v (retry %v)", err, retry)
	}
	got := srv.Next(t)
	h := got.Msg.Header
	for name, want := range map[string]string{
		"Subject":                    "[FIRING:2] www-http on 3 hosts (http)",
		"X-Dmonitor-Notification-Id": f2.ID + ", " + r1.ID + ", " + f3.ID,
		"X-Dmonitor-Status":          "firing",
		"X-Dmonitor-Rule":            "www-http",
		"Auto-Submitted":             "auto-generated",
	} {
		if h.Get(name) != want {
			t.Errorf("header %s: %q, want %q", name, h.Get(name), want)
		}
	}
	// The latest transition: www1's resolution, five minutes after t0.
	if date, err := h.Date(); err != nil || !date.Equal(t0.Add(5*time.Minute)) {
		t.Errorf("Date %v (%v), want the latest transition time", date, err)
	}
	msgID := h.Get("Message-Id")
	if !regexp.MustCompile(`^<group\.[0-9a-f]{32}@example\.org>$`).MatchString(msgID) {
		t.Errorf("Message-Id %q", msgID)
	}
	// The firing ones first, then the resolved one, each with its id.
	want := []string{
		"2 firing, 1 resolved.",
		"=== 1/3 [FIRING] www-http on www2 (http) ===",
		"www2 http down from 2 of 3 observers",
		"Id:          " + f2.ID,
		"=== 2/3 [FIRING] www-http on www3 (http) ===",
		"Id:          " + f3.ID,
		"=== 3/3 [RESOLVED] www-http on www1 (http) ===",
		"Resolved at: 2025-03-01T12:05:00Z",
		"Id:          " + r1.ID,
	}
	at := 0
	for _, w := range want {
		i := strings.Index(got.Body[at:], w)
		if i < 0 {
			t.Fatalf("body lacks %q after offset %d:\n%s", w, at, got.Body)
		}
		at += i + len(w)
	}

	// The same batch again has the same Message-ID; another has another.
	if _, err := n.NotifyBatch(context.Background(), nil, batch); err != nil {
		t.Fatal(err)
	}
	if again := srv.Next(t).Msg.Header.Get("Message-Id"); again != msgID {
		t.Errorf("the same batch sent again has Message-Id %q, the first %q", again, msgID)
	}
	if _, err := n.NotifyBatch(context.Background(), nil, []*alerting.Notification{f1, f2}); err != nil {
		t.Fatal(err)
	}
	if other := srv.Next(t).Msg.Header.Get("Message-Id"); other == msgID {
		t.Errorf("another batch has the same Message-Id %q", other)
	}

	// A batch of one is the mail Notify sends.
	if _, err := n.NotifyBatch(context.Background(), nil, []*alerting.Notification{f1}); err != nil {
		t.Fatal(err)
	}
	one := srv.Next(t).Msg.Header
	if one.Get("Subject") != "[FIRING] www-http on www1 (http)" || one.Get("Message-Id") != "<"+f1.ID+"@example.org>" {
		t.Errorf("batch of one: subject %q, Message-Id %q", one.Get("Subject"), one.Get("Message-Id"))
	}
}

func TestGroupSubject(t *testing.T) {
	n := func(rule, host, check string, status alerting.Status) *alerting.Notification {
		l := map[string]string{}
		if host != "" {
			l["host"] = host
		}
		if check != "" {
			l["check"] = check
		}
		return &alerting.Notification{Rule: rule, Status: status, Labels: l}
	}
	f, r := alerting.StatusFiring, alerting.StatusResolved
	tests := []struct {
		name string
		ns   []*alerting.Notification
		want string
	}{
		// All resolved: counted as such.
		{"resolved", []*alerting.Notification{n("www-http", "www1", "http", r), n("www-http", "www2", "http", r)},
			"[RESOLVED:2] www-http on 2 hosts (http)"},
		// One host, several rules and checks.
		{"one host", []*alerting.Notification{n("host-up", "db1", "ping", f), n("mysql", "db1", "mysql", f)},
			"[FIRING:2] host-up, mysql on db1"},
		// Many rules are counted, not listed; no host at all.
		{"many rules", []*alerting.Notification{n("a", "", "", f), n("b", "", "", f), n("c", "", "", r), n("d", "", "", f)},
			"[FIRING:3] 4 rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := smtp.GroupSubject(tt.ns); got != tt.want {
				t.Errorf("GroupSubject = %q, want %q", got, tt.want)
			}
		})
	}
}
