package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/httpserve/tlstest"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/silence"
)

// hasRow reports whether out has a line whose white-space separated
// fields begin with fields: a row of one of the CLI's tables.
func hasRow(out string, fields ...string) bool {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

// cli runs the dmonitor command line and fails the test unless it exits
// with want; it returns stdout and stderr.
func cli(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := runMain(t, args...)
	if code != want {
		t.Fatalf("dmonitor %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$`)

// TestCLIAgainstDaemon runs every operator command against a running node:
// with its configuration (which names the control port and the token),
// without the token (refused with the API's message, exit 1), and once the
// node is gone (exit 2, naming the URL). The commands are the README's
// examples.
func TestCLIAgainstDaemon(t *testing.T) {
	requirePlugins(t)
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	const token = "s3cret-token"
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: cli
interval: 1s
control: {listen: %q, token_file: token}
tsdb: {listen: ""}
checks:
  disk:
    command: [check_dummy, "0", "all fine"]
  http:
    command: [check_dummy, "2", "connection refused"]
`, control),
		"token":             token + "\n",
		"wrong-token":       "not-it\n",
		"hosts.d/www1/disk": "",
		"hosts.d/www1/http": "",
		"hosts.d/db1/disk":  "",
	})
	// The same node as seen by someone without the token file: a
	// configuration that names the port and no token.
	noToken := t.TempDir()
	writeTree(t, noToken, map[string]string{
		"dmonitor.yaml": fmt.Sprintf("observer: other\ncontrol: {listen: %q}\ntsdb: {listen: \"\"}\n", control),
	})
	d := startDaemon(t, dir, control)
	await.Until(t, "www1's http check to fire", func() bool {
		return d.state(t, "www1", "http") == "firing" && d.state(t, "www1", "disk") == "ok" && d.state(t, "db1", "disk") == "ok"
	})
	withCfg := []string{"--config", dir}
	withoutToken := []string{"--config", noToken}
	wrongToken := []string{"--url", "http://" + control, "--token-file", filepath.Join(dir, "wrong-token")}
	args := func(base []string, more ...string) []string { return append(slices.Clone(more), base...) }

	// status: the grid, the alert, exit 3 while it fires. It needs no
	// token.
	for _, how := range [][]string{withCfg, withoutToken} {
		out, _ := cli(t, exitAlerts, args(how, "status")...)
		for _, row := range [][]string{
			{"HOST", "CHECK", "ALERT", "cli"},
			{"db1", "disk", "ok", "OK"},
			{"www1", "http", "firing", "CRITICAL"},
			{"www1", "disk", "ok", "OK"},
			{"STATE", "RULE", "HOST", "CHECK", "SINCE", "REASON"},
			{"firing", "default", "www1", "http"},
		} {
			if !hasRow(out, row...) {
				t.Errorf("status lacks the row %q:\n%s", row, out)
			}
		}
		if !strings.HasPrefix(out, "node cli · leader, epoch 1 · mode local\n") {
			t.Errorf("status does not begin with the node and its leadership:\n%s", out)
		}
	}
	out, _ := cli(t, exitAlerts, args(withCfg, "status", "--json")...)
	var st nodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Observer != "cli" || len(st.Instances) != 3 {
		t.Errorf("status --json: %v, %+v; want /status with 3 instances", err, st)
	}

	// silence add: refused without the token and with a wrong one, with
	// the API's message; with it, prints the id and mutes the alert.
	_, stderr := cli(t, exitRefused, args(withoutToken, "silence", "add", "host=www1")...)
	if want := "dmonitor: missing or wrong bearer token (401 Unauthorized from POST http://" + control + "/api/v1/silences)\n" +
		"no token was sent: give --token-file, or --config with control.token_file\n"; stderr != want {
		t.Errorf("silence add without a token said\n%s\nwant\n%s", stderr, want)
	}
	_, stderr = cli(t, exitRefused, args(wrongToken, "silence", "add", "host=www1")...)
	if !strings.Contains(stderr, "missing or wrong bearer token (401") || strings.Contains(stderr, "no token was sent") {
		t.Errorf("silence add with a wrong token said %q", stderr)
	}
	// The API's own refusals come back as they are.
	_, stderr = cli(t, exitRefused, args(withCfg, "silence", "add", `host=~".*"`)...)
	if !strings.Contains(stderr, `matchers {host=~".*"} accept an empty value`) || !strings.Contains(stderr, "400 Bad Request") {
		t.Errorf("a match-all silence: %q, want the API's refusal", stderr)
	}
	out, _ = cli(t, 0, args(withCfg, "silence", "add", "host=www1", "check=http", "--duration", "2h", "--comment", "kernel upgrade", "--author", "ann")...)
	if !uuidRE.MatchString(out) {
		t.Fatalf("silence add printed %q, want the new silence's id alone", out)
	}
	id := strings.TrimSpace(out)
	await.Until(t, "the alert to read silenced", func() bool { return d.state(t, "www1", "http") == "silenced" })
	out, _ = cli(t, 0, args(withCfg, "status")...) // silenced: nothing calls for someone
	if !hasRow(out, "silenced", "default", "www1", "http") {
		t.Errorf("status while silenced:\n%s", out)
	}

	// silence list: the silence, readable without the token.
	for _, how := range [][]string{withCfg, withoutToken} {
		out, _ = cli(t, 0, args(how, "silence", "list")...)
		if !hasRow(out, id, "active", `host="www1"`, `check="http"`) || !strings.Contains(out, "ann") || !strings.Contains(out, "kernel upgrade") {
			t.Errorf("silence list:\n%s\nwant %s, active, its matchers, author and comment", out, id)
		}
	}
	out, _ = cli(t, 0, args(withCfg, "silence", "list", "--json")...)
	var listed []listedSilence
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 1 || listed[0].ID != id || listed[0].CreatedBy != "ann" ||
		!slices.Equal(listed[0].Matchers, []silence.Matcher{{Name: "host", Value: "www1", IsEqual: true}, {Name: "check", Value: "http", IsEqual: true}}) {
		t.Errorf("silence list --json = %s (%v); want the one silence", out, err)
	}

	// silence expire: refused without the token; an unknown id is the
	// API's 404; with the token the silence ends and the alert fires.
	_, stderr = cli(t, exitRefused, args(withoutToken, "silence", "expire", id)...)
	if !strings.Contains(stderr, "missing or wrong bearer token (401 Unauthorized from DELETE http://"+control+"/api/v1/silence/"+id+")") {
		t.Errorf("silence expire without a token said %q", stderr)
	}
	out, stderr = cli(t, exitRefused, args(withCfg, "silence", "expire", "no-such", id)...)
	if !strings.Contains(stderr, "expire silence no-such: silence not found (404 Not Found") || out != "silence "+id+" expired\n" {
		t.Errorf("silence expire no-such %s: stdout %q, stderr %q; want the 404 for one and the other expired", id, out, stderr)
	}
	out, _ = cli(t, 0, args(withCfg, "silence", "list")...)
	if out != "no silences\n" {
		t.Errorf("silence list after expiry:\n%s", out)
	}
	out, _ = cli(t, 0, args(withCfg, "silence", "list", "--all")...)
	if !hasRow(out, id, "expired") {
		t.Errorf("silence list --all after expiry:\n%s", out)
	}
	await.Until(t, "the alert to fire again", func() bool { return d.state(t, "www1", "http") == "firing" })

	// ack: refused without the token, and for an alert that is not
	// firing; then acknowledged, and listed by acks.
	out, _ = cli(t, 0, args(withoutToken, "acks")...)
	if out != "no acknowledgements\n" {
		t.Errorf("acks before any: %q", out)
	}
	_, stderr = cli(t, exitRefused, args(withoutToken, "ack", "www1", "http")...)
	if !strings.Contains(stderr, "missing or wrong bearer token (401 Unauthorized from POST http://"+control+"/api/v1/acks)") {
		t.Errorf("ack without a token said %q", stderr)
	}
	_, stderr = cli(t, exitRefused, args(withCfg, "ack", "www1", "disk")...)
	if !strings.Contains(stderr, "acknowledge default on www1 (disk): it is ok: rule instance is not firing (409 Conflict") {
		t.Errorf("ack of an ok alert said %q", stderr)
	}
	_, stderr = cli(t, exitRefused, args(withCfg, "ack", "web9", "http")...)
	if !strings.Contains(stderr, "no rule instance on web9 (http)") {
		t.Errorf("ack of an unknown host said %q", stderr)
	}
	out, _ = cli(t, 0, args(withCfg, "ack", "www1", "http", "--comment", "on it", "--author", "ann")...)
	if out != "acknowledged default on www1 (http) as ann\n" {
		t.Errorf("ack printed %q", out)
	}
	out, _ = cli(t, 0, args(withoutToken, "acks")...)
	if !hasRow(out, "default", "www1", "http") || !strings.Contains(out, " ann ") || !strings.Contains(out, "on it") {
		t.Errorf("acks:\n%s\nwant www1's http acknowledged by ann", out)
	}
	out, _ = cli(t, 0, args(withCfg, "acks", "--json")...)
	var acks []struct{ Rule, Host, Check, By, Comment string }
	if err := json.Unmarshal([]byte(out), &acks); err != nil || len(acks) != 1 ||
		acks[0] != (struct{ Rule, Host, Check, By, Comment string }{"default", "www1", "http", "ann", "on it"}) {
		t.Errorf("acks --json = %s (%v)", out, err)
	}
	await.Until(t, "the alert to read acknowledged", func() bool { return d.state(t, "www1", "http") == "acknowledged" })
	out, _ = cli(t, 0, args(withCfg, "status")...) // someone is on it: exit 0
	if !hasRow(out, "www1", "http", "acknowledged", "CRITICAL") || !hasRow(out, "acknowledged", "default", "www1", "http") {
		t.Errorf("status once acknowledged:\n%s", out)
	}

	// The node gone: every command says it cannot reach it, and where.
	d.stop(t)
	for _, cmd := range [][]string{
		{"status"}, {"silence", "add", "host=www1"}, {"silence", "list"}, {"silence", "expire", id},
		{"ack", "www1", "http"}, {"ack", "www1", "http", "--rule", "default"}, {"acks"},
	} {
		_, stderr := cli(t, exitUnreachable, args(withCfg, cmd...)...)
		if !strings.HasPrefix(stderr, "dmonitor: cannot reach dmonitor at http://"+control+": ") || !strings.Contains(stderr, "connection refused") {
			t.Errorf("%s against a stopped node said %q", cmd, stderr)
		}
	}
}

// TestCLIOverTLS: with control.tls_cert_file set, the CLI finds the node at
// https:// and trusts control.tls_ca_file, with --url too; plain HTTP to
// that port is refused with Go's own answer.
func TestCLIOverTLS(t *testing.T) {
	requirePlugins(t)
	ca := tlstest.NewCA(t, "dmonitor test CA")
	control := loopback.FreeAddr(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf(`observer: tls
interval: 1s
control: {listen: %q, token_file: token, tls_cert_file: cert.pem, tls_key_file: key.pem, tls_ca_file: ca.pem}
tsdb: {listen: ""}
checks:
  up:
    command: [check_dummy, "0", "all fine"]
`, control),
		"token":           "tls-token\n",
		"hosts.d/www1/up": "",
	})
	ca.WriteCert(t, filepath.Join(dir, "ca.pem"))
	ca.Issue(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	d := startTLSDaemon(t, dir, control, ca.Pool())
	await.Until(t, "the check to be ok", func() bool { return d.state(t, "www1", "up") == "ok" })

	out, _ := cli(t, 0, "status", "--config", dir)
	if !hasRow(out, "www1", "up", "ok", "OK") {
		t.Errorf("status over TLS:\n%s", out)
	}
	// The README's examples from another host: --url, and the
	// configuration for the CA.
	out, _ = cli(t, 0, "status", "--url", "https://"+control, "--config", dir)
	if !hasRow(out, "www1", "up", "ok", "OK") {
		t.Errorf("status --url over TLS:\n%s", out)
	}
	out, _ = cli(t, 0, "silence", "add", "host=www1", "--url", "https://"+control, "--token-file", filepath.Join(dir, "token"), "--config", dir)
	if !uuidRE.MatchString(out) {
		t.Errorf("silence add over TLS printed %q", out)
	}
	_, stderr := cli(t, exitRefused, "status", "--url", "http://"+control, "--config", dir)
	if !strings.Contains(stderr, "Client sent an HTTP request to an HTTPS server. (400 Bad Request from GET http://"+control+"/status)") {
		t.Errorf("plain HTTP to the TLS port said %q", stderr)
	}
}

// TestCLIExitCodes: each kind of answer ends the command with its
// documented code and the API's message.
func TestCLIExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		code   int
		stderr string
	}{
		// The API refuses the request: the caller's to fix.
		{"bad request", 400, `{"error": "invalid silence: at least one matcher is required"}`, exitRefused, "dmonitor: invalid silence: at least one matcher is required (400 Bad Request from POST "},
		{"forbidden", 403, `{"error": "changes through the control API are disabled: set control.token_file in dmonitor.yaml to a file holding a bearer token"}`, exitRefused, "set control.token_file"},
		// The node cannot: another node, or later, may.
		{"not the leader", 503, `{"error": "this node does not evaluate alerts, so it cannot acknowledge them"}`, exitUnreachable, "cannot acknowledge them (503 Service Unavailable"},
		{"failing", 500, `{"error": "silence store: disk full"}`, exitUnreachable, "silence store: disk full (500"},
		// Something else on the port: its first line.
		{"not dmonitor", 404, "404 page not found\n", exitRefused, "dmonitor: 404 page not found (404 Not Found from POST "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			tok := filepath.Join(t.TempDir(), "token")
			writeTree(t, filepath.Dir(tok), map[string]string{"token": "t\n"})
			_, stderr := cli(t, tt.code, "silence", "add", "host=web1", "--url", srv.URL, "--token-file", tok)
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr, tt.stderr)
			}
		})
	}
}

func TestParseMatcher(t *testing.T) {
	tests := []struct {
		in   string
		want silence.Matcher
		err  string
	}{
		// The four operators, as amtool takes them.
		{in: "host=web1", want: silence.Matcher{Name: "host", Value: "web1", IsEqual: true}},
		{in: "host!=web1", want: silence.Matcher{Name: "host", Value: "web1"}},
		{in: "host=~web[0-9]+", want: silence.Matcher{Name: "host", Value: "web[0-9]+", IsRegex: true, IsEqual: true}},
		{in: "host!~web.*", want: silence.Matcher{Name: "host", Value: "web.*", IsRegex: true}},
		// Quoted, as silence.Matcher.String and silence list write them.
		{in: `check="disk free"`, want: silence.Matcher{Name: "check", Value: "disk free", IsEqual: true}},
		// An empty value is a value: the label is absent.
		{in: "severity=", want: silence.Matcher{Name: "severity", IsEqual: true}},
		// The value may hold the operators' characters.
		{in: "check=a=b!c", want: silence.Matcher{Name: "check", Value: "a=b!c", IsEqual: true}},
		{in: "web1", err: `matcher "web1": no operator`},
		{in: "=web1", err: "no label name"},
		{in: "host!web1", err: "unknown operator"},
		{in: `host="web1`, err: "does not end with its quote"},
	}
	for _, tt := range tests {
		got, err := parseMatcher(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseMatcher(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("parseMatcher(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		// What silence list prints reads back as the same matcher.
		if err == nil {
			if again, err := parseMatcher(got.String()); err != nil || again != got {
				t.Errorf("parseMatcher(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		}
	}
}

func TestControlURL(t *testing.T) {
	tests := []struct {
		c    config.Control
		want string
	}{
		{config.Control{Listen: "127.0.0.1:2929"}, "http://127.0.0.1:2929"},
		// Every address: this host reaches it on loopback.
		{config.Control{Listen: ":2929"}, "http://127.0.0.1:2929"},
		{config.Control{Listen: "0.0.0.0:2929"}, "http://127.0.0.1:2929"},
		{config.Control{Listen: "[::]:2929"}, "http://[::1]:2929"},
		// A named address is where the certificate says the node is.
		{config.Control{Listen: "mon1.example.org:2929", TLSCertFile: "cert.pem"}, "https://mon1.example.org:2929"},
		{config.Control{Listen: "[::1]:2930", TLSCertFile: "cert.pem"}, "https://[::1]:2930"},
	}
	for _, tt := range tests {
		if got, err := controlURL(tt.c); err != nil || got != tt.want {
			t.Errorf("controlURL(%+v) = %q, %v; want %q", tt.c, got, err, tt.want)
		}
	}
	if _, err := controlURL(config.Control{}); err == nil || !strings.Contains(err.Error(), `control.listen is "" (off)`) {
		t.Errorf("controlURL with the port off = %v", err)
	}
}

// TestCLIAcksInCluster: acknowledgements are the leader's. Through a
// follower, ack is refused with the API's 503 (exit 2: ask another node);
// through the leader it is taken, and acks through the follower lists it,
// read from the alert state the leader keeps in Redis.
func TestCLIAcksInCluster(t *testing.T) {
	c := newCluster(t, "")
	c.startAll()
	await.Until(t, "a leader", func() bool { name, _ := c.leader(); return name != "" })
	c.svc.l.Close()
	c.expectMail("FIRING", "127.0.0.1")
	leader, _ := c.leader()
	follower := "a"
	if leader == "a" {
		follower = "b"
	}

	_, stderr := cli(t, exitUnreachable, "ack", "127.0.0.1", "svc", "--config", c.dirs[follower])
	if !strings.Contains(stderr, "this node is not the leader (503 Service Unavailable from POST http://"+c.control[follower]+"/api/v1/acks)") {
		t.Errorf("ack through the follower said %q", stderr)
	}
	cli(t, 0, "ack", "127.0.0.1", "svc", "--comment", "on it", "--author", "ann", "--config", c.dirs[leader])
	for _, node := range []string{follower, leader} {
		out, _ := cli(t, 0, "acks", "--config", c.dirs[node])
		if !hasRow(out, "default", "127.0.0.1", "svc") || !strings.Contains(out, " ann ") {
			t.Errorf("acks through %s:\n%s\nwant the leader's acknowledgement", node, out)
		}
	}
}

func TestCLIHelp(t *testing.T) {
	for _, cmd := range [][]string{{"status"}, {"silence"}, {"silence", "add"}, {"silence", "list"}, {"silence", "expire"}, {"ack"}, {"acks"}} {
		out, _ := cli(t, 0, append(cmd, "--help")...)
		if !strings.Contains(out, "Usage:") || !strings.Contains(out, "Exit codes: 0 done; 1 refused") {
			t.Errorf("dmonitor %s --help lacks the usage or the exit codes:\n%s", strings.Join(cmd, " "), out)
		}
	}
}
