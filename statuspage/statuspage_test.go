package statuspage

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/evaluator/leader"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/silence"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
)

// t0 is the page's clock in these tests: a fixed past time, so nothing
// depends on when they run.
var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

const token = "page-token"

// fakeAcks records acknowledgements, or fails them with err.
type fakeAcks struct {
	mu  sync.Mutex
	got [][5]string
	err error
}

func (f *fakeAcks) Acknowledge(rule, host, chk, by, comment string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.got = append(f.got, [5]string{rule, host, chk, by, comment})
	return nil
}

// openStore opens an embedded TSDB holding history of the fixture's
// checks: the last 30 minutes of web1's gw as seen by a (OK, then
// CRITICAL for the last ten) and b (OK until it went quiet 10 minutes
// ago), its run time, and gw-up's alert transitions.
func openStore(t testing.TB) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var pts []tsdb.Point
	for i := 30; i >= 1; i-- {
		at := t0.Add(-time.Duration(i) * time.Minute)
		st := check.OK
		if i <= 10 {
			st = check.Critical
		}
		r := check.Result{Host: "web1", Check: "gw", Observer: "a", Status: st, Start: at, Duration: time.Duration(10+i) * time.Millisecond}
		pts = observer.ResultPoints(pts, &r)
		if i > 10 {
			r.Observer, r.Status = "b", check.OK
			pts = observer.ResultPoints(pts, &r)
		}
	}
	alert := map[string]string{"rule": "gw-up", "host": "web1", "check": "gw"}
	pts = append(pts,
		tsdb.Point{Metric: observer.MetricAlertState, Tags: alert, Time: t0.Add(-10 * time.Minute), Value: float64(alerting.Pending)},
		tsdb.Point{Metric: observer.MetricAlertState, Tags: alert, Time: t0.Add(-9 * time.Minute), Value: float64(alerting.Firing)})
	if err := s.Append(context.Background(), pts); err != nil {
		t.Fatal(err)
	}
	return s
}

// fixture is a node's status in the middle of an incident: web1's gw is
// down (firing) and holds back app; db1's mysql has too few fresh
// observers; its disk is silenced and its load acknowledged; observer b
// has gone quiet.
func fixture(t testing.TB) (func() leader.Status, *silence.Store, string) {
	t.Helper()
	sils, err := silence.Open(filepath.Join(t.TempDir(), "silences.json"), silence.Options{Now: func() time.Time { return t0.Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	id, err := sils.Set(silence.Silence{Matchers: []silence.Matcher{{Name: "host", Value: "db1", IsEqual: true}, {Name: "check", Value: "disk", IsEqual: true}},
		StartsAt: t0.Add(-time.Hour), EndsAt: t0.Add(2 * time.Hour), CreatedBy: "alice", Comment: "disk swap"})
	if err != nil {
		t.Fatal(err)
	}
	res := func(obs string, st check.Status, fresh bool, out string) leader.ObserverResult {
		return leader.ObserverResult{Observer: obs, Status: st, Raw: st.String(), Output: out, At: t0.Add(-5 * time.Second),
			Duration: 12 * time.Millisecond, Fresh: fresh}
	}
	st := leader.Status{Observer: "a", Mode: "peer", Leader: true, Epoch: 3, LeaderName: "a", LeaderEpoch: 3, Checks: 6,
		Observers: []leader.ObserverStatus{
			{Name: "a", LastSeen: t0.Add(-time.Second), Leader: true},
			{Name: "b", LastSeen: t0.Add(-10 * time.Minute), Silent: true},
		},
		Instances: []leader.InstanceStatus{
			{Rule: "gw-up", Host: "web1", Check: "gw", State: alerting.Firing, Since: t0.Add(-10 * time.Minute), FiredAt: t0.Add(-9 * time.Minute),
				Observers: []leader.ObserverResult{res("a", check.Critical, true, "connection refused"), res("b", check.OK, false, "TCP OK")}},
			{Rule: "app-up", Host: "web1", Check: "app", State: alerting.Suppressed, Reason: `parent "gw-up" is firing on web1 (gw)`,
				Observers: []leader.ObserverResult{res("a", check.Critical, true, "connection refused")}},
			{Rule: "cpu", Host: "web1", Check: "cpu", State: alerting.OK,
				Observers: []leader.ObserverResult{{Observer: "a", Status: check.OK, Raw: "OK", Output: "load fine", At: t0, Fresh: true,
					Perf: []check.Perf{{Label: "used", Value: 82138904, UOM: "KB", Warn: "90", Crit: "95"}, {Label: "load 1", Value: 0.5}}}}},
			{Rule: "db-up", Host: "db1", Check: "mysql", State: alerting.Unknown, Reason: "1 fresh observers, quorum is 2",
				Observers: []leader.ObserverResult{res("a", check.Critical, true, "no answer")}},
			{Rule: "default", Host: "db1", Check: "disk", State: alerting.Silenced, Reason: "silenced by " + id,
				Observers: []leader.ObserverResult{res("a", check.Critical, true, "disk full")}},
			{Rule: "default", Host: "db1", Check: "load", State: alerting.Acknowledged, FiredAt: t0.Add(-time.Hour),
				AckedBy: "bob", AckedAt: t0.Add(-30 * time.Minute), AckComment: "on it",
				Observers: []leader.ObserverResult{res("a", check.Critical, true, "load 40")}},
			// A self alert: no observer results, its rule's summary says why.
			{Rule: "observer-up", Host: "b", Check: "heartbeat", State: alerting.Firing, FiredAt: t0.Add(-5 * time.Minute),
				Summary: "observer b sent no heartbeat"},
		}}
	return func() leader.Status { return st }, sils, id
}

func newHandler(t testing.TB, o Options) (*Handler, *silence.Store, *fakeAcks, string) {
	t.Helper()
	status, sils, id := fixture(t)
	acks := &fakeAcks{}
	if o.Status == nil {
		o.Status = status
	}
	if o.Silences == nil {
		o.Silences = sils
	}
	if o.Acks == nil {
		o.Acks = acks
	}
	o.Now = func() time.Time { return t0 }
	return New(o), sils, acks, id
}

func get(t testing.TB, h http.Handler, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	return rec.Code, rec.Body.String()
}

// rowOf returns the table row (<tr>…</tr>) that holds all of want.
func rowOf(t *testing.T, page string, want ...string) string {
	t.Helper()
next:
	for _, m := range regexp.MustCompile(`(?s)<tr[ >].*?</tr>`).FindAllString(page, -1) {
		for _, w := range want {
			if !strings.Contains(m, w) {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no table row holds all of %q", want)
	return ""
}

// svgElems counts the elements of each name in every SVG of s, parsing
// them as XML: the graphs must be well-formed to draw at all.
func svgElems(t testing.TB, s string) map[string]int {
	t.Helper()
	n := make(map[string]int)
	for _, svg := range regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(s, -1) {
		dec := xml.NewDecoder(strings.NewReader(svg))
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("graph is not well-formed: %v\n%s", err, svg)
			}
			if se, ok := tok.(xml.StartElement); ok {
				n[se.Name.Local]++
				for _, a := range se.Attr {
					if se.Name.Local == "polyline" && a.Name.Local == "points" {
						n["polyline points"] += len(strings.Fields(a.Value))
					}
				}
			}
		}
	}
	return n
}

// TestOverview renders the overview of the fixture and reads it as a
// person would: each alert with its state and why, the grid's cells, the
// cluster, and a graph drawn from the TSDB's points.
func TestOverview(t *testing.T) {
	h, _, _, id := newHandler(t, Options{History: openStore(t), Token: token})
	code, page := get(t, h, "/")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d\n%s", code, page)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="10">`,
		"mode <strong>peer</strong>",
		"leader <strong>a</strong>, epoch 3",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Each alert says its state and why, in words.
	for _, c := range []struct{ rule, host, state, why string }{
		{"gw-up", "web1", "firing", "firing since 2024-03-01 11:51:00: 1 of 1 fresh observers see it failing"},
		{"app-up", "web1", "suppressed", "held back: parent &#34;gw-up&#34; is firing on web1 (gw)"},
		{"db-up", "db1", "unknown", "unknown: 1 fresh observers, quorum is 2"},
		{"default", "db1", "silenced", "silenced by " + id + " (host=&#34;db1&#34;, check=&#34;disk&#34;) by alice until 2024-03-01 14:00:00: disk swap"},
		{"default", "db1", "acknowledged", "acknowledged by bob at 2024-03-01 11:30:00: on it"},
		{"observer-up", "b", "firing", "firing since 2024-03-01 11:55:00: observer b sent no heartbeat"},
	} {
		row := rowOf(t, page, ">"+c.rule+"<", ">"+c.host+"<", "<strong>"+c.state+"</strong>")
		if !strings.Contains(row, c.why) {
			t.Errorf("%s on %s: row %s\nlacks why %q", c.rule, c.host, row, c.why)
		}
	}
	// The firing alert offers an acknowledgement; the acknowledged one
	// not again.
	if row := rowOf(t, page, "<strong>firing</strong>", ">gw-up<"); !strings.Contains(row, `/ack?check=gw&amp;host=web1&amp;rule=gw-up`) {
		t.Errorf("firing row has no acknowledge link: %s", row)
	}
	if row := rowOf(t, page, "<strong>acknowledged</strong>"); strings.Contains(row, "/ack?") {
		t.Errorf("acknowledged row offers another acknowledgement: %s", row)
	}
	// The observers, b silent.
	if row := rowOf(t, page, "<th scope=\"row\">b</th>"); !strings.Contains(row, "silent") || !strings.Contains(row, "10m ago") {
		t.Errorf("observer b's row %s: want silent, 10m ago", row)
	}
	// The grid: gw's row has a's CRITICAL and b's stale OK, in text.
	gw := rowOf(t, page, `<th scope="row"><a href="/check/web1/gw">`)
	for _, want := range []string{`class="s2"><strong>CRITICAL</strong>`, "connection refused", `<strong>OK</strong>`, "stale"} {
		if !strings.Contains(gw, want) {
			t.Errorf("gw's row lacks %q: %s", want, gw)
		}
	}
	// Its graph: CRITICAL and OK runs of a, b's OK run, the run time
	// line, gw-up's two transitions.
	n := svgElems(t, gw)
	if n["svg"] != 1 || n["polyline points"] < 2 || n["circle"] < 2 {
		t.Errorf("gw's graph has %v, want one svg with a run-time line and the alert marks", n)
	}
	if !strings.Contains(gw, `<rect class="s2"`) || !strings.Contains(gw, `<rect class="s0"`) {
		t.Errorf("gw's graph lacks the CRITICAL or the OK strip: %s", gw)
	}
	if !strings.Contains(gw, "a: 6 OK, 4 CRITICAL; b: 7 OK;") || !strings.Contains(gw, "2 alert transitions") {
		t.Errorf("gw's graph does not say what it shows: %s", gw)
	}
	// A check without history has an empty graph, not another's.
	if n := svgElems(t, rowOf(t, page, `<th scope="row"><a href="/check/db1/disk">`)); n["rect"] != 1 || n["polyline"] != 0 {
		t.Errorf("disk's graph has %v, want the background only", n)
	}
}

// TestCheckPage: a check's page shows each observer's result with its
// perfdata as the plugin wrote it, the longer graph and the incident
// timeline from dmonitor.alert.state.
func TestCheckPage(t *testing.T) {
	h, _, _, _ := newHandler(t, Options{History: openStore(t), Token: token})
	code, page := get(t, h, "/check/web1/gw?range=1h")
	if code != http.StatusOK {
		t.Fatalf("GET /check/web1/gw = %d\n%s", code, page)
	}
	if n := svgElems(t, page); n["rect"] < 3 || n["polyline points"] < 20 || n["text"] < 4 {
		t.Errorf("the check's graph has %v, want strips, a line over 20 buckets and labels", n)
	}
	rowOf(t, page, "2024-03-01 11:51:00", "gw-up", "<strong>firing</strong>")
	rowOf(t, page, "2024-03-01 11:50:00", "gw-up", "<strong>pending</strong>")
	if !strings.Contains(page, "firing since") || !strings.Contains(page, `<td>CRITICAL</td>`) {
		t.Errorf("the page lacks the alert's why or the plugin's word")
	}

	_, cpu := get(t, h, "/check/web1/cpu")
	if want := "used=82138904KB;90;95 &#39;load 1&#39;=0.5"; !strings.Contains(cpu, want) {
		t.Errorf("perfdata not as written: want %q in\n%s", want, cpu)
	}
	if code, _ := get(t, h, "/check/web1/nope"); code != http.StatusNotFound {
		t.Errorf("an unknown check = %d, want 404", code)
	}
}

// TestHistoryUnreadable: a TSDB that fails leaves the live state on the
// page and says why the graphs are missing.
func TestHistoryUnreadable(t *testing.T) {
	fail := queryFunc(func(context.Context, tsdb.Query) ([]tsdb.Series, error) {
		return nil, fmt.Errorf("query: %w", tsdb.ErrUnavailable)
	})
	h, _, _, _ := newHandler(t, Options{History: fail})
	code, page := get(t, h, "/")
	if code != http.StatusOK || !strings.Contains(page, "could not be read from the TSDB: query: store unavailable") ||
		!strings.Contains(page, "connection refused") {
		t.Errorf("GET / = %d; want the grid and the TSDB's error\n%s", code, page)
	}
}

type queryFunc func(context.Context, tsdb.Query) ([]tsdb.Series, error)

func (f queryFunc) Query(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) { return f(ctx, q) }

// TestOneQueryPerMetric: the overview reads each metric once for every
// check, and the next refresh within CacheFor reads nothing.
func TestOneQueryPerMetric(t *testing.T) {
	store := openStore(t)
	var mu sync.Mutex
	count := map[string]int{}
	q := queryFunc(func(ctx context.Context, q tsdb.Query) ([]tsdb.Series, error) {
		mu.Lock()
		count[q.Metric]++
		mu.Unlock()
		return store.Query(ctx, q)
	})
	h, _, _, _ := newHandler(t, Options{History: q})
	get(t, h, "/")
	get(t, h, "/")
	want := map[string]int{observer.MetricCheckStatus: 1, observer.MetricCheckDuration: 1, observer.MetricAlertState: 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("queries %v, want %v", count, want)
	}
}

func post(t testing.TB, h http.Handler, target string, form url.Values) *http.Response {
	t.Helper()
	req := httptest.NewRequest("POST", target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = "192.0.2.1:40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// TestForms posts each form without the token, with a wrong one and with
// the right one: only the last changes anything, and it answers 303 back
// to the page it came from.
func TestForms(t *testing.T) {
	h, sils, acks, silID := newHandler(t, Options{Token: token})
	silenceForm := url.Values{"host": {"web1"}, "check": {"gw"}, "duration": {"2h"}, "author": {"carol"}, "comment": {"maintenance"},
		"return": {"/check/web1/gw"}}
	ackForm := url.Values{"rule": {"gw-up"}, "host": {"web1"}, "check": {"gw"}, "by": {"dave"}, "comment": {"looking"},
		"return": {"/check/web1/gw"}}
	expireForm := url.Values{"id": {silID}, "return": {"/silences"}}
	with := func(v url.Values, tok string) url.Values {
		c := url.Values{}
		for k, vs := range v {
			c[k] = vs
		}
		if tok != "" {
			c.Set("token", tok)
		}
		return c
	}
	for _, tok := range []string{"", "wrong", token + "x"} {
		for _, f := range []struct {
			path string
			form url.Values
		}{{"/silences", silenceForm}, {"/ack", ackForm}, {"/silences/expire", expireForm}} {
			if resp := post(t, h, f.path, with(f.form, tok)); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("POST %s with token %q = %s, want 401", f.path, tok, resp.Status)
			}
		}
	}
	if n := len(sils.List(t0)); n != 1 || len(acks.got) != 0 {
		t.Fatalf("refused forms changed something: %d silences, acks %v", n, acks.got)
	}

	resp := post(t, h, "/silences", with(silenceForm, token))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/check/web1/gw?done=silenced" {
		t.Fatalf("silence = %s to %q, want 303 to the check's page", resp.Status, resp.Header.Get("Location"))
	}
	var added *silence.Silence
	for _, s := range sils.List(t0) {
		if s.ID != silID {
			added = &s
		}
	}
	if added == nil || matchers(added.Matchers) != `host="web1", check="gw"` || !added.EndsAt.Equal(t0.Add(2*time.Hour)) ||
		added.CreatedBy != "carol" || added.Comment != "maintenance" {
		t.Fatalf("silence stored as %+v", added)
	}
	// The page it returns to says so, in a fixed text.
	if _, page := get(t, h, "/check/web1/gw?done=silenced"); !strings.Contains(page, "Silence added.") {
		t.Error("the check's page does not say the silence was added")
	}

	if resp := post(t, h, "/ack", with(ackForm, token)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("ack = %s", resp.Status)
	}
	if len(acks.got) != 1 || acks.got[0] != [5]string{"gw-up", "web1", "gw", "dave", "looking"} {
		t.Fatalf("acks %v", acks.got)
	}

	if resp := post(t, h, "/silences/expire", with(expireForm, token)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("expire = %s", resp.Status)
	}
	for _, s := range sils.List(t0) {
		if s.ID == silID && s.State(t0) != silence.StateExpired {
			t.Errorf("silence %s still %s", silID, s.State(t0))
		}
	}
}

// TestFormErrors: what the stores refuse comes back as a page with the
// status the API would answer, and a form never redirects off the site.
func TestFormErrors(t *testing.T) {
	h, _, acks, _ := newHandler(t, Options{Token: token})
	for _, c := range []struct {
		name   string
		path   string
		form   url.Values
		ackErr error
		code   int
		says   string
	}{
		{"bad duration", "/silences", url.Values{"host": {"x"}, "duration": {"soon"}, "author": {"e"}}, nil, 400, "not a positive Go duration"},
		{"no matcher", "/silences", url.Values{"duration": {"1h"}, "author": {"e"}}, nil, 400, "at least one matcher"},
		{"no name", "/ack", url.Values{"rule": {"r"}, "host": {"h"}, "check": {"c"}}, nil, 400, "lacks your name"},
		{"not firing", "/ack", url.Values{"rule": {"r"}, "host": {"h"}, "check": {"c"}, "by": {"f"}},
			fmt.Errorf("acknowledge r: it is ok: %w", control.ErrNotFiring), 409, "it is ok"},
		{"not leader", "/ack", url.Values{"rule": {"r"}, "host": {"h"}, "check": {"c"}, "by": {"f"}},
			fmt.Errorf("acknowledge r: %w", control.ErrNotLeader), 503, "acknowledge on the leader, a"},
		{"unknown silence", "/silences/expire", url.Values{"id": {"nope"}}, nil, 404, "silence not found"},
	} {
		acks.err = c.ackErr
		c.form.Set("token", token)
		resp := post(t, h, c.path, c.form)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.says) {
			t.Errorf("%s: %s, want %d saying %q\n%s", c.name, resp.Status, c.code, c.says, b)
		}
	}
	acks.err = nil
	for _, ret := range []string{"//evil.example/", "https://evil.example/", `/\evil.example`} {
		resp := post(t, h, "/ack", url.Values{"rule": {"r"}, "host": {"h"}, "check": {"c"}, "by": {"f"}, "token": {token}, "return": {ret}})
		if loc := resp.Header.Get("Location"); loc != "/?done=acked" {
			t.Errorf("return %q redirected to %q, want /?done=acked", ret, loc)
		}
	}
}

// TestFormsWithoutToken: a node without a control token refuses every
// form with 403, whatever is posted as token.
func TestFormsWithoutToken(t *testing.T) {
	h, sils, _, _ := newHandler(t, Options{})
	resp := post(t, h, "/silences", url.Values{"host": {"x"}, "duration": {"1h"}, "author": {"e"}, "token": {""}})
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "control.token_file") {
		t.Errorf("POST without a configured token = %s\n%s", resp.Status, b)
	}
	if len(sils.List(t0)) != 1 {
		t.Error("a silence was added")
	}
	if _, page := get(t, h, "/silences"); !strings.Contains(page, "Changes are disabled") {
		t.Error("the silences page does not say changes are disabled")
	}
}

// TestFormPagesDoNotRefresh: what someone types is not lost to a reload.
func TestFormPagesDoNotRefresh(t *testing.T) {
	h, _, _, _ := newHandler(t, Options{Token: token})
	for _, p := range []string{"/silences?host=web1&check=gw", "/ack?rule=gw-up&host=web1&check=gw"} {
		code, page := get(t, h, p)
		if code != http.StatusOK || strings.Contains(page, "http-equiv=\"refresh\"") || !strings.Contains(page, `type="password" name="token"`) {
			t.Errorf("GET %s = %d; want a form with a password field and no refresh\n%s", p, code, page)
		}
		if !strings.Contains(page, `value="web1"`) {
			t.Errorf("GET %s does not fill in the host", p)
		}
	}
}

func TestPerfdata(t *testing.T) {
	lo, hi := 0.0, 100.0
	for _, c := range []struct {
		perf []check.Perf
		want string
	}{
		{[]check.Perf{{Label: "used", Value: 82138904, UOM: "KB"}}, "used=82138904KB"},
		{[]check.Perf{{Label: "time", Value: 0.001234, UOM: "s", Warn: "1", Crit: "2", Min: &lo}}, "time=0.001234s;1;2;0"},
		// As the plugin wrote it, trailing zeros and all.
		{[]check.Perf{{Label: "load", Value: 0.5, Text: "0.500"}}, "load=0.500"},
		{[]check.Perf{{Label: "pct", Value: 5, UOM: "%", Max: &hi}}, "pct=5%;;;;100"},
		{[]check.Perf{{Label: "it's", Value: 1}, {Label: "a", Value: -2}}, "'it''s'=1 a=-2"},
	} {
		if got := perfdata(c.perf); got != c.want {
			t.Errorf("perfdata(%+v) = %q, want %q", c.perf, got, c.want)
		}
	}
}
