// Package statuspage serves the operator's status page on the control
// port: server-rendered HTML that needs no JavaScript and no build step,
// refreshing itself. It shows every host×check with each observer's latest
// result, the alerts and why they are in their state, the leader and the
// observers, and per check a history graph drawn on the server as SVG from
// the TSDB; its forms silence and acknowledge with the control token.
//
//	GET  /                        the overview
//	GET  /check/{host}/{check}    one check: a longer graph, perfdata, incidents
//	GET  /silences                the silences, and the form to add one
//	POST /silences                add a silence (form, with the token)
//	POST /silences/expire         expire one (form, with the token)
//	GET  /ack                     the form to acknowledge an alert
//	POST /ack                     acknowledge (form, with the token)
//
// The status pages refresh themselves; the form pages do not, so nothing
// typed is lost. A form answers 303 back to the page it came from
// (POST/redirect/GET), so a reload does not post it again.
package statuspage

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/silence"
)

// Silencer is the silence store as the page uses it; *silence.Store and
// the Redis store satisfy it.
type Silencer interface {
	// Set creates a silence and returns its id; errors wrapping
	// silence.ErrInvalid blame the input.
	Set(silence.Silence) (string, error)
	// Expire ends a silence now; silence.ErrNotFound when there is none.
	Expire(id string) error
	// List returns every silence held.
	List(now time.Time) []silence.Silence
}

var _ Silencer = (*silence.Store)(nil)

// Acknowledger records that someone is on a firing alert; the evaluator
// implements it, with the errors of control.Acknowledger.
type Acknowledger interface {
	Acknowledge(rule, host, check, by, comment string) error
}

// Options configure New. Status is required.
type Options struct {
	// Status is the node's status, as /status serves it.
	Status func() leader.Status
	// History is the TSDB the graphs are read from; nil draws none.
	History Querier
	// Silences is nil on a node without silences; the forms then say so.
	Silences Silencer
	// Acks is nil on a node that cannot acknowledge.
	Acks Acknowledger
	// Token is the control token (control.ReadToken) a form must carry.
	// Empty refuses every form: changes are never open by default.
	Token string
	// Refresh is how often the status pages reload; 10s when zero.
	Refresh time.Duration
	// Range is the span of the overview's graphs (3h when zero), and
	// CheckRange the check page's (24h when zero). A page's ?range=
	// overrides them, from a minute to 31 days.
	Range, CheckRange time.Duration
	// CacheFor is how long the TSDB's answers are reused; 5s when zero.
	CacheFor time.Duration
	// Now is the page's clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Handler serves the status page; see the package comment for its routes.
type Handler struct {
	o        Options
	tokenSum []byte // sha256 of the token; nil when none is set
	mux      *http.ServeMux
	cache    historyCache
	tmpl     map[string]*template.Template
}

//go:embed templates/*.html
var templates embed.FS

// The query timeout of the graphs: a TSDB that hangs must not hang the
// page, which then shows the live state without them.
const historyTimeout = 3 * time.Second

// maxForm bounds a form's body: a silence is a few hundred bytes.
const maxForm = 64 << 10

// New returns the status page handler. It panics if the embedded
// templates do not parse, which a test catches.
func New(o Options) *Handler {
	if o.Refresh <= 0 {
		o.Refresh = 10 * time.Second
	}
	if o.Range <= 0 {
		o.Range = 3 * time.Hour
	}
	if o.CheckRange <= 0 {
		o.CheckRange = 24 * time.Hour
	}
	if o.CacheFor <= 0 {
		o.CacheFor = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{o: o, mux: http.NewServeMux(), cache: historyCache{ttl: o.CacheFor}, tmpl: make(map[string]*template.Template)}
	if o.Token != "" {
		sum := sha256.Sum256([]byte(o.Token))
		h.tokenSum = sum[:]
	}
	base := template.Must(template.New("").ParseFS(templates, "templates/layout.html"))
	for _, page := range []string{"overview", "check", "silences", "ack", "message"} {
		h.tmpl[page] = template.Must(template.Must(base.Clone()).ParseFS(templates, "templates/"+page+".html"))
	}
	h.mux.HandleFunc("GET /{$}", h.overview)
	h.mux.HandleFunc("GET /check/{host}/{check}", h.checkPage)
	h.mux.HandleFunc("GET /silences", h.silencesPage)
	h.mux.HandleFunc("POST /silences", h.postSilence)
	h.mux.HandleFunc("POST /silences/expire", h.expireSilence)
	h.mux.HandleFunc("GET /ack", h.ackPage)
	h.mux.HandleFunc("POST /ack", h.postAck)
	return h
}

// ServeHTTP serves the page's routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// header is what every page shows at the top.
type header struct {
	Title    string
	Refresh  int // seconds; 0 for the form pages
	Now      time.Time
	Node     string
	Mode     string
	Degraded bool
	Leader   string
	Epoch    int64
	Self     bool // this node leads
	Done     string
}

// done is the message a page shows after a form succeeded. Only these
// fixed texts: a link must not make the page say what its author likes.
var done = map[string]string{
	"silenced": "Silence added.",
	"expired":  "Silence expired.",
	"acked":    "Alert acknowledged; it reads acknowledged from the next evaluation.",
}

func (h *Handler) header(r *http.Request, st *leader.Status, title string, refresh bool) header {
	hd := header{Title: title, Now: h.o.Now(), Node: st.Observer, Mode: st.Mode, Degraded: st.Degraded,
		Leader: st.LeaderName, Epoch: st.LeaderEpoch, Self: st.Leader, Done: done[r.URL.Query().Get("done")]}
	if hd.Leader == "" && st.Leader {
		hd.Leader, hd.Epoch = st.Observer, st.Epoch
	}
	if refresh {
		hd.Refresh = int(h.o.Refresh / time.Second)
	}
	return hd
}

// span returns the graph span a page asks for with ?range=, or def.
func span(r *http.Request, def time.Duration) time.Duration {
	d, err := time.ParseDuration(r.URL.Query().Get("range"))
	if err != nil || d < time.Minute || d > 31*24*time.Hour {
		return def
	}
	return d
}

// rangeLink is one of the page's choices of graph span.
type rangeLink struct {
	Label, URL string
	Current    bool
}

func rangeLinks(path string, cur time.Duration) []rangeLink {
	var out []rangeLink
	for _, d := range []time.Duration{15 * time.Minute, time.Hour, 3 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour} {
		l := window{span: d}.String()
		out = append(out, rangeLink{Label: l, URL: path + "?range=" + d.String(), Current: d == cur})
	}
	return out
}

// cell is one observer's latest result in the grid.
type cell struct {
	Status string // OK, CRITICAL, …; "" when the observer has none
	Class  string
	Output string // its first line, shortened
	Full   string
	At     time.Time
	Age    string
	Stale  bool
}

// alertView is one rule instance as the pages show it.
type alertView struct {
	Rule, Host, Check string
	State             string
	Class             string
	Why               string
	Since             time.Time
	CheckURL          string
	AckURL            string // "" when there is nothing to acknowledge
	SilenceURL        string
}

// row is one host×check of the grid.
type row struct {
	Host, Check string
	HostRows    int // rows of the host's group, on its first row; 0 on the others
	URL         string
	Cells       []cell
	Alerts      []alertView
	Graph       template.HTML
}

// observerView is one observer of the cluster.
type observerView struct {
	Name     string
	LastSeen time.Time
	Age      string
	Silent   bool
	Leader   bool
	Self     bool
}

type overviewData struct {
	header
	Observers []observerView
	Columns   []string
	Alerts    []alertView
	Rows      []row
	Checks    int
	Range     string
	Ranges    []rangeLink
	GraphErr  string
	NoHistory bool
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	st := h.o.Status()
	d := overviewData{header: h.header(r, &st, "status", true), Checks: st.Checks}
	now := d.Now
	sils := h.silences(now)
	for _, o := range st.Observers {
		d.Observers = append(d.Observers, observerView{Name: o.Name, LastSeen: o.LastSeen, Age: ago(now, o.LastSeen),
			Silent: o.Silent, Leader: o.Leader, Self: o.Name == st.Observer})
	}
	d.Columns = columns(&st)

	sp := span(r, h.o.Range)
	d.Range, d.Ranges = window{span: sp}.String(), rangeLinks("/", sp)
	var hist *history
	if h.o.History != nil {
		ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
		hist = h.cache.get(ctx, h.o.History, now, window{span: sp, buckets: 60}, nil)
		cancel()
		if hist.err != nil {
			d.GraphErr = hist.err.Error()
		}
	} else {
		d.NoHistory = true
	}

	for _, t := range groupTargets(st.Instances) {
		rw := row{Host: t[0].Host, Check: t[0].Check, URL: checkURL(t[0].Host, t[0].Check),
			Cells: cells(now, d.Columns, t[0].Observers)}
		for _, in := range t {
			av := h.alert(now, in, sils)
			rw.Alerts = append(rw.Alerts, av)
			if in.State != alerting.OK {
				d.Alerts = append(d.Alerts, av)
			}
		}
		rw.Graph = drawGraph(hist, tagged(rw.Host, rw.Check), d.Columns, smallGraph)
		d.Rows = append(d.Rows, rw)
	}
	// The host's name heads its group of rows.
	for i := 0; i < len(d.Rows); {
		j := i + 1
		for j < len(d.Rows) && d.Rows[j].Host == d.Rows[i].Host {
			j++
		}
		d.Rows[i].HostRows = j - i
		i = j
	}
	slices.SortStableFunc(d.Alerts, func(a, b alertView) int { return cmp.Compare(rank(a.State), rank(b.State)) })
	h.render(w, r, http.StatusOK, "overview", d)
}

// rank orders the alerts table: what needs someone first.
func rank(state string) int {
	for i, s := range []alerting.State{alerting.Firing, alerting.Flapping, alerting.Unknown, alerting.Acknowledged, alerting.Pending,
		alerting.Suppressed, alerting.Silenced} {
		if s.String() == state {
			return i
		}
	}
	return 99
}

// columns returns the observers of the grid: the cluster's, then any
// other that has a result.
func columns(st *leader.Status) []string {
	var out []string
	for _, o := range st.Observers {
		out = append(out, o.Name)
	}
	seen := make(map[string]bool, len(out))
	for _, o := range out {
		seen[o] = true
	}
	var extra []string
	for _, in := range st.Instances {
		for _, o := range in.Observers {
			if !seen[o.Observer] {
				seen[o.Observer] = true
				extra = append(extra, o.Observer)
			}
		}
	}
	if len(out) == 0 && len(extra) == 0 && st.Observer != "" {
		out = []string{st.Observer}
	}
	slices.Sort(extra)
	return append(out, extra...)
}

// groupTargets groups the instances by host×check, sorted by host and
// check, each group's rules in the order Status lists them.
func groupTargets(ins []leader.InstanceStatus) [][]leader.InstanceStatus {
	sorted := slices.Clone(ins)
	slices.SortStableFunc(sorted, func(a, b leader.InstanceStatus) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Check, b.Check))
	})
	var out [][]leader.InstanceStatus
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j].Host == sorted[i].Host && sorted[j].Check == sorted[i].Check {
			j++
		}
		out = append(out, sorted[i:j])
		i = j
	}
	return out
}

// cells lays the results out under the grid's columns.
func cells(now time.Time, cols []string, results []leader.ObserverResult) []cell {
	out := make([]cell, len(cols))
	for _, res := range results {
		i := slices.Index(cols, res.Observer)
		if i < 0 {
			continue
		}
		first, _, _ := strings.Cut(res.Output, "\n")
		out[i] = cell{Status: res.Status.String(), Class: fmt.Sprintf("s%d", res.Status), Output: shorten(first, 80),
			At: res.At, Age: ago(now, res.At), Stale: !res.Fresh}
		if out[i].Output != res.Output {
			// The whole output on hover, only where the cell shows less:
			// a thousand rows would otherwise carry it twice.
			out[i].Full = res.Output
		}
	}
	return out
}

// alert explains one instance.
func (h *Handler) alert(now time.Time, in leader.InstanceStatus, sils map[string]silence.Silence) alertView {
	av := alertView{Rule: in.Rule, Host: in.Host, Check: in.Check, State: in.State.String(),
		Class: fmt.Sprintf("a%d", in.State), Since: in.Since, CheckURL: checkURL(in.Host, in.Check),
		SilenceURL: "/silences?" + url.Values{"host": {in.Host}, "check": {in.Check}}.Encode()}
	if !in.FiredAt.IsZero() && in.AckedBy == "" && h.o.Acks != nil {
		av.AckURL = "/ack?" + url.Values{"rule": {in.Rule}, "host": {in.Host}, "check": {in.Check}}.Encode()
	}
	failing, fresh := 0, 0
	for _, o := range in.Observers {
		if o.Fresh {
			fresh++
			if o.Status.Failing() {
				failing++
			}
		}
	}
	switch in.State {
	case alerting.OK:
		av.Why = fmt.Sprintf("%d of %d fresh observers see it failing", failing, fresh)
	case alerting.Pending:
		av.Why = fmt.Sprintf("condition holds since %s (%d of %d fresh observers failing); fires when the rule's for has passed",
			clock(in.Since), failing, fresh)
	case alerting.Firing:
		av.Why = fmt.Sprintf("firing since %s: %d of %d fresh observers see it failing", clock(cmp.Or(in.FiredAt, in.Since)), failing, fresh)
		if len(in.Observers) == 0 && in.Summary != "" {
			// A self alert (observer-up, …): no observer results; the
			// rule says what is wrong.
			av.Why = fmt.Sprintf("firing since %s: %s", clock(cmp.Or(in.FiredAt, in.Since)), in.Summary)
		}
	case alerting.Suppressed:
		av.Why = "held back: " + in.Reason
	case alerting.Unknown:
		av.Why = "unknown: " + in.Reason
	case alerting.Flapping:
		av.Why = fmt.Sprintf("flapping: %d of %d fresh observers see it failing now; notified once when it settles", failing, fresh)
	case alerting.Silenced:
		av.Why = in.Reason
		if id, ok := strings.CutPrefix(in.Reason, "silenced by "); ok {
			if s, ok := sils[id]; ok {
				av.Why = fmt.Sprintf("silenced by %s (%s) by %s until %s", id, matchers(s.Matchers), s.CreatedBy, clock(s.EndsAt))
				if s.Comment != "" {
					av.Why += ": " + s.Comment
				}
			}
		}
	case alerting.Acknowledged:
		av.Why = fmt.Sprintf("acknowledged by %s at %s", in.AckedBy, clock(in.AckedAt))
		if in.AckComment != "" {
			av.Why += ": " + in.AckComment
		}
	default:
		av.Why = in.Reason
	}
	return av
}

// silences returns the silences by id, or nil when there is no store.
func (h *Handler) silences(now time.Time) map[string]silence.Silence {
	if h.o.Silences == nil {
		return nil
	}
	m := make(map[string]silence.Silence)
	for _, s := range h.o.Silences.List(now) {
		m[s.ID] = s
	}
	return m
}

func matchers(ms []silence.Matcher) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return strings.Join(parts, ", ")
}

// result is one observer's latest result on the check page.
type result struct {
	Observer string
	Status   string
	Class    string
	Raw      string
	Output   string
	Perf     string
	At       time.Time
	Age      string
	Duration string
	Fresh    bool
}

// event is one alert transition in a check's timeline.
type event struct {
	At    time.Time
	Rule  string
	State string
	Class string
}

type checkData struct {
	header
	Host, Check string
	Path        string
	Results     []result
	Alerts      []alertView
	Graph       template.HTML
	Events      []event
	Range       string
	Ranges      []rangeLink
	GraphErr    string
	NoHistory   bool
	SilenceURL  string
}

func (h *Handler) checkPage(w http.ResponseWriter, r *http.Request) {
	host, chk := r.PathValue("host"), r.PathValue("check")
	st := h.o.Status()
	path := checkURL(host, chk)
	d := checkData{header: h.header(r, &st, chk+" on "+host, true), Host: host, Check: chk, Path: path,
		SilenceURL: "/silences?" + url.Values{"host": {host}, "check": {chk}}.Encode()}
	now := d.Now
	sils := h.silences(now)
	found := false
	for _, in := range st.Instances {
		if in.Host != host || in.Check != chk {
			continue
		}
		if !found {
			found = true
			for _, o := range in.Observers {
				d.Results = append(d.Results, result{Observer: o.Observer, Status: o.Status.String(),
					Class: fmt.Sprintf("s%d", o.Status), Raw: o.Raw, Output: o.Output, Perf: perfdata(o.Perf),
					At: o.At, Age: ago(now, o.At), Duration: seconds(o.Duration.Seconds()), Fresh: o.Fresh})
			}
		}
		d.Alerts = append(d.Alerts, h.alert(now, in, sils))
	}
	if !found {
		h.message(w, r, http.StatusNotFound, "No such check", fmt.Sprintf("This node does not run the check %q on %q.", chk, host), "/")
		return
	}
	sp := span(r, h.o.CheckRange)
	d.Range, d.Ranges = window{span: sp}.String(), rangeLinks(path, sp)
	if h.o.History != nil {
		t := tagged(host, chk)
		ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
		hist := h.cache.get(ctx, h.o.History, now, window{span: sp, buckets: 240}, &t)
		cancel()
		if hist.err != nil {
			d.GraphErr = hist.err.Error()
		}
		d.Graph = drawGraph(hist, t, columns(&st), largeGraph)
		for _, a := range hist.alerts[t] {
			s := alerting.State(a.state)
			d.Events = append(d.Events, event{At: a.at, Rule: a.rule, State: s.String(), Class: fmt.Sprintf("a%d", a.state)})
		}
		slices.SortStableFunc(d.Events, func(a, b event) int { return b.At.Compare(a.At) })
	} else {
		d.NoHistory = true
	}
	h.render(w, r, http.StatusOK, "check", d)
}

type silenceRow struct {
	silence.Silence
	State    string
	Matchers string
}

type silencesData struct {
	header
	Host, Check, Rule string
	Silences          []silenceRow
	Enabled           bool
	TokenSet          bool
}

func (h *Handler) silencesPage(w http.ResponseWriter, r *http.Request) {
	st := h.o.Status()
	q := r.URL.Query()
	d := silencesData{header: h.header(r, &st, "Silences", false), Host: q.Get("host"), Check: q.Get("check"), Rule: q.Get("rule"),
		Enabled: h.o.Silences != nil, TokenSet: h.tokenSum != nil}
	if h.o.Silences != nil {
		for _, s := range h.o.Silences.List(d.Now) {
			state := s.State(d.Now)
			if state == silence.StateExpired {
				continue
			}
			d.Silences = append(d.Silences, silenceRow{Silence: s, State: string(state), Matchers: matchers(s.Matchers)})
		}
		slices.SortFunc(d.Silences, func(a, b silenceRow) int { return a.EndsAt.Compare(b.EndsAt) })
	}
	h.render(w, r, http.StatusOK, "silences", d)
}

type ackData struct {
	header
	Rule, Host, Check string
	Alert             *alertView
	Return            string
	Enabled           bool
	TokenSet          bool
}

func (h *Handler) ackPage(w http.ResponseWriter, r *http.Request) {
	st := h.o.Status()
	q := r.URL.Query()
	d := ackData{header: h.header(r, &st, "Acknowledge", false), Rule: q.Get("rule"), Host: q.Get("host"), Check: q.Get("check"),
		Enabled: h.o.Acks != nil, TokenSet: h.tokenSum != nil, Return: "/"}
	if d.Host != "" && d.Check != "" {
		d.Return = checkURL(d.Host, d.Check)
	}
	for _, in := range st.Instances {
		if in.Rule == d.Rule && in.Host == d.Host && in.Check == d.Check {
			av := h.alert(d.Now, in, h.silences(d.Now))
			d.Alert = &av
		}
	}
	h.render(w, r, http.StatusOK, "ack", d)
}

// form reads a posted form and checks its token; when it returns false it
// has answered.
func (h *Handler) form(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		h.message(w, r, http.StatusBadRequest, "Bad form", "The form could not be read: "+err.Error(), back(r))
		return false
	}
	if h.tokenSum == nil {
		h.message(w, r, http.StatusForbidden, "Changes are disabled",
			"This node has no control token: set control.token_file in dmonitor.yaml to a file holding one.", back(r))
		return false
	}
	// Hashing both sides makes the comparison constant time whatever the
	// lengths, as the API's bearer check does.
	sum := sha256.Sum256([]byte(strings.TrimSpace(r.PostForm.Get("token"))))
	if subtle.ConstantTimeCompare(sum[:], h.tokenSum) != 1 {
		h.o.Logger.Warn("status page: form without the right token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
		h.message(w, r, http.StatusUnauthorized, "Wrong token",
			"The token is missing or wrong: it is the content of the file control.token_file names. Nothing was changed.", back(r))
		return false
	}
	return true
}

// back returns where a form's answer leads: its "return" field when that
// is a path on this server, else the overview. An absolute URL or
// "//host" would make the page an open redirect.
func back(r *http.Request) string {
	p := r.PostForm.Get("return")
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return "/"
	}
	return p
}

// redirect answers a form that succeeded: 303 to where it came from, with
// the message to show there.
func redirect(w http.ResponseWriter, r *http.Request, what string) {
	to, err := url.Parse(back(r))
	if err != nil {
		to = &url.URL{Path: "/"}
	}
	q := to.Query()
	q.Set("done", what)
	to.RawQuery = q.Encode()
	http.Redirect(w, r, to.String(), http.StatusSeeOther)
}

func (h *Handler) postSilence(w http.ResponseWriter, r *http.Request) {
	if !h.form(w, r) {
		return
	}
	if h.o.Silences == nil {
		h.message(w, r, http.StatusServiceUnavailable, "No silences", "This node keeps no silences.", back(r))
		return
	}
	f := r.PostForm
	dur, err := time.ParseDuration(strings.TrimSpace(f.Get("duration")))
	if err != nil || dur <= 0 {
		h.message(w, r, http.StatusBadRequest, "Bad duration",
			fmt.Sprintf("The duration %q is not a positive Go duration such as 30m or 2h.", f.Get("duration")), back(r))
		return
	}
	now := h.o.Now()
	s := silence.Silence{StartsAt: now, EndsAt: now.Add(dur), CreatedBy: strings.TrimSpace(f.Get("author")),
		Comment: strings.TrimSpace(f.Get("comment"))}
	for _, name := range []string{"host", "check", "rule"} {
		if v := strings.TrimSpace(f.Get(name)); v != "" {
			s.Matchers = append(s.Matchers, silence.Matcher{Name: name, Value: v, IsEqual: true})
		}
	}
	id, err := h.o.Silences.Set(s)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, silence.ErrInvalid) {
			code = http.StatusBadRequest
		}
		h.message(w, r, code, "Silence refused", err.Error(), back(r))
		return
	}
	h.o.Logger.Info("silence set", "id", id, "by", s.CreatedBy, "matchers", matchers(s.Matchers), "until", s.EndsAt,
		"via", "status page", "remote", r.RemoteAddr)
	redirect(w, r, "silenced")
}

func (h *Handler) expireSilence(w http.ResponseWriter, r *http.Request) {
	if !h.form(w, r) {
		return
	}
	if h.o.Silences == nil {
		h.message(w, r, http.StatusServiceUnavailable, "No silences", "This node keeps no silences.", back(r))
		return
	}
	id := r.PostForm.Get("id")
	if err := h.o.Silences.Expire(id); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, silence.ErrNotFound) {
			code = http.StatusNotFound
		}
		h.message(w, r, code, "Silence not expired", err.Error(), back(r))
		return
	}
	h.o.Logger.Info("silence expired", "id", id, "via", "status page", "remote", r.RemoteAddr)
	redirect(w, r, "expired")
}

func (h *Handler) postAck(w http.ResponseWriter, r *http.Request) {
	if !h.form(w, r) {
		return
	}
	f := r.PostForm
	rule, host, chk, by := f.Get("rule"), f.Get("host"), f.Get("check"), strings.TrimSpace(f.Get("by"))
	var missing []string
	for _, v := range []struct{ name, v string }{{"rule", rule}, {"host", host}, {"check", chk}, {"your name", by}} {
		if v.v == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		h.message(w, r, http.StatusBadRequest, "Not acknowledged", "The acknowledgement lacks "+strings.Join(missing, ", ")+".", back(r))
		return
	}
	if h.o.Acks == nil {
		h.message(w, r, http.StatusServiceUnavailable, "Not acknowledged", "This node does not evaluate alerts, so it cannot acknowledge them.", back(r))
		return
	}
	if err := h.o.Acks.Acknowledge(rule, host, chk, by, strings.TrimSpace(f.Get("comment"))); err != nil {
		code := http.StatusInternalServerError
		msg := err.Error()
		switch {
		case errors.Is(err, control.ErrUnknownInstance):
			code = http.StatusNotFound
		case errors.Is(err, control.ErrNotFiring):
			code = http.StatusConflict
		case errors.Is(err, control.ErrNotLeader):
			code = http.StatusServiceUnavailable
			if st := h.o.Status(); st.LeaderName != "" {
				msg += "; acknowledge on the leader, " + st.LeaderName
			}
		}
		h.message(w, r, code, "Not acknowledged", msg, back(r))
		return
	}
	h.o.Logger.Info("alert acknowledged", "rule", rule, "host", host, "check", chk, "by", by, "via", "status page", "remote", r.RemoteAddr)
	redirect(w, r, "acked")
}

type messageData struct {
	header
	Message string
	Back    string
}

// message answers with a page that says what happened and links back.
func (h *Handler) message(w http.ResponseWriter, r *http.Request, code int, title, msg, backTo string) {
	st := h.o.Status()
	h.render(w, r, code, "message", messageData{header: h.header(r, &st, title, false), Message: msg, Back: backTo})
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, code int, page string, data any) {
	// Rendered into a buffer first, so a template error is a 500, not a
	// page cut off in the middle.
	var b strings.Builder
	if err := h.tmpl[page].ExecuteTemplate(&b, "layout", data); err != nil {
		h.o.Logger.Error("status page: render", "page", page, "err", err)
		http.Error(w, "render "+page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The page runs no script and embeds nothing from elsewhere; say so,
	// so an injected tag would be inert.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if _, err := w.Write([]byte(b.String())); err != nil {
		h.o.Logger.Debug("status page: write", "page", page, "remote", r.RemoteAddr, "err", err)
	}
}

// checkURL is the path of a check's page.
func checkURL(host, chk string) string {
	return "/check/" + url.PathEscape(host) + "/" + url.PathEscape(chk)
}

// ago says how long before now t was, in the largest unit that fits.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// clock formats a moment of the last days for a sentence.
func clock(t time.Time) string {
	if t.IsZero() {
		return "an unknown time"
	}
	return t.Format("2006-01-02 15:04:05")
}

// shorten cuts s to n runes, with an ellipsis.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// perfdata writes perf as the plugin API spells it:
// 'label'=value[UOM];[warn];[crit];[min];[max], the trailing empty fields
// left out: the value and thresholds as the plugin wrote them (82138904KB
// stays 82138904KB, not 8.21389e+07KB), min and max as numbers.
func perfdata(perf []check.Perf) string {
	var b strings.Builder
	for i, p := range perf {
		if i > 0 {
			b.WriteByte(' ')
		}
		label := p.Label
		if strings.ContainsAny(label, " ='") {
			label = "'" + strings.ReplaceAll(label, "'", "''") + "'"
		}
		fields := []string{p.ValueText() + p.UOM, p.Warn, p.Crit, "", ""}
		if p.Min != nil {
			fields[3] = check.FormatValue(*p.Min)
		}
		if p.Max != nil {
			fields[4] = check.FormatValue(*p.Max)
		}
		for len(fields) > 1 && fields[len(fields)-1] == "" {
			fields = fields[:len(fields)-1]
		}
		b.WriteString(label + "=" + strings.Join(fields, ";"))
	}
	return b.String()
}
