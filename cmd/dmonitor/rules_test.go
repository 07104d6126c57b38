package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/tsdb"
	"github.com/dmonitor/dmonitor/tsdb/embedded"
	"github.com/dmonitor/dmonitor/tsdb/httpapi"
)

// rulesTree is a configuration with two hosts, two checks run by Debian's
// check_dummy, the three observers of the recorded history sharing Redis, a
// quorum of two and a receiver "ops", without rules.d.
var rulesTree = map[string]string{
	"nodes.txt": "eu-1\neu-2\nus-1\n",
	"dmonitor.yaml": `observer: eu-1
redis: {url: "redis://127.0.0.1:9/0"}
quorum: 2
interval: 10s
receivers:
  ops:
    webhook: {url: "http://127.0.0.1:9/alerts"}
checks:
  ping:
    command: [check_dummy, "0"]
  http:
    command: [check_dummy, "0"]
`,
	"hosts.d/www1/ping": "",
	"hosts.d/www1/http": "",
	"hosts.d/www2/ping": "",
	"hosts.d/www2/http": "",
}

const goodRules = `rules:
  - name: host-up
    select: {check: ping}
  - name: www-http
    select: {check: http}
    depends_on: [host-up]
    for: 20s
    notify: [ops]
`

func configDir(t *testing.T, extra map[string]string) string {
	t.Helper()
	requirePlugins(t)
	dir := t.TempDir()
	writeTree(t, dir, rulesTree)
	writeTree(t, dir, extra)
	return dir
}

func TestRulesCheckGood(t *testing.T) {
	dir := configDir(t, map[string]string{
		"rules.d/hosts.yaml": goodRules,
		"rules.d/disk.yaml":  "rules:\n  - name: disk\n    select: {host: www2}\n    severity: warning\n",
		"rules.d/README":     "not a rule file",
	})
	code, out, stderr := runMain(t, "rules", "check", "--config", dir)
	if code != 0 || out != "3 rules in 2 files OK\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and \"3 rules in 2 files OK\"", code, out, stderr)
	}
	code, out, _ = runMain(t, "rules", "check", "--config", dir, "--json")
	var got rulesCheckOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("exit %d, %v in %s", code, err, out)
	}
	if !got.OK || len(got.Errors) != 0 || !sameSet(got.Rules, []string{"disk", "host-up", "www-http"}) {
		t.Errorf("--json = %s", out)
	}
	// Without rules.d, the default rule alone applies: nothing to refuse.
	code, out, _ = runMain(t, "rules", "check", "--config", configDir(t, nil))
	if code != 0 || out != "0 rules in 0 files OK\n" {
		t.Errorf("no rules.d: exit %d, %q", code, out)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestRulesCheckBad(t *testing.T) {
	dir := configDir(t, map[string]string{
		"rules.d/a.yaml": `rules:
  - name: www-http
    select: {check: http}
    expr: failing >= quorm
  - name: host-up
    select: {check: ping}
    depends_on: [router]
    notify: [pager]
`,
		"rules.d/b.yaml": `rules:
  - name: disk
    severty: warning
`,
	})
	code, out, stderr := runMain(t, "rules", "check", "--config", dir)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing on stdout", code, out)
	}
	// Every problem, in both files, each with its position and rule.
	want := []string{
		`rules.d/a.yaml:4:22: rule "www-http": expr: unknown name quorm`,
		`rules.d/a.yaml:7:18: rule "host-up": depends_on: no rule "router"`,
		`rules.d/a.yaml:8:14: rule "host-up": notify: no receiver "pager" (have ops, default)`,
		`rules.d/b.yaml:3:5: rule "disk": unknown field "severty"`,
		"4 errors",
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != len(want) {
		t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(want), stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i], w)
		}
	}

	code, out, _ = runMain(t, "rules", "check", "--config", dir, "--json")
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 1 {
		t.Fatalf("exit %d, %v in %s", code, err, out)
	}
	errs, _ := got["errors"].([]any)
	if got["ok"] != false || len(errs) != 4 {
		t.Fatalf("--json = %s; want ok false and 4 errors", out)
	}
	first, _ := errs[0].(map[string]any)
	if first["file"] != "rules.d/a.yaml" || first["line"] != 4.0 || first["col"] != 22.0 ||
		!strings.HasPrefix(first["message"].(string), `rule "www-http": expr: unknown name quorm`) {
		t.Errorf("first error = %v", first)
	}
	if rules, ok := got["rules"].([]any); !ok || len(rules) != 0 {
		t.Errorf("rules = %v, want [] when refused", got["rules"])
	}
}

// TestRulesCheckWarnings: a select key no instance has, an unknown
// severity and a select that matches none of the configuration's targets
// load, and are reported with their positions as warnings (exit 0), or as
// errors with --strict (exit 1).
func TestRulesCheckWarnings(t *testing.T) {
	dir := configDir(t, map[string]string{
		"rules.d/hosts.yaml": goodRules,
		"rules.d/typos.yaml": `rules:
  - name: load-high
    select: {chek: load}
  - name: www-ping
    select: {host: "www*", check: ping}
    severity: warnin
  - name: db-http
    select: {host: "db*", check: http}
  - name: www-htp
    select: {check: htp}
`,
	})
	want := []string{
		`rules.d/typos.yaml:3:14: warning: rule "load-high": select: unknown key "chek" (did you mean "check"?): an instance has only host and check, so this rule selects nothing`,
		`rules.d/typos.yaml:6:15: warning: rule "www-ping": severity: unknown severity "warnin" (did you mean "warning"?): want critical, warning or info`,
		`rules.d/typos.yaml:8:20: warning: rule "db-http": select: host: "db*" matches no host of the configuration`,
		`rules.d/typos.yaml:10:21: warning: rule "www-htp": select: check: "htp" matches no check of the configuration (did you mean "http"?)`,
	}
	code, out, stderr := runMain(t, "rules", "check", "--config", dir)
	if code != 0 || out != "6 rules in 2 files OK, 4 warnings\n" {
		t.Errorf("exit %d, stdout %q; want 0 and \"6 rules in 2 files OK, 4 warnings\"", code, out)
	}
	if got := strings.Split(strings.TrimSpace(stderr), "\n"); !slices.Equal(got, want) {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}

	// --strict: the same problems, as errors.
	code, out, stderr = runMain(t, "rules", "check", "--config", dir, "--strict")
	var strict []string
	for _, w := range want {
		strict = append(strict, strings.Replace(w, " warning: ", " ", 1))
	}
	strict = append(strict, "4 errors")
	if got := strings.Split(strings.TrimSpace(stderr), "\n"); code != 1 || out != "" || !slices.Equal(got, strict) {
		t.Errorf("--strict: exit %d, stdout %q, stderr:\n%s\nwant 1 and:\n%s", code, out, stderr, strings.Join(strict, "\n"))
	}

	code, out, _ = runMain(t, "rules", "check", "--config", dir, "--json")
	var got rulesCheckOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("exit %d, %v in %s", code, err, out)
	}
	if !got.OK || len(got.Errors) != 0 || len(got.Warnings) != 4 || got.Warnings[0] != (ruleErrorJSON{File: "rules.d/typos.yaml", Line: 3, Col: 14,
		Message: `rule "load-high": select: unknown key "chek" (did you mean "check"?): an instance has only host and check, so this rule selects nothing`}) {
		t.Errorf("--json = %s", out)
	}
	code, out, _ = runMain(t, "rules", "check", "--config", dir, "--json", "--strict")
	got = rulesCheckOutput{}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 1 || got.OK || len(got.Errors) != 4 || len(got.Warnings) != 0 {
		t.Errorf("--json --strict: exit %d, %v, %s", code, err, out)
	}
}

// TestRulesCheckBadConfig: a configuration that does not load is reported
// together with the rules' own problems.
func TestRulesCheckBadConfig(t *testing.T) {
	dir := configDir(t, map[string]string{
		"dmonitor.yaml":  "interval: 10 seconds\n",
		"rules.d/a.yaml": "rules:\n  - name: x\n    for: soon\n",
	})
	code, _, stderr := runMain(t, "rules", "check", "--config", dir)
	if code != 1 || !strings.Contains(stderr, "dmonitor.yaml:1") || !strings.Contains(stderr, `rules.d/a.yaml:3:10: rule "x": for:`) {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

// t0 is where the recorded history of the rules test tree starts.
var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// recordHistory writes 10 minutes of dmonitor.check.status and duration
// for three observers into store: www1's http fails for all of them in
// [2m, 4m), and us-1 alone sees www2's http fail in [6m, 8m).
func recordHistory(t *testing.T, store tsdb.Store) {
	t.Helper()
	var pts []tsdb.Point
	for s := -60; s < 600; s += 10 {
		for i, obs := range []string{"eu-1", "eu-2", "us-1"} {
			at := t0.Add(time.Duration(s+i) * time.Second)
			for _, tg := range [][2]string{{"www1", "ping"}, {"www1", "http"}, {"www2", "ping"}, {"www2", "http"}} {
				status := 0.0
				if tg == [2]string{"www1", "http"} && s >= 120 && s < 240 || tg == [2]string{"www2", "http"} && obs == "us-1" && s >= 360 && s < 480 {
					status = 2
				}
				tags := map[string]string{"host": tg[0], "check": tg[1], "observer": obs}
				pts = append(pts,
					tsdb.Point{Metric: evaluator.MetricCheckStatus, Tags: tags, Time: at, Value: status},
					tsdb.Point{Metric: evaluator.MetricCheckDuration, Tags: tags, Time: at, Value: 0.2})
			}
		}
	}
	if err := store.Append(context.Background(), pts); err != nil {
		t.Fatal(err)
	}
}

// rulesTestDir is the rules test tree with its history recorded in the
// embedded store under data/tsdb, as `dmonitor run` would have left it.
func rulesTestDir(t *testing.T) string {
	t.Helper()
	dir := configDir(t, map[string]string{"rules.d/hosts.yaml": goodRules})
	store, err := embedded.Open(filepath.Join(dir, "data", "tsdb"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	recordHistory(t, store)
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRulesTestText(t *testing.T) {
	dir := rulesTestDir(t)
	code, out, stderr := runMain(t, "rules", "test", "--config", dir,
		"--from", "2026-11-21T10:00:00Z", "--to", "2026-11-21T10:09:00Z")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	labels := map[string]string{"host": "www1", "check": "http", "severity": "critical"}
	active := t0.Add(130 * time.Second)
	firing := alerting.NotificationID("www-http", labels, alerting.StatusFiring, active)
	resolved := alerting.NotificationID("www-http", labels, alerting.StatusResolved, active)
	// www1's outage: held a step for the parent's re-check, pending, firing
	// after `for: 20s`, resolved; us-1 alone on www2 changes nothing.
	want := "replay from 2026-11-21T10:00:00Z to 2026-11-21T10:09:00Z every 10s: 55 steps, 2 TSDB queries\n" +
		"\n" +
		"rule www-http on www1 (http)\n" +
		"  2026-11-21T10:02:10Z ok → suppressed: waiting for parent checks ping to run again\n" +
		"  2026-11-21T10:02:20Z suppressed → pending\n" +
		"  2026-11-21T10:02:30Z pending → firing (notify ops: firing " + firing + ")\n" +
		"  2026-11-21T10:04:10Z firing → ok (notify ops: resolved " + resolved + ")\n" +
		"\n" +
		"ok throughout: host-up on www1 (ping), host-up on www2 (ping), www-http on www2 (http)\n"
	if !strings.HasPrefix(out, want) {
		t.Errorf("output:\n%s\nwant it to start with:\n%s", out, want)
	}
	if !strings.Contains(out, "note: plugin output is not stored in the TSDB") || !strings.Contains(out, "note: re-checks are not run") {
		t.Errorf("output does not say what a replay cannot know:\n%s", out)
	}
}

func TestRulesTestJSON(t *testing.T) {
	dir := rulesTestDir(t)
	code, out, stderr := runMain(t, "rules", "test", "--config", dir, "--json", "--step", "1m",
		"--from", "2026-11-21T10:00:00Z", "--to", "2026-11-21T10:09:00Z", "www-http")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var got struct {
		From, To, Step string
		Steps          int
		Queries        int
		Notes          []string
		Instances      []struct {
			Rule, Host, Check, State string
			Transitions              []struct {
				At       time.Time
				From, To string
				Reason   string
			}
			Notifications []struct {
				At         time.Time
				Status, ID string
				Summary    string
				Receivers  []string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if got.From != "2026-11-21T10:00:00Z" || got.Step != "1m0s" || got.Steps != 10 || got.Queries != 2 || len(got.Notes) != 4 {
		t.Errorf("header: %+v", got)
	}
	// Only the named rule, on both hosts.
	if len(got.Instances) != 2 || got.Instances[0].Rule != "www-http" || got.Instances[0].Host != "www1" || got.Instances[1].Host != "www2" {
		t.Fatalf("instances = %+v", got.Instances)
	}
	// Every minute: 10:03 is the first step that sees the outage; the hold
	// for the parent's re-check has run out by 10:04, whose `for` counts
	// from 10:03, and the recovery is at 10:05.
	in := got.Instances[0]
	var tl []string
	for _, tr := range in.Transitions {
		tl = append(tl, tr.At.Format("15:04")+" "+tr.From+"→"+tr.To)
	}
	if want := []string{"10:03 ok→suppressed", "10:04 suppressed→firing", "10:05 firing→ok"}; !slices.Equal(tl, want) || in.State != "ok" {
		t.Errorf("timeline %v (final %s), want %v", tl, in.State, want)
	}
	labels := map[string]string{"host": "www1", "check": "http", "severity": "critical"}
	active := t0.Add(3 * time.Minute)
	if len(in.Notifications) != 2 ||
		in.Notifications[0].ID != alerting.NotificationID("www-http", labels, alerting.StatusFiring, active) ||
		in.Notifications[1].ID != alerting.NotificationID("www-http", labels, alerting.StatusResolved, active) ||
		!slices.Equal(in.Notifications[0].Receivers, []string{"ops"}) {
		t.Errorf("notifications = %+v", in.Notifications)
	}
}

// TestRulesTestLockedStore: while a daemon holds the embedded store, the
// replay says so and how to get round it, and --tsdb-url reads the same
// history through the OpenTSDB API, with the same outcome.
func TestRulesTestLockedStore(t *testing.T) {
	dir := rulesTestDir(t)
	store, err := embedded.Open(filepath.Join(dir, "data", "tsdb"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	args := []string{"rules", "test", "--config", dir, "--from", "2026-11-21T10:00:00Z", "--to", "2026-11-21T10:09:00Z"}
	code, _, stderr := runMain(t, args...)
	if code != 1 || !strings.Contains(stderr, "is locked") || !strings.Contains(stderr, "--tsdb-url http://127.0.0.1:4242") {
		t.Fatalf("locked store: exit %d, stderr %q; want 1, the lock named and --tsdb-url suggested", code, stderr)
	}

	api := httptest.NewServer(httpapi.NewHandler(store, httpapi.Options{}))
	t.Cleanup(api.Close)
	code, viaAPI, stderr := runMain(t, append(args, "--tsdb-url", api.URL)...)
	if code != 0 {
		t.Fatalf("--tsdb-url: exit %d, stderr %s", code, stderr)
	}
	store.Close()
	code, direct, stderr := runMain(t, args...)
	if code != 0 {
		t.Fatalf("after the lock is released: exit %d, stderr %s", code, stderr)
	}
	if viaAPI != direct || !strings.Contains(direct, "pending → firing") {
		t.Errorf("through the API:\n%s\ndirect:\n%s\nwant the same firing timeline", viaAPI, direct)
	}
}

func TestRulesTestRefuses(t *testing.T) {
	dir := configDir(t, map[string]string{"rules.d/hosts.yaml": goodRules})
	cases := []struct {
		name string   // what is wrong
		args []string // after rules test --config dir
		want string   // in stderr
	}{
		{"nothing recorded", nil, "no embedded store at " + filepath.Join(dir, "data", "tsdb")},
		{"bad time", []string{"--from", "yesterday"}, `--from: "yesterday": want an RFC 3339 time`},
		{"bad step", []string{"--step", "0s"}, `--step "0s"`},
		{"unknown rule", []string{"--tsdb-url", "http://127.0.0.1:9", "nosuch"}, `no such rule "nosuch" (have host-up, www-http, default)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runMain(t, append([]string{"rules", "test", "--config", dir}, c.args...)...)
			if code != 1 || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, c.want)
			}
		})
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "data", "*")); len(m) != 0 {
		t.Errorf("a refused replay left %v behind", m)
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time // zero: refused
	}{
		{"now", now}, // the moment of the call
		{"2026-11-21T10:00:00Z", now.Add(-2 * time.Hour)},      // RFC 3339
		{"2026-11-21T11:00:00+01:00", now.Add(-2 * time.Hour)}, // with an offset
		{"-2h", now.Add(-2 * time.Hour)},                       // before now, Go style
		{"90m-ago", now.Add(-90 * time.Minute)},                // before now, OpenTSDB style
		{"1d-ago", now.Add(-24 * time.Hour)},                   // days
		{"2h", time.Time{}},                                    // ambiguous: after or before?
		{"-2h-ago", time.Time{}},                               // both signs
		{"yesterday", time.Time{}},                             // not a time
		{"2026-11-21", time.Time{}},                            // a date without a time
	}
	for _, c := range cases {
		got, err := parseTime(c.in, now)
		if c.want.IsZero() {
			if err == nil {
				t.Errorf("parseTime(%q) = %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// TestLogRuleWarnings: what the daemon logs for the warnings of the rules
// it loads: one line at warn level each, with the position.
func TestLogRuleWarnings(t *testing.T) {
	dir := configDir(t, map[string]string{"rules.d/typos.yaml": "rules:\n  - name: load-high\n    select: {chek: load}\n"})
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := loadRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	logRuleWarnings(slog.New(slog.NewTextHandler(&buf, nil)), set)
	want := `level=WARN msg="rule file warning: the rule loads, but likely not as meant" warning="` +
		filepath.Join(dir, "rules.d", "typos.yaml") + `:3:14: rule \"load-high\": select: unknown key \"chek\" (did you mean \"check\"?)`
	if got := buf.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, want) {
		t.Errorf("logged:\n%s\nwant one line containing\n%s", got, want)
	}
}
