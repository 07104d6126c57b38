package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testdataDir returns the absolute path of testdata/name.
func testdataDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// load loads dir and fails the test on any error.
func load(t *testing.T, dir string) *Config {
	t.Helper()
	cfg, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(%s):\n%v", dir, err)
	}
	return cfg
}

// hostname is the default observer.
func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// targets renders every target as "host check: argv", so a test can assert
// the exact command each target runs.
func targets(c *Config) []string {
	var out []string
	for _, tg := range c.Targets {
		out = append(out, fmt.Sprintf("%s %s: %s", tg.Host, tg.Check.Name, strings.Join(tg.Check.Argv(tg.Host), " ")))
	}
	return out
}

func equal(t *testing.T, field string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", field, got, want)
	}
}

func TestLoadGood(t *testing.T) {
	dir := testdataDir(t, "good")
	c := load(t, dir)
	sys := SystemPluginDir
	plugins := filepath.Join(dir, "plugins")

	equal(t, "Dir", c.Dir, dir)
	equal(t, "Observer", c.Observer, "eu-1")
	equal(t, "Nodes", c.Nodes, []string{"eu-1", "us-1", "ap-1"})
	equal(t, "Interval", c.Interval, 30*time.Second)
	equal(t, "Timeout", c.Timeout, 5*time.Second)
	equal(t, "Quorum", c.Quorum, 2)
	equal(t, "Workers", c.Workers, 8)
	equal(t, "RepeatInterval", c.RepeatInterval, time.Hour)
	equal(t, "PluginDir", c.PluginDir, plugins)
	equal(t, "DataDir", c.DataDir, filepath.Join(dir, "state"))
	equal(t, "PluginPath", c.PluginPath, []string{plugins, sys})

	wantChecks := map[string]*Check{
		// A Debian plugin by name, with its own interval, timeout and quorum.
		"http": {Name: "http", Command: []string{sys + "/check_http", "-H", "{{host}}", "-u", "/"},
			Interval: time.Minute, Timeout: 3 * time.Second, Quorum: 3},
		// Found only in plugin_path; the defaults of the file apply.
		"disk": {Name: "disk", Command: []string{sys + "/check_disk", "-w", "10%", "-c", "5%"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2},
		// plugins/check_dummy shadows the Debian plugin of the same name.
		"dummy": {Name: "dummy", Command: []string{plugins + "/check_dummy", "0", "up on {{host}}"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2},
		// A path with a slash is relative to the config dir.
		"local": {Name: "local", Command: []string{dir + "/scripts/check_local.sh", "--host={{host}}"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2},
		// Defined in dmonitor.yaml, used by no host: kept, so that
		// `dmonitor check HOST unused` works, but never scheduled.
		"unused": {Name: "unused", Command: []string{plugins + "/check_dummy", "1"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2},
		// No YAML definition: the implicit check of plugins/check_ping.
		"ping": {Name: "ping", Command: []string{plugins + "/check_ping", "{{host}}"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2, Implicit: true},
	}
	equal(t, "Checks", c.Checks, wantChecks)

	equal(t, "Targets", targets(c), []string{
		"db1 disk: " + sys + "/check_disk -w 10% -c 5%",
		"db1 ping: " + plugins + "/check_ping db1",
		"web1 dummy: " + plugins + "/check_dummy 0 up on web1",
		"web1 http: " + sys + "/check_http -H web1 -u /",
		"web1 local: " + dir + "/scripts/check_local.sh --host=web1",
		"web1 ping: " + plugins + "/check_ping web1",
		"web2 http: " + sys + "/check_http -H web2 -u /",
		"web2 ping: " + plugins + "/check_ping web2",
	})
	for _, tg := range c.Targets {
		if tg.Check != c.Checks[tg.Check.Name] {
			t.Errorf("target %s %s does not share Checks[%q]", tg.Host, tg.Check.Name, tg.Check.Name)
		}
	}

	equal(t, "TSDB", c.TSDB, TSDB{Backend: BackendOpenTSDB, URL: "http://opentsdb:4242", Listen: "",
		Retention: 14 * 24 * time.Hour, OutOfOrder: 3 * 24 * time.Hour, BatchSize: 100, SpoolSize: 64 << 20})
	equal(t, "Redis", c.Redis, Redis{URL: "redis://127.0.0.1:6379/0", LeaseTTL: 8 * time.Second})
	equal(t, "Control", c.Control, Control{Listen: "127.0.0.1:2930", TokenFile: filepath.Join(dir, "token")})
	equal(t, "SMTP", c.SMTP, SMTP{Addr: "mail.example.org:587", From: "dmonitor@example.org",
		Username: "dmonitor", Password: "secret", TLS: TLSImplicit})
	equal(t, "Receivers", c.Receivers, map[string]*Receiver{
		// alert.d/ adds admin@; its ops@ is OPS@ of the YAML list already.
		"default": {Name: "default", Email: []string{"lead@example.org", "OPS@example.org", "admin@example.org"},
			Webhook: &Webhook{URL: "https://hooks.example.org/dmonitor"}},
		"ops":    {Name: "ops", Email: []string{"oncall@example.org", "Ops Team <ops-team@example.org>"}},
		"hooks":  {Name: "hooks", Webhook: &Webhook{URL: "http://127.0.0.1:9000/alerts"}},
		"am":     {Name: "am", Alertmanager: &Alertmanager{URL: "http://127.0.0.1:9093"}},
		"script": {Name: "script", Exec: &Exec{Command: []string{dir + "/scripts/page.sh", "--urgent"}}},
	})
}

// TestLoadDesignExample loads the dmonitor.yaml example of DESIGN.md: every
// key the contract names decodes.
func TestLoadDesignExample(t *testing.T) {
	dir := testdataDir(t, "design")
	c := load(t, dir)
	equal(t, "Observer", c.Observer, "eu-1")
	equal(t, "Quorum", c.Quorum, 2)
	equal(t, "TSDB", c.TSDB, TSDB{Backend: BackendEmbedded, URL: "http://opentsdb:4242", Listen: "127.0.0.1:4242",
		Retention: 30 * 24 * time.Hour, OutOfOrder: DefaultOutOfOrder, BatchSize: DefaultBatchSize, SpoolSize: DefaultSpoolSize})
	equal(t, "Redis", c.Redis, Redis{URL: "redis://127.0.0.1:6379/0", LeaseTTL: 6 * time.Second})
	equal(t, "Control", c.Control, Control{Listen: "127.0.0.1:2929", TokenFile: filepath.Join(dir, "token")})
	equal(t, "SMTP", c.SMTP, SMTP{Addr: "127.0.0.1:25", From: "dmonitor@example.org", TLS: TLSStartTLS})
	equal(t, "Receivers", c.Receivers, map[string]*Receiver{
		"ops":    {Name: "ops", Email: []string{"oncall@example.org"}},
		"hooks":  {Name: "hooks", Webhook: &Webhook{URL: "http://127.0.0.1:9000/alerts"}},
		"am":     {Name: "am", Alertmanager: &Alertmanager{URL: "http://127.0.0.1:9093"}},
		"script": {Name: "script", Exec: &Exec{Command: []string{dir + "/page", "--urgent"}}},
	})
	// No host runs the http check: it is kept for `dmonitor check`, but
	// nothing is scheduled.
	equal(t, "Checks", slices.Sorted(maps.Keys(c.Checks)), []string{"http"})
	equal(t, "Targets", len(c.Targets), 0)
}

// TestLoadGoodRuns runs the resolved commands of the good tree's own
// plugins: what Load returns is what a scheduler can start.
func TestLoadGoodRuns(t *testing.T) {
	c := load(t, testdataDir(t, "good"))
	// dummy proves the shadowing: Debian's check_dummy would print
	// "OK: up on web1", the tree's own plugin prints OK.
	for _, check := range []string{"ping", "local", "dummy"} {
		tg, ok := c.Target("web1", check)
		if !ok {
			t.Fatalf("no target web1 %s", check)
		}
		argv := tg.Check.Argv(tg.Host)
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil || string(out) != "OK\n" {
			t.Errorf("%v: output %q, error %v; want OK", argv, out, err)
		}
	}
}

func TestLoadMinimal(t *testing.T) {
	dir := testdataDir(t, "minimal")
	c := load(t, dir)
	plugins := filepath.Join(dir, "plugins")
	equal(t, "Targets", targets(c), []string{
		"db.example.org ping: " + plugins + "/check_ping db.example.org",
		"www.example.org http: " + plugins + "/check_http www.example.org",
		"www.example.org ping: " + plugins + "/check_ping www.example.org",
	})
	for name, ch := range c.Checks {
		want := &Check{Name: name, Command: []string{plugins + "/check_" + name, "{{host}}"},
			Interval: DefaultInterval, Timeout: DefaultTimeout, Quorum: 1, Implicit: true}
		equal(t, "Checks["+name+"]", ch, want)
	}
	equal(t, "Quorum", c.Quorum, 1)
	equal(t, "Observer", c.Observer, hostname(t))
	equal(t, "Receivers", c.Receivers, map[string]*Receiver{})
}

func TestLoadEmpty(t *testing.T) {
	dir := t.TempDir()
	c := load(t, dir)
	h := hostname(t)
	want := &Config{
		Dir:      dir,
		Observer: h,
		Interval: 60 * time.Second,
		Timeout:  10 * time.Second,
		Quorum:   1,
		Workers:  64, RepeatInterval: 4 * time.Hour,
		PluginDir:  filepath.Join(dir, "plugins"),
		DataDir:    filepath.Join(dir, "data"),
		PluginPath: []string{filepath.Join(dir, "plugins"), "/usr/lib/nagios/plugins"},
		Checks:     map[string]*Check{},
		TSDB: TSDB{Backend: "embedded", Listen: "127.0.0.1:4242",
			Retention: 30 * 24 * time.Hour, OutOfOrder: 7 * 24 * time.Hour, BatchSize: 50, SpoolSize: 256 << 20},
		Control:   Control{Listen: "127.0.0.1:2929"},
		SMTP:      SMTP{Addr: "127.0.0.1:25", From: "dmonitor@" + h, TLS: "starttls"},
		Receivers: map[string]*Receiver{},
		Redis:     Redis{LeaseTTL: 6 * time.Second},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(empty dir) =\n%+v\nwant\n%+v", c, want)
	}
}

func TestQuorumDefault(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int
	}{
		// No nodes.txt: a single node must alert on its own.
		{"no nodes.txt", nil, 1},
		// One node listed, the same.
		{"one node", map[string]string{"nodes.txt": "a\n"}, 1},
		// Comments and blank lines are not nodes.
		{"one node and comments", map[string]string{"nodes.txt": "# peers\n\na # me\n  \n"}, 1},
		// Two nodes: both must agree.
		{"two nodes", map[string]string{"nodes.txt": "a\nb\n"}, 2},
		// More nodes: still two.
		{"five nodes", map[string]string{"nodes.txt": "a\nb\nc\nd\ne\n"}, 2},
		// An explicit quorum wins over the default, even with one node.
		{"explicit", map[string]string{"nodes.txt": "a\n", FileName: "quorum: 3\n"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tree(t, tc.files))
			equal(t, "Quorum", c.Quorum, tc.want)
		})
	}
}

func TestListenOff(t *testing.T) {
	for _, tc := range []struct {
		name, yaml    string
		tsdb, control string
	}{
		// Absent: the loopback defaults.
		{"absent", "", DefaultTSDBListen, DefaultControlListen},
		// A key with no value is absent too.
		{"null", "tsdb: {listen: }\ncontrol:\n  listen:\n", DefaultTSDBListen, DefaultControlListen},
		// An explicit empty string turns the server off.
		{"empty", "tsdb: {listen: \"\"}\ncontrol:\n  listen: ''\n", "", ""},
		// Anything else is the address.
		{"set", "tsdb: {listen: \":4343\"}\ncontrol:\n  listen: 0.0.0.0:3030\n", ":4343", "0.0.0.0:3030"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tree(t, map[string]string{FileName: tc.yaml}))
			equal(t, "TSDB.Listen", c.TSDB.Listen, tc.tsdb)
			equal(t, "Control.Listen", c.Control.Listen, tc.control)
		})
	}
}

func TestTarget(t *testing.T) {
	c := load(t, testdataDir(t, "good"))
	for _, tc := range []struct {
		host, check string
		ok          bool
	}{
		{"web1", "http", true},    // a YAML check
		{"db1", "ping", true},     // an implicit check, first host
		{"web2", "ping", true},    // the last target
		{"db1", "http", false},    // the check exists, not on this host
		{"web1", "unused", false}, // defined, used by no host
		{"web3", "ping", false},   // no such host
	} {
		tg, ok := c.Target(tc.host, tc.check)
		if ok != tc.ok {
			t.Errorf("Target(%q, %q) ok = %v, want %v", tc.host, tc.check, ok, tc.ok)
			continue
		}
		if ok && (tg.Host != tc.host || tg.Check.Name != tc.check) {
			t.Errorf("Target(%q, %q) = %s %s", tc.host, tc.check, tg.Host, tg.Check.Name)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},            // Go syntax
		{"1h30m", 90 * time.Minute, true},          // Go syntax, combined
		{"250ms", 250 * time.Millisecond, true},    // below a second
		{"30d", 30 * 24 * time.Hour, true},         // whole days
		{"2w", 14 * 24 * time.Hour, true},          // whole weeks
		{"1w2d12h", (9*24 + 12) * time.Hour, true}, // weeks, days and Go units together
		{"1.5h", 90 * time.Minute, true},           // fractions of Go units
		{"0", 0, true},                             // zero, as Go allows
		{"-1d", -24 * time.Hour, true},             // a sign; callers refuse it
		{"1.5d", 0, false},                         // days must be whole
		{"60", 0, false},                           // no unit
		{"d", 0, false},                            // no number
		{"", 0, false},                             // nothing
		{"5 m", 0, false},                          // a space
		{"1y", 0, false},                           // no years: their length varies
		{"99999999999999999w", 0, false},           // overflow
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestLoadMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Load(dir)
	want := dir + ": stat: no such file or directory"
	if err == nil || err.Error() != want {
		t.Fatalf("Load(missing) error = %v, want %s", err, want)
	}
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].File != dir {
		t.Errorf("error %#v is not Errors with one problem about %s", err, dir)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}
}

// tree builds a config tree in a fresh directory from files, keyed by path
// relative to it:
//
//	"dir/"        a directory (the value is ignored)
//	"->target"    a symbolic link to target
//	"|fifo"       a named pipe
//	"#!..."       an executable script with that text
//	anything else a file with that text, mode 0644
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		body := files[name]
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(body, "->"):
			err = os.Symlink(body[2:], p)
		case body == "|fifo":
			err = syscall.Mkfifo(p, 0o644)
		case strings.HasPrefix(body, "#!"):
			err = os.WriteFile(p, []byte(body), 0o755)
		default:
			err = os.WriteFile(p, []byte(body), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
