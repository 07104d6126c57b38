package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
)

// docCommand is a command line of the README or docs/ that a user would
// type: the lines of shell blocks, and of indented blocks, that start with
// one of the commands below.
var docCommand = regexp.MustCompile(`^(dmonitor |go run |go build |curl |printf |kill |mkdir |touch |make|docker |systemctl |/tmp/|apt-get |head |for |cp |cat |TOKEN=|ID=)`)

// docCommands returns every command line of file, each with its line
// number, in order.
func docCommands(t *testing.T, file string) map[string]int {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make(map[string]int)
	sc := bufio.NewScanner(f)
	fenced, shell, n := false, false, 0
	for sc.Scan() {
		n++
		l := sc.Text()
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
			lang := strings.TrimSpace(strings.TrimPrefix(l, "```"))
			shell = fenced && (lang == "" || lang == "sh" || lang == "shell")
			continue
		}
		var cmd string
		switch {
		case fenced && shell:
			cmd = strings.TrimSpace(l)
		case !fenced && strings.HasPrefix(l, "    ") && !strings.HasPrefix(l, "     "):
			cmd = l[4:]
		}
		if docCommand.MatchString(cmd) {
			out[cmd] = n
		}
	}
	return out
}

// ranElsewhere are the documented commands run by another test, or that
// cannot run here, each with where or why. Every other command line of the
// docs is run by TestDocCommands itself.
var ranElsewhere = map[string]string{
	"make test": "CI runs it",
	"make deb":  "deploy/debian TestDeb builds the package with build-deb, the script make deb runs",
	"make deb                                   # bin/dmonitor_<version>_<arch>.deb": "deploy/debian TestDeb, as above",
	"make build                 # bin/dmonitor: a static binary (CGO_ENABLED=0)":     "the deploy tests build the image's binary",
	"docker compose up --build": "no Docker engine here: deploy/compose_test.go validates the stack with docker-compose config",
	"docker pull --platform linux/amd64 petergrace/opentsdb-docker:latest":                          "no Docker engine here: deploy/compose_test.go checks that compose refuses to start without OPENTSDB_IMAGE, and validates it with one",
	"apt-get install monitoring-plugins-basic   # optional: Debian's Nagios plugins, found by name": "scripts/test-deps installs it",
	// The Quick start's edits: rules/docs_test.go TestReadmeQuickStart.
	"mkdir -p examples/standalone/hosts.d/127.0.0.1":    "rules TestReadmeQuickStart",
	"touch examples/standalone/hosts.d/127.0.0.1/ssh":   "rules TestReadmeQuickStart",
	"touch examples/standalone/alert.d/you@example.org": "rules TestReadmeQuickStart",
	// The three peers on one machine: the peer-mode tests run the same
	// setup (peer_test.go), and its failover (TestPeerDeciderKilled).
	"mkdir -p /tmp/trio": "peer_test.go",
	"head -c 32 /dev/urandom | base64 > /tmp/trio/token && chmod 600 /tmp/trio/token": "peer_test.go",
	"for port in 2929 2930 2931; do": "peer_test.go",
	"mkdir -p $d":                    "peer_test.go",
	"cp -r examples/standalone/dmonitor.yaml examples/standalone/hosts.d examples/standalone/plugins $d/": "peer_test.go",
	`printf '127.0.0.1:2929\n127.0.0.1:2930\n127.0.0.1:2931\n' > $d/nodes.txt`:                            "peer_test.go",
	"cat >> $d/dmonitor.yaml <<EOF":                 "peer_test.go",
	"go build -o /tmp/trio/dmonitor ./cmd/dmonitor": "peer_test.go",
	"for port in 2929 2930 2931; do /tmp/trio/dmonitor run --config /tmp/trio/$port 2> /tmp/trio/$port.log & done": "peer_test.go",
	"curl -s http://127.0.0.1:2931/status":                                    "peer_test.go (clusterStatus)",
	"/tmp/trio/dmonitor run --config /tmp/trio/2929 2>> /tmp/trio/2929.log &": "TestPeerDeciderKilled",
	// The operators' commands: cli_test.go runs each with these hosts,
	// checks and flags against a daemon of its own.
	"dmonitor status": "TestCLIAgainstDaemon",
	`dmonitor silence add host=www1 check=http --duration 2h --comment "kernel upgrade"`: "TestCLIAgainstDaemon",
	"dmonitor silence list            # active and pending; --all adds the expired ones": "TestCLIAgainstDaemon",
	"dmonitor silence expire <id>":                                                                                               "TestCLIAgainstDaemon",
	`dmonitor ack www1 http --comment "on it"`:                                                                                   "TestCLIAgainstDaemon",
	"dmonitor acks                    # who is on which open incident":                                                           "TestCLIAgainstDaemon",
	"dmonitor status --url https://mon1.example.org:2929 --config /etc/dmonitor":                                                 "TestCLIOverTLS",
	"dmonitor silence add host=www1 --url https://mon1.example.org:2929 --token-file /etc/dmonitor/token --config /etc/dmonitor": "TestCLIOverTLS",
	// The API by curl: TestSilenceAndAcknowledge makes the same calls.
	"TOKEN=$(cat /etc/dmonitor/token)":                                                              "TestSilenceAndAcknowledge",
	`curl -s -H "Authorization: Bearer $TOKEN" -d '{`:                                               "TestSilenceAndAcknowledge",
	"curl -s http://127.0.0.1:2929/api/v1/silences":                                                 "TestSilenceAndAcknowledge",
	`curl -s -X DELETE -H "Authorization: Bearer $TOKEN" http://127.0.0.1:2929/api/v1/silence/<id>`: "TestSilenceAndAcknowledge",
	`curl -s -H "Authorization: Bearer $TOKEN" -d '{"rule": "www-http", "host": "www1",`:            "TestSilenceAndAcknowledge",
	// /etc/dmonitor is the installed tree: the same commands on the
	// example's are run below.
	"dmonitor check --config /etc/dmonitor www1 http": "the Quick start's dmonitor check, below",
	"dmonitor rules check --config /etc/dmonitor":     "TestRulesCheck* (rules_test.go)",
}

// TestDocCommands runs the Quick start as a user would, on a copy of
// examples/standalone, from a shell: the daemon, curl against its control
// port and its OpenTSDB API, the line protocol through nc, and one check
// run by hand. Every other command line of the README and docs/ must be
// in ranElsewhere, so a new example cannot go untested.
func TestDocCommands(t *testing.T) {
	requirePlugins(t)
	for _, tool := range []string{"curl", "nc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (%v): run `make test`, which installs it", tool, err)
		}
	}
	docs := map[string]int{}
	files, _ := filepath.Glob("../../docs/*.md")
	for _, f := range append([]string{"../../README.md"}, files...) {
		for cmd, line := range docCommands(t, f) {
			docs[cmd] = line
		}
	}

	// A tree laid out as the clone the README speaks of, and `dmonitor`
	// and `go run ./cmd/dmonitor` meaning this build.
	work := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../../examples", work).CombinedOutput(); err != nil {
		t.Fatalf("copy examples: %v: %s", err, out)
	}
	os.RemoveAll(filepath.Join(work, "examples", "standalone", "data"))
	bin := filepath.Join(work, "bin")
	writeTree(t, bin, map[string]string{"dmonitor": "#!/bin/sh\n" + mainEnv + "=1 exec " + os.Args[0] + " \"$@\"\n"})
	if err := os.Chmod(filepath.Join(bin, "dmonitor"), 0o755); err != nil {
		t.Fatal(err)
	}
	sh := func(cmd string) (string, error) {
		c := exec.Command("sh", "-c", strings.ReplaceAll(cmd, "go run ./cmd/dmonitor", "dmonitor"))
		c.Dir = work
		c.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		out, err := c.CombinedOutput()
		return string(out), err
	}
	ran := map[string]bool{}
	run := func(cmd string, ok func(out string, err error) bool) {
		t.Helper()
		if _, documented := docs[cmd]; !documented {
			t.Errorf("%q is no longer in the docs: update this test", cmd)
			return
		}
		ran[cmd] = true
		if out, err := sh(cmd); !ok(out, err) {
			t.Errorf("README line %d: %s\nexit: %v\n%s", docs[cmd], cmd, err, out)
		}
	}

	// The daemon, as the README starts it, on the ports it names.
	start := "go run ./cmd/dmonitor run --config examples/standalone"
	ran[start] = true
	d := launch(t, &daemon{control: "127.0.0.1:2929", base: "http://127.0.0.1:2929", client: http.DefaultClient}, filepath.Join(work, "examples", "standalone"), nil)
	await.Until(t, "the example's checks run", func() bool { return d.metric(t, "dmonitor_checks_total") >= 3 })

	run("curl -s http://127.0.0.1:2929/status      # every check, its state and each observer's last result", func(out string, err error) bool {
		var st struct{ Instances []instanceStatus }
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && len(st.Instances) > 0
	})
	run("curl -s http://127.0.0.1:2929/metrics     # Prometheus metrics of the daemon", func(out string, err error) bool {
		return err == nil && strings.Contains(out, "dmonitor_checks_total")
	})
	// A check's exit code is its status: any of 0–3 is a run.
	checkRan := func(out string, err error) bool {
		var ee *exec.ExitError
		return (err == nil || errors.As(err, &ee) && ee.ExitCode() <= 3) && strings.Contains(out, "localhost")
	}
	run("go run ./cmd/dmonitor check --config examples/standalone localhost disk_free", checkRan)
	run("go run ./cmd/dmonitor check --config examples/standalone localhost load --json", func(out string, err error) bool {
		var r struct{ Host, Check string }
		return checkRan(out, err) && json.Unmarshal([]byte(out), &r) == nil && r.Check == "load"
	})
	run(`printf 'put demo.temp %s 21.5 room=lab\nversion\nexit\n' "$(date +%s)" | nc 127.0.0.1 4242`, func(out string, err error) bool {
		return err == nil && strings.Contains(out, "OpenTSDB API")
	})
	run(`curl -sg 'http://127.0.0.1:4242/api/query?start=1h-ago&m=max:demo.temp{room=*}'`, func(out string, err error) bool {
		return err == nil && strings.Contains(out, `"metric":"demo.temp"`) && strings.Contains(out, `"room":"lab"`)
	})
	d.stop(t)

	for cmd, line := range docs {
		if !ran[cmd] && ranElsewhere[cmd] == "" {
			t.Errorf("line %d of the docs, %q, is run by no test: run it in TestDocCommands, or say in ranElsewhere which test does", line, cmd)
		}
	}
	for cmd := range ranElsewhere {
		if _, ok := docs[cmd]; !ok {
			t.Errorf("ranElsewhere names %q, which the docs no longer show", cmd)
		}
	}
}
