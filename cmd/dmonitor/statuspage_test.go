package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// updateScreenshot makes TestStatusPageInBrowser write its screenshot to
// docs/status.png, the README's picture:
//
//	go test ./cmd/dmonitor -run TestStatusPageInBrowser -update-screenshot
var updateScreenshot = flag.Bool("update-screenshot", false, "write the status page's screenshot to docs/status.png")

// chromium runs Debian's headless Chromium on url with args (--dump-dom,
// --screenshot=…) and returns its standard output.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (make test installs it): the status page is not tested in a browser")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A profile of its own, so nothing of the machine's user is read or
	// written; no network beyond the page on loopback.
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--no-first-run", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// textOf returns what a person reads of an HTML fragment: its text, tags
// dropped, entities decoded, white space collapsed.
func textOf(s string) string {
	s = regexp.MustCompile(`(?s)<title>.*?</title>|<[^>]*>`).ReplaceAllString(s, " ")
	return strings.Join(strings.Fields(html.UnescapeString(s)), " ")
}

// domRow returns the table row of dom that holds every one of want in its
// text.
func domRow(t *testing.T, dom string, want ...string) string {
	t.Helper()
next:
	for _, m := range regexp.MustCompile(`(?s)<tr[ >].*?</tr>`).FindAllString(dom, -1) {
		txt := textOf(m)
		for _, w := range want {
			if !strings.Contains(txt, w) {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no table row reads %q in:\n%s", want, textOf(dom))
	return ""
}

// marks counts what an SVG graph draws: its rects, circles and the points
// of its polylines.
func marks(s string) (rects, circles, points int) {
	rects = strings.Count(s, "<rect ") - strings.Count(s, `<rect class="bg"`)
	circles = strings.Count(s, "<circle ")
	for _, m := range regexp.MustCompile(`<polyline[^>]* points="([^"]*)"`).FindAllStringSubmatch(s, -1) {
		points += len(strings.Fields(m[1]))
	}
	return rects, circles, points
}

// postForm posts a status page form as a browser does and returns the
// status and where it redirects.
func postForm(t *testing.T, base, path string, form url.Values) (int, string) {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(base+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Location")
}

// pageStatus is the part of /status this test waits on.
type pageStatus struct {
	Instances []struct {
		Rule, Host, Check, State, Reason string
	}
	Observers []struct {
		Name   string
		Silent bool
	}
}

// TestStatusPageInBrowser runs a two-node peer cluster through a real
// incident and reads the status page in headless Chromium: the gateway is
// down and holds back the application behind it; the web check is
// silenced and the gateway acknowledged through the page's forms; the
// second node is stopped, so its results go stale, its heartbeat silent,
// and the database check, which needs both observers, unknown. What a
// person sees is asserted: each alert's state and why, the grid's cells,
// the observers, an SVG graph with points, and the check's page with its
// graph, incident timeline and perfdata.
func TestStatusPageInBrowser(t *testing.T) {
	requirePlugins(t)
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium is not installed (make test installs it): the status page is not tested in a browser")
	}
	mail := smtptest.Start(t, "127.0.0.1:0")
	svc := map[string]*tcpService{}
	for _, c := range []string{"gw", "app", "web", "db"} {
		svc[c] = startService(t, "127.0.0.1:0")
	}
	const token = "page-token"
	// The node whose address sorts first decides: make it a.
	ctl := []string{loopback.FreeAddr(t), loopback.FreeAddr(t)}
	if ctl[1] < ctl[0] {
		ctl[0], ctl[1] = ctl[1], ctl[0]
	}
	dirs := []string{t.TempDir(), t.TempDir()}
	for i, dir := range dirs {
		writeTree(t, dir, map[string]string{
			"dmonitor.yaml": fmt.Sprintf(`observer: %q
interval: 1s
quorum: 1
control: {listen: %q, token_file: token}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
checks:
  gw:
    command: [check_tcp, -H, "{{host}}", -p, %q]
  app:
    command: [check_tcp, -H, "{{host}}", -p, %q]
  web:
    command: [check_tcp, -H, "{{host}}", -p, %q]
  db:
    command: [check_tcp, -H, "{{host}}", -p, %q]
    quorum: 2
`, ctl[i], ctl[i], mail.Addr, svc["gw"].port(), svc["app"].port(), svc["web"].port(), svc["db"].port()),
			"rules.d/deps.yaml": `rules:
  - name: gw-up
    select: {check: gw}
  - name: app-up
    select: {check: app}
    depends_on: [gw-up]
`,
			"nodes.txt":                  ctl[0] + "\n" + ctl[1] + "\n",
			"token":                      token + "\n",
			"hosts.d/127.0.0.1/gw":       "",
			"hosts.d/127.0.0.1/app":      "",
			"hosts.d/127.0.0.1/web":      "",
			"hosts.d/127.0.0.1/db":       "",
			"alert.d/oncall@example.org": "",
		})
	}
	a := startDaemon(t, dirs[0], ctl[0])
	b := startDaemon(t, dirs[1], ctl[1])
	status := func() pageStatus {
		var st pageStatus
		resp, err := http.Get(a.base + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	// is says whether rule's instance on check (of host, when given)
	// is in state.
	is := func(rule, check, state string, host ...string) func() bool {
		return func() bool {
			for _, in := range status().Instances {
				if in.Rule == rule && in.Check == check && (len(host) == 0 || in.Host == host[0]) {
					return in.State == state
				}
			}
			return false
		}
	}
	await.Until(t, "every check ok on the first node, as its decider", func() bool {
		ok := 0
		for _, in := range status().Instances {
			switch in.Check {
			case "gw", "app", "web", "db":
				if in.State != "ok" {
					return false
				}
				ok++
			}
		}
		return ok == 4
	})

	// A silence through the page's form: refused without the token.
	silence := url.Values{"host": {"127.0.0.1"}, "check": {"web"}, "duration": {"1h"}, "author": {"alice"},
		"comment": {"web server swap"}, "return": {"/silences"}}
	if code, _ := postForm(t, a.base, "/silences", silence); code != http.StatusUnauthorized {
		t.Fatalf("silence without the token = %d, want 401", code)
	}
	silence.Set("token", token)
	if code, loc := postForm(t, a.base, "/silences", silence); code != http.StatusSeeOther || loc != "/silences?done=silenced" {
		t.Fatalf("silence with the token = %d to %q, want 303 back to /silences", code, loc)
	}

	// The outage: the gateway, the application behind it and the web
	// server go down.
	for _, c := range []string{"gw", "app", "web"} {
		svc[c].l.Close()
	}
	await.Until(t, "gw-up firing, app-up held back, web silenced", func() bool {
		return is("gw-up", "gw", "firing")() && is("app-up", "app", "suppressed")() && is("default", "web", "silenced")()
	})
	// The second node stops: its results go stale and db, which needs
	// two observers, turns unknown.
	b.stop(t)
	await.Until(t, "the second node silent and db unknown", func() bool {
		st := status()
		silent := false
		for _, o := range st.Observers {
			silent = silent || o.Name == ctl[1] && o.Silent
		}
		return silent && is("default", "db", "unknown")() && is("observer-up", "heartbeat", "firing", ctl[1])()
	})
	ack := url.Values{"rule": {"gw-up"}, "host": {"127.0.0.1"}, "check": {"gw"}, "by": {"bob"}, "comment": {"on my way"},
		"token": {token}, "return": {"/check/127.0.0.1/gw"}}
	if code, loc := postForm(t, a.base, "/ack", ack); code != http.StatusSeeOther || loc != "/check/127.0.0.1/gw?done=acked" {
		t.Fatalf("acknowledge = %d to %q, want 303 back to the check's page", code, loc)
	}
	await.Until(t, "gw-up acknowledged", is("gw-up", "gw", "acknowledged"))
	// The history is written in batches: wait until the page's graph of
	// gw has the alert's transitions.
	await.Until(t, "gw-up's transitions in the TSDB", func() bool {
		resp, err := http.Get(a.base + "/check/127.0.0.1/gw?range=5m")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "gw-up acknowledged at")
	})

	// The overview, as Chromium renders it.
	dom := chromium(t, "--dump-dom", a.base+"/?range=1m")
	for _, want := range []string{"mode peer", "leader " + ctl[0], "epoch"} {
		if !strings.Contains(textOf(dom), want) {
			t.Errorf("the page does not read %q", want)
		}
	}
	for _, c := range []struct{ state, rule, check, why string }{
		{"acknowledged", "gw-up", "gw", "acknowledged by bob at"},
		{"suppressed", "app-up", "app", `held back: parent "gw-up" is acknowledged on 127.0.0.1 (gw)`},
		{"silenced", "default", "web", `(host="127.0.0.1", check="web") by alice until`},
		{"unknown", "default", "db", "unknown: 1 fresh observers, quorum is 2"},
		{"firing", "observer-up", "heartbeat", "is silent: last heartbeat"},
	} {
		row := textOf(domRow(t, dom, c.state+" "+c.rule))
		if !strings.Contains(row, c.why) || !strings.Contains(row, c.check) {
			t.Errorf("alert %s reads %q; want %s and why: %q", c.rule, row, c.check, c.why)
		}
	}
	if row := textOf(domRow(t, dom, ctl[1], "silent", "follower")); !strings.Contains(row, "ago") {
		t.Errorf("the stopped node's row reads %q, want its last heartbeat", row)
	}
	// The grid: gw is CRITICAL on the first node, and stale on the
	// second; its graph draws status strips, the run time and the marks of
	// its alert.
	gw := domRow(t, dom, "gw", "gw-up: acknowledged")
	if txt := textOf(gw); !strings.Contains(txt, "CRITICAL") || !strings.Contains(txt, "stale") || !strings.Contains(txt, "Connection refused") {
		t.Errorf("gw's row reads %q; want CRITICAL, Connection refused, and a stale result", txt)
	}
	if rects, circles, points := marks(gw); rects == 0 || circles == 0 || points == 0 || !strings.Contains(gw, `<rect class="s2"`) {
		t.Errorf("gw's graph draws %d rects, %d circles, %d line points, want each, and a CRITICAL strip:\n%s", rects, circles, points, gw)
	}

	// The check's page: its longer graph, incident timeline and results.
	dom = chromium(t, "--dump-dom", a.base+"/check/127.0.0.1/gw?range=5m")
	if rects, circles, points := marks(dom); rects == 0 || circles == 0 || points == 0 {
		t.Errorf("gw's page graph draws %d rects, %d circles, %d line points", rects, circles, points)
	}
	for _, state := range []string{"firing", "acknowledged"} {
		domRow(t, dom, "gw-up "+state)
	}
	if txt := textOf(domRow(t, dom, ctl[0], "CRITICAL")); !strings.Contains(txt, "Connection refused") {
		t.Errorf("gw's result on the first node reads %q", txt)
	}
	// db is up: its result shows check_tcp's perfdata as it wrote it.
	dom = chromium(t, "--dump-dom", a.base+"/check/127.0.0.1/db")
	if txt := textOf(domRow(t, dom, ctl[0], "OK")); !regexp.MustCompile(`time=[0-9.]+s;;;0;10`).MatchString(txt) {
		t.Errorf("db's result reads %q, want check_tcp's perfdata as written", txt)
	}

	// The picture of the README.
	shot := filepath.Join(t.TempDir(), "status.png")
	if *updateScreenshot {
		shot, _ = filepath.Abs(filepath.Join("..", "..", "docs", "status.png"))
	}
	chromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", a.base+"/?range=1m")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() != 1280 {
		t.Fatalf("screenshot: %v, %v", err, img.Bounds())
	}
}
