package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/loopback"
)

// The end-to-end tests run the real daemon as a child process: this test
// binary re-executed with mainEnv set runs main() instead of the tests, so
// the daemon is built with the same flags (-race included) and needs no
// separate go build.
const mainEnv = "DMONITOR_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

const pluginDir = "/usr/lib/nagios/plugins"

func requirePlugins(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pluginDir, "check_dummy")); err != nil {
		t.Fatalf("Debian monitoring-plugins missing (%v): run `make test`, which installs them", err)
	}
}

// writeTree writes files (path relative to dir → content) under dir; those
// under plugins/ executable, as plugins are.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "plugins/") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile keeps an existing file's mode
			t.Fatal(err)
		}
	}
}

// daemon is a `dmonitor run` child process.
type daemon struct {
	cmd     *exec.Cmd
	control string
	base    string       // the control API's URL: http:// or https:// and control
	client  *http.Client // that trusts its certificate, when it has one
	args    []string     // more arguments of dmonitor run
	done    chan struct{}
	mu      sync.Mutex
	log     bytes.Buffer
}

// startDaemon starts `dmonitor run` on dir, with env added to its
// environment (and its plugins'), and waits for its control API.
func startDaemon(t testing.TB, dir, control string, env ...string) *daemon {
	t.Helper()
	return launch(t, &daemon{control: control, base: "http://" + control, client: http.DefaultClient}, dir, env)
}

// startTLSDaemon is startDaemon for a control port that serves HTTPS with
// a certificate roots trust.
func startTLSDaemon(t testing.TB, dir, control string, roots *x509.CertPool, env ...string) *daemon {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(client.CloseIdleConnections)
	return launch(t, &daemon{control: control, base: "https://" + control, client: client}, dir, env)
}

func launch(t testing.TB, d *daemon, dir string, env []string) *daemon {
	t.Helper()
	d.done = make(chan struct{})
	// The tests run as root in CI: the daemons keep it (--user root), or
	// they would switch to an account that cannot read t.TempDir(). The
	// switching itself is privdrop_test.go's; a --user in d.args wins.
	d.cmd = exec.Command(os.Args[0], append([]string{"run", "--config", dir, "--log-level", "debug", "--user", "root"}, d.args...)...)
	d.cmd.Env = append(append(os.Environ(), mainEnv+"=1"), env...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(d.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.log.Write(sc.Bytes())
			d.log.WriteByte('\n')
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			_ = d.wait()
		}
		if t.Failed() {
			// CI shows only the head and tail of a long output: the
			// debug lines (go-redis retrying, gocron) would crowd out
			// the decisions.
			var kept []string
			skipped := 0
			for _, line := range strings.Split(d.logText(), "\n") {
				if strings.Contains(line, " level=DEBUG ") {
					skipped++
					continue
				}
				kept = append(kept, line)
			}
			t.Logf("log of the daemon at %s (%d debug lines left out):\n%s", d.base, skipped, strings.Join(kept, "\n"))
		}
	})
	await.Until(t, "the control API", func() bool {
		select {
		case <-d.done:
			t.Fatalf("dmonitor run exited at start:\n%s", d.logText())
		default:
		}
		resp, err := d.client.Get(d.base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return d
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

func (d *daemon) wait() error {
	<-d.done // the log is read to its end before Wait closes the pipe
	return d.cmd.Wait()
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(); err != nil {
		t.Fatalf("dmonitor run after SIGTERM: %v", err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill(t testing.TB) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = d.wait()
}

// waitSent waits until the daemon has recorded every notification of ids
// as delivered (its queue's journal says so), so that killing it then
// cannot make it deliver one again.
func (d *daemon) waitSent(t testing.TB, ids map[string]int) {
	t.Helper()
	await.Until(t, "the notifications recorded as delivered", func() bool {
		for id := range ids {
			if !d.recordedSent(id) {
				return false
			}
		}
		return true
	})
}

// recordedSent reports whether d's log says it delivered the notification
// id by mail and recorded it so, whatever other fields the line carries (a
// redis-mode leader's has the term's epoch).
func (d *daemon) recordedSent(id string) bool {
	for line := range strings.Lines(d.logText()) {
		if strings.Contains(line, `msg="notification sent"`) && strings.Contains(line, " receiver=default/email ") &&
			strings.Contains(line, " id="+id+" ") {
			return true
		}
	}
	return false
}

// metric returns the value of a metric from /metrics, summed over its
// labels.
func (d *daemon) metric(t testing.TB, name string) float64 {
	t.Helper()
	return scrapeMetric(t, d.client, d.base+"/metrics", name)
}

// scrapeMetric returns the value of metric name at the Prometheus endpoint
// url, summed over its labels.
func scrapeMetric(t testing.TB, c *http.Client, url, name string) float64 {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), name)
		if !ok || line == "" || line[0] != ' ' && line[0] != '{' {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += f
	}
	return sum
}

type instanceStatus struct{ Rule, Host, Check, State string }

func (d *daemon) instances(t testing.TB) []instanceStatus {
	t.Helper()
	resp, err := d.client.Get(d.base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Instances []instanceStatus }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Instances
}

// state returns the alert state of host/check from /status.
func (d *daemon) state(t testing.TB, host, check string) string {
	t.Helper()
	for _, in := range d.instances(t) {
		if in.Host == host && in.Check == check {
			return in.State
		}
	}
	return ""
}

// stateOf returns the state of the (first) instance of rule from /status.
func (d *daemon) stateOf(t testing.TB, rule string) string {
	t.Helper()
	for _, in := range d.instances(t) {
		if in.Rule == rule {
			return in.State
		}
	}
	return ""
}

func runMain(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// tcpService is a TCP service on loopback that can be stopped and started
// again on the same port.
type tcpService struct {
	addr string
	l    net.Listener
}

func startService(t testing.TB, addr string) *tcpService {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello\r\n")
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return &tcpService{addr: l.Addr().String(), l: l}
}

func (s *tcpService) port() string {
	_, p, _ := net.SplitHostPort(s.addr)
	return p
}

func TestVersion(t *testing.T) {
	code, out, _ := runMain(t, "version")
	if code != 0 || !strings.HasPrefix(out, "dmonitor ") {
		t.Fatalf("version: exit %d, output %q", code, out)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, cmd := range [][]string{{"--help"}, {"run", "--help"}, {"check", "--help"}, {"version", "--help"}} {
		code, out, _ := runMain(t, cmd...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("dmonitor %s: exit %d, output %q", strings.Join(cmd, " "), code, out)
		}
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"hosts.d/www1/nosuch": "",
		"dmonitor.yaml":       "interval: 10 seconds\n",
	})
	code, _, stderr := runMain(t, "run", "--config", dir, "--user", "root")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	// Both problems, each naming its file (and line for YAML).
	for _, want := range []string{"dmonitor.yaml:1", "nosuch"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Error("a refused configuration created the data directory")
	}
}

// A control port or OpenTSDB API anyone may reach, without a token, is
// refused before anything listens, and the message says how to fix it;
// with the opt-out the daemon starts and says so loudly.
func TestRunRefusesExposure(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"dmonitor.yaml": "control: {listen: '0.0.0.0:0'}\ntsdb: {listen: '[::]:0'}\n"})
	code, _, stderr := runMain(t, "run", "--config", dir, "--user", "root")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"dmonitor.yaml:1:19: control.listen 0.0.0.0:0 is reachable from beyond this host and control.token_file is not set",
		"set control.token_file, listen on 127.0.0.1, or set control.insecure: true",
		"dmonitor.yaml:2:16: tsdb.listen [::]:0 is reachable from beyond this host",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// The opt-out is said at every start. (Loopback here: tests listen
	// nowhere else.)
	control := loopback.FreeAddr(t)
	writeTree(t, dir, map[string]string{"dmonitor.yaml": fmt.Sprintf("control: {listen: %q, insecure: true}\ntsdb: {listen: ''}\n", control)})
	d := startDaemon(t, dir, control)
	d.stop(t)
	if !strings.Contains(d.logText(), "level=WARN msg=\"INSECURE: control.insecure is set and there is no control.token_file") {
		t.Errorf("the opt-out is not logged:\n%s", d.logText())
	}
}

func TestCheckJSON(t *testing.T) {
	requirePlugins(t)
	svc := startService(t, "127.0.0.1:0")
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml": fmt.Sprintf("observer: eu-1\nchecks:\n  svc:\n    command: [check_tcp, -H, \"{{host}}\", -p, %q]\n", svc.port()),
	})
	code, out, stderr := runMain(t, "check", "--config", dir, "127.0.0.1", "svc", "--json")
	if code != 0 {
		t.Fatalf("exit %d, want 0 (OK); stderr %s", code, stderr)
	}
	var r struct {
		Host, Check, Observer, Status, Raw, Output string
		ExitCode                                   *int     `json:"exit_code"`
		Duration                                   *float64 `json:"duration_seconds"`
		Perf                                       []struct {
			Label, UOM string
			Value      float64
		} `json:"perfdata"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if r.Host != "127.0.0.1" || r.Check != "svc" || r.Observer != "eu-1" || r.Status != "OK" || r.Raw != "OK" ||
		r.ExitCode == nil || *r.ExitCode != 0 || r.Duration == nil || !strings.HasPrefix(r.Output, "TCP OK") {
		t.Errorf("unexpected result %s", out)
	}
	if len(r.Perf) == 0 || r.Perf[0].Label != "time" || r.Perf[0].UOM != "s" {
		t.Errorf("perfdata = %+v, want time in s", r.Perf)
	}

	svc.l.Close()
	code, out, _ = runMain(t, "check", "--config", dir, "127.0.0.1", "svc")
	if code != 2 || !strings.HasPrefix(out, "CRITICAL svc on 127.0.0.1") {
		t.Errorf("closed port: exit %d, output %q; want 2 and CRITICAL", code, out)
	}
	code, _, stderr = runMain(t, "check", "--config", dir, "127.0.0.1", "nosuch")
	if code != 3 || !strings.Contains(stderr, `no check "nosuch"`) {
		t.Errorf("unknown check: exit %d, stderr %q; want 3", code, stderr)
	}
}

// TestExampleStandalone runs the README's first command on a copy of
// examples/standalone (its control port moved to a free one) and waits
// until the daemon has seen its own control port up through the shipped
// check_port plugin, and run the shipped local checks.
func TestExampleStandalone(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/standalone")); err != nil {
		t.Fatal(err)
	}
	control := loopback.FreeAddr(t)
	_, port, _ := net.SplitHostPort(control)
	yml := filepath.Join(dir, "dmonitor.yaml")
	b, err := os.ReadFile(yml)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte(`"2929"`), []byte(strconv.Quote(port)))
	b = bytes.ReplaceAll(b, []byte("interval: 15s"), []byte("interval: 1s"))
	b = append(b, fmt.Sprintf("control: {listen: %q}\ntsdb: {listen: \"\"}\n", control)...)
	if err := os.WriteFile(yml, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, control)
	await.Until(t, "the example's control check to be ok", func() bool { return d.state(t, "localhost", "control") == "ok" })
	for _, c := range []string{"disk_free", "load"} {
		await.Until(t, c+" to be evaluated", func() bool { s := d.state(t, "localhost", c); return s == "ok" || s == "firing" })
	}
	d.stop(t)

	// The shipped plugins parse as documented.
	code, out, stderr := runMain(t, "check", "--config", dir, "localhost", "disk_free", "--json")
	if code == 3 || !strings.Contains(out, `"label": "free"`) || !strings.Contains(out, `"uom": "KB"`) {
		t.Errorf("check disk_free: exit %d, output %s %s", code, out, stderr)
	}
}

// The command line's listen addresses win over dmonitor.yaml's, and the
// one start-up line says where to look.
func TestRunListenFlags(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"dmonitor.yaml": "observer: flags\ncontrol: {listen: '127.0.0.1:1'}\n"})
	control, api := loopback.FreeAddr(t), loopback.FreeAddr(t)
	d := launch(t, &daemon{control: control, base: "http://" + control, client: http.DefaultClient,
		args: []string{"--control-listen", control, "--tsdb-listen", api}}, dir, nil)
	resp, err := http.Get("http://" + api + "/api/version")
	if err != nil {
		t.Fatalf("the OpenTSDB API on --tsdb-listen %s: %v", api, err)
	}
	resp.Body.Close()
	d.stop(t)
	line := ""
	for l := range strings.Lines(d.logText()) {
		if strings.Contains(l, `msg="dmonitor running"`) {
			line = l
		}
	}
	for _, want := range []string{"observer=flags", "mode=local", "status_page=http://" + control + "/", "opentsdb_api=\"http://" + api} {
		if !strings.Contains(line, want) {
			t.Errorf("start-up line %q lacks %q", line, want)
		}
	}
	code, _, stderr := runMain(t, "run", "--config", dir, "--user", "root", "--control-listen", "0.0.0.0:2929")
	if code != 1 || !strings.Contains(stderr, "control.listen 0.0.0.0:2929 is reachable from beyond this host") {
		t.Errorf("--control-listen 0.0.0.0:2929 without a token: exit %d, %s", code, stderr)
	}
}
