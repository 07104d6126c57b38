// Package smtp is the e-mail notifier: one plain-text mail per notification,
// or per group of them, sent through an SMTP relay to a fixed list of
// addresses.
package smtp

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/dmonitor/dmonitor/alerting"
)

// DefaultTimeout bounds one delivery (connect, conversation and data) when
// Config.Timeout is zero.
const DefaultTimeout = 15 * time.Second

// The values of Config.TLS.
const (
	TLSNone     = "none"     // plain SMTP, for a local relay
	TLSStartTLS = "starttls" // STARTTLS when the server offers it, plain otherwise
	TLSImplicit = "tls"      // TLS from the first byte (port 465)
)

// Config configures a Notifier.
type Config struct {
	Addr     string   // the relay, host:port
	From     string   // envelope and header sender
	To       []string // every notification goes to all of them, in one mail
	Username string   // SMTP AUTH when not empty
	Password string
	// TLS is TLSNone, TLSStartTLS (the default when empty) or TLSImplicit.
	// With TLSNone, credentials may be sent unencrypted: that is the
	// operator's explicit choice. Otherwise PLAIN and LOGIN are only used
	// over TLS or to a loopback relay.
	TLS     string
	Timeout time.Duration // per delivery; DefaultTimeout when zero
}

// Notifier mails notifications. It is safe for concurrent use.
type Notifier struct {
	client *mail.Client
	from   string
	to     []string
	domain string // of From, for Message-IDs
}

var _ alerting.BatchNotifier = (*Notifier)(nil)

// New returns a Notifier for cfg, or an error naming every field that is
// wrong. It does not connect: a relay that is down is a delivery failure,
// not a configuration error.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	port, perr := strconv.Atoi(portStr)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("smtp addr %q: %w", cfg.Addr, err))
	case host == "":
		errs = append(errs, fmt.Errorf("smtp addr %q: no host", cfg.Addr))
	case perr != nil || port < 1 || port > 65535:
		errs = append(errs, fmt.Errorf("smtp addr %q: invalid port", cfg.Addr))
	}
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		errs = append(errs, fmt.Errorf("smtp from %q: %w", cfg.From, err))
	}
	if len(cfg.To) == 0 {
		errs = append(errs, errors.New("smtp to: no recipients"))
	}
	for _, to := range cfg.To {
		if _, err := netmail.ParseAddress(to); err != nil {
			errs = append(errs, fmt.Errorf("smtp to %q: %w", to, err))
		}
	}
	timeout := cmp.Or(cfg.Timeout, DefaultTimeout)
	if timeout < 0 {
		errs = append(errs, fmt.Errorf("smtp timeout %v: negative", cfg.Timeout))
	}
	opts := []mail.Option{mail.WithPort(port), mail.WithTimeout(timeout)}
	switch cmp.Or(cfg.TLS, TLSStartTLS) {
	case TLSNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	case TLSImplicit:
		opts = append(opts, mail.WithSSL(), mail.WithTLSConfig(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}))
	default:
		errs = append(errs, fmt.Errorf("smtp tls %q: want %s, %s or %s", cfg.TLS, TLSNone, TLSStartTLS, TLSImplicit))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	if cfg.Username != "" {
		// Strongest first. Without TLS the challenge-response mechanisms
		// are the only ones that do not give the password away, unless the
		// operator said TLS none.
		mechs := []mail.SMTPAuthType{
			mail.SMTPAuthSCRAMSHA256PLUS, mail.SMTPAuthSCRAMSHA256,
			mail.SMTPAuthSCRAMSHA1PLUS, mail.SMTPAuthSCRAMSHA1,
			mail.SMTPAuthCramMD5, mail.SMTPAuthPlain, mail.SMTPAuthLogin,
		}
		if cfg.TLS == TLSNone {
			mechs = []mail.SMTPAuthType{
				mail.SMTPAuthSCRAMSHA256, mail.SMTPAuthSCRAMSHA1, mail.SMTPAuthCramMD5,
				mail.SMTPAuthPlainNoEnc, mail.SMTPAuthLoginNoEnc,
			}
		}
		opts = append(opts, mail.WithOpportunisticSMTPAuth(mechs...),
			mail.WithUsername(cfg.Username), mail.WithPassword(cfg.Password))
	}
	client, err := mail.NewClient(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp client for %s: %w", cfg.Addr, err)
	}
	domain := "dmonitor"
	if at := strings.LastIndexByte(from.Address, '@'); at >= 0 && at < len(from.Address)-1 {
		domain = from.Address[at+1:]
	}
	return &Notifier{client: client, from: cfg.From, to: slices.Clone(cfg.To), domain: domain}, nil
}

// Notify sends one mail about n to every configured recipient. A failure is
// worth retrying (retry true) unless the server refused permanently with a
// 5xx reply or the message could not be built; connection errors, timeouts
// and 4xx replies are retried.
func (s *Notifier) Notify(ctx context.Context, n *alerting.Notification) (retry bool, err error) {
	m, err := s.message(n)
	if err != nil {
		return false, fmt.Errorf("build mail for notification %s: %w", n.ID, err)
	}
	return s.send(ctx, m, "notification "+n.ID)
}

// NotifyBatch sends one mail about all of ns to every configured
// recipient; a batch of one is the mail Notify sends. The mail about
// several has GroupSubject, GroupBody, the ids of all of them in the
// X-Dmonitor-Notification-Id header (one list separated by ", "), and a
// Message-ID made of those ids, the same whenever the same batch is sent
// again. group is not used: the subject says what the alerts share. The
// outcome is classified as Notify's.
func (s *Notifier) NotifyBatch(ctx context.Context, _ map[string]string, ns []*alerting.Notification) (retry bool, err error) {
	if len(ns) == 1 {
		return s.Notify(ctx, ns[0])
	}
	what := fmt.Sprintf("%d notifications (%s and %d more)", len(ns), ns[0].ID, len(ns)-1)
	m, err := s.groupMessage(ns)
	if err != nil {
		return false, fmt.Errorf("build mail for %s: %w", what, err)
	}
	return s.send(ctx, m, what)
}

// send delivers m, which is about what.
func (s *Notifier) send(ctx context.Context, m *mail.Msg, what string) (retry bool, err error) {
	err = s.client.DialAndSendWithContext(ctx, m)
	if err != nil && m.IsDelivered() {
		// The relay took the message; only the QUIT after it failed.
		return false, nil
	}
	if err != nil {
		return retryable(err), fmt.Errorf("mail %s via %s: %w", what, s.client.ServerAddr(), err)
	}
	return false, nil
}

// retryable classifies a delivery error by its SMTP reply code: 5xx is
// permanent, 4xx temporary. An error without a code (refused connection,
// timeout, reset, TLS handshake) is retried: duplicates are preferred over
// silence.
func retryable(err error) bool {
	var se *mail.SendError
	if errors.As(err, &se) {
		return se.ErrorCode() < 500
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code < 500
	}
	return true
}

// message builds the mail for n.
func (s *Notifier) message(n *alerting.Notification) (*mail.Msg, error) {
	m := mail.NewMsg()
	if err := m.From(s.from); err != nil {
		return nil, err
	}
	if err := m.To(s.to...); err != nil {
		return nil, err
	}
	m.Subject(Subject(n))
	// A stable Message-ID lets a relay or a mailbox drop a duplicate of a
	// notification that was delivered twice.
	m.SetMessageIDWithValue(n.ID + "@" + s.domain)
	if n.Status == alerting.StatusResolved {
		// Thread the recovery under the alert it ends.
		firing := "<" + alerting.NotificationID(n.Rule, n.Labels, alerting.StatusFiring, n.StartsAt) + "@" + s.domain + ">"
		m.SetGenHeader(mail.HeaderInReplyTo, firing)
		m.SetGenHeader(mail.HeaderReferences, firing)
	}
	// The transition's time, not the delivery's: a queued mail arrives
	// late but says when things happened.
	m.SetDateWithValue(n.EvaluatedAt)
	m.SetGenHeader("X-Dmonitor-Notification-Id", n.ID)
	m.SetGenHeader("X-Dmonitor-Status", string(n.Status))
	m.SetGenHeader("X-Dmonitor-Rule", n.Rule)
	m.SetGenHeader("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies
	m.SetBodyString(mail.TypeTextPlain, Body(n))
	return m, nil
}

// groupMessage builds the mail about ns, more than one.
func (s *Notifier) groupMessage(ns []*alerting.Notification) (*mail.Msg, error) {
	m := mail.NewMsg()
	if err := m.From(s.from); err != nil {
		return nil, err
	}
	if err := m.To(s.to...); err != nil {
		return nil, err
	}
	m.Subject(GroupSubject(ns))
	ids := make([]string, len(ns))
	var rules []string
	status := alerting.StatusResolved
	var date time.Time
	for i, n := range ns {
		ids[i] = n.ID
		if !slices.Contains(rules, n.Rule) {
			rules = append(rules, n.Rule)
		}
		if n.Status == alerting.StatusFiring {
			status = alerting.StatusFiring
		}
		if n.EvaluatedAt.After(date) {
			date = n.EvaluatedAt
		}
	}
	// The same batch sent twice (a delivery not recorded before a crash)
	// has the same Message-ID, which a relay or a mailbox can drop.
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	m.SetMessageIDWithValue("group." + hex.EncodeToString(sum[:16]) + "@" + s.domain)
	// The latest transition's time: the mail tells of all of them.
	m.SetDateWithValue(date)
	m.SetGenHeader("X-Dmonitor-Notification-Id", ids...)
	m.SetGenHeader("X-Dmonitor-Status", string(status))
	m.SetGenHeader("X-Dmonitor-Rule", rules...)
	m.SetGenHeader("Auto-Submitted", "auto-generated")
	m.SetBodyString(mail.TypeTextPlain, GroupBody(ns))
	return m, nil
}

// GroupSubject returns the subject of the mail about ns, as Alertmanager's
// default subject counts them: "[FIRING:3] www-http on 3 hosts (http)" when
// any fires, "[RESOLVED:3] ..." otherwise, then what they have in common:
// their rule (or rules, up to three; or how many), their host (or how
// many hosts), their check.
func GroupSubject(ns []*alerting.Notification) string {
	var firing, resolved int
	var rules, hosts, checks []string
	add := func(list *[]string, v string) {
		if v != "" && !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	for _, n := range ns {
		if n.Status == alerting.StatusFiring {
			firing++
		} else {
			resolved++
		}
		add(&rules, n.Rule)
		add(&hosts, n.Labels[alerting.LabelHost])
		add(&checks, n.Labels[alerting.LabelCheck])
	}
	var b strings.Builder
	if firing > 0 {
		fmt.Fprintf(&b, "[FIRING:%d]", firing)
	} else {
		fmt.Fprintf(&b, "[RESOLVED:%d]", resolved)
	}
	slices.Sort(rules)
	switch {
	case len(rules) <= 3:
		fmt.Fprintf(&b, " %s", strings.Join(rules, ", "))
	default:
		fmt.Fprintf(&b, " %d rules", len(rules))
	}
	switch len(hosts) {
	case 0:
	case 1:
		fmt.Fprintf(&b, " on %s", hosts[0])
	default:
		fmt.Fprintf(&b, " on %d hosts", len(hosts))
	}
	if len(checks) == 1 {
		fmt.Fprintf(&b, " (%s)", checks[0])
	}
	return b.String()
}

// GroupBody returns the plain-text body of the mail about ns: how many
// fire and how many are resolved, then each notification as Body gives
// it, under its Subject, the firing ones first, each side in queue order.
func GroupBody(ns []*alerting.Notification) string {
	var firing, resolved []*alerting.Notification
	for _, n := range ns {
		if n.Status == alerting.StatusFiring {
			firing = append(firing, n)
		} else {
			resolved = append(resolved, n)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d firing, %d resolved.\n", len(firing), len(resolved))
	for i, n := range slices.Concat(firing, resolved) {
		fmt.Fprintf(&b, "\n=== %d/%d %s ===\n\n", i+1, len(ns), Subject(n))
		b.WriteString(Body(n))
	}
	return b.String()
}

// Subject returns the mail subject for n:
// "[FIRING] www-http on www1 (http)", "[RESOLVED] ...".
func Subject(n *alerting.Notification) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s", strings.ToUpper(string(n.Status)), n.Rule)
	if h := n.Labels[alerting.LabelHost]; h != "" {
		fmt.Fprintf(&b, " on %s", h)
	}
	if c := n.Labels[alerting.LabelCheck]; c != "" {
		fmt.Fprintf(&b, " (%s)", c)
	}
	return b.String()
}

// Body returns the plain-text mail body for n.
func Body(n *alerting.Notification) string {
	var b strings.Builder
	if s := n.Annotations[alerting.AnnotationSummary]; s != "" {
		b.WriteString(s)
		b.WriteString("\n\n")
	}
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%-12s %s\n", name+":", value)
		}
	}
	field("Status", strings.ToUpper(string(n.Status)))
	field("Rule", n.Rule)
	field("Host", n.Labels[alerting.LabelHost])
	field("Check", n.Labels[alerting.LabelCheck])
	field("Severity", n.Severity)
	field("Started at", stamp(n.StartsAt))
	if n.Status == alerting.StatusResolved {
		field("Resolved at", stamp(n.EndsAt))
		if !n.StartsAt.IsZero() && !n.EndsAt.IsZero() {
			field("Duration", n.EndsAt.Sub(n.StartsAt).String())
		}
	}
	field("Id", n.ID)

	if d := n.Annotations[alerting.AnnotationDescription]; d != "" {
		fmt.Fprintf(&b, "\n%s\n", d)
	}
	if len(n.Labels) > 0 {
		b.WriteString("\nLabels:\n")
		for _, k := range sortedKeys(n.Labels) {
			fmt.Fprintf(&b, "  %s=%s\n", k, n.Labels[k])
		}
	}
	if o := n.Annotations[alerting.AnnotationOutputs]; o != "" {
		b.WriteString("\nObserver outputs:\n")
		indent(&b, o)
	}
	for _, k := range sortedKeys(n.Annotations) {
		switch k {
		case alerting.AnnotationSummary, alerting.AnnotationDescription, alerting.AnnotationOutputs:
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n", k)
		indent(&b, n.Annotations[k])
	}
	return b.String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func indent(b *strings.Builder, text string) {
	for line := range strings.Lines(strings.TrimRight(text, "\n")) {
		b.WriteString("  ")
		b.WriteString(strings.TrimRight(line, "\n"))
		b.WriteString("\n")
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
