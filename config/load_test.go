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
	"regexp"
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
	equal(t, "Domain", c.Domain, "eu-west")
	equal(t, "Quorum", c.Quorum, 2)
	equal(t, "QuorumDomains", c.QuorumDomains, 2)
	equal(t, "PartialNotify", c.PartialNotify, []string{"ops"})
	equal(t, "Workers", c.Workers, 8)
	equal(t, "ProbeWorkers", c.ProbeWorkers, 200)
	equal(t, "RepeatInterval", c.RepeatInterval, time.Hour)
	equal(t, "PluginDir", c.PluginDir, plugins)
	equal(t, "DataDir", c.DataDir, filepath.Join(dir, "state"))
	equal(t, "PluginPath", c.PluginPath, []string{plugins, sys})

	wantChecks := map[string]*Check{
		// A Debian plugin by name, with its own interval, timeout and quorum.
		"http": {Name: "http", Command: []string{sys + "/check_http", "-H", "{{host}}", "-u", "/"},
			Interval: time.Minute, Timeout: 3 * time.Second, Quorum: 3, QuorumDomains: 3},
		// Found only in plugin_path; the defaults of the file apply.
		"disk": {Name: "disk", Command: []string{sys + "/check_disk", "-w", "10%", "-c", "5%"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2, QuorumDomains: 2},
		// plugins/check_dummy shadows the Debian plugin of the same name.
		"dummy": {Name: "dummy", Command: []string{plugins + "/check_dummy", "0", "up on {{host}}"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2, QuorumDomains: 2},
		// A path with a slash is relative to the config dir.
		"local": {Name: "local", Command: []string{dir + "/scripts/check_local.sh", "--host={{host}}"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2, QuorumDomains: 2},
		// Defined in dmonitor.yaml, used by no host: kept, so that
		// `dmonitor check HOST unused` works, but never scheduled.
		"unused": {Name: "unused", Command: []string{plugins + "/check_dummy", "1"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2, QuorumDomains: 2},
		// No YAML definition: the implicit check of plugins/check_ping.
		"ping": {Name: "ping", Command: []string{plugins + "/check_ping", "{{host}}"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, Quorum: 2, QuorumDomains: 2, Implicit: true},
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
			Webhook: &Webhook{URL: "https://hooks.example.org/dmonitor"}, GroupWait: time.Second},
		// Grouped by rule and host, waiting 30s for the others of a group.
		"ops": {Name: "ops", Email: []string{"oncall@example.org", "Ops Team <ops-team@example.org>"},
			GroupWait: 30 * time.Second, GroupBy: []string{"alertname", "host"}},
		// group_wait: 0 is no grouping, not the default.
		"hooks":  {Name: "hooks", Webhook: &Webhook{URL: "http://127.0.0.1:9000/alerts"}},
		"am":     {Name: "am", Alertmanager: &Alertmanager{URL: "http://127.0.0.1:9093"}, GroupWait: time.Second},
		"script": {Name: "script", Exec: &Exec{Command: []string{dir + "/scripts/page.sh", "--urgent"}}, GroupWait: time.Second},
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
	// Every receiver groups what starts within DefaultGroupWait.
	equal(t, "Receivers", c.Receivers, map[string]*Receiver{
		"ops":    {Name: "ops", Email: []string{"oncall@example.org"}, GroupWait: DefaultGroupWait},
		"hooks":  {Name: "hooks", Webhook: &Webhook{URL: "http://127.0.0.1:9000/alerts"}, GroupWait: DefaultGroupWait},
		"am":     {Name: "am", Alertmanager: &Alertmanager{URL: "http://127.0.0.1:9093"}, GroupWait: DefaultGroupWait},
		"script": {Name: "script", Exec: &Exec{Command: []string{dir + "/page", "--urgent"}}, GroupWait: DefaultGroupWait},
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
			Interval: DefaultInterval, Timeout: DefaultTimeout, Quorum: 1, QuorumDomains: 1, Implicit: true}
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
		Quorum:   1, QuorumDomains: 1, PartialNotify: []string{DefaultReceiver},
		Workers: 64, ProbeWorkers: 1024, RepeatInterval: 4 * time.Hour,
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
		Limits: Limits{SeriesPerCheck: 100, Series: 1_000_000, NewSeriesPerRequest: 10_000, NewSeriesPerMinute: 50_000,
			NameLength: 256, DiskFreePercent: 5},
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
		{"one node", peerFiles("a\n", ""), 1},
		// Comments and blank lines are not nodes.
		{"one node and comments", peerFiles("# peers\n\na # me\n  \n", ""), 1},
		// Two nodes: both must agree.
		{"two nodes", peerFiles("a\nb\n", ""), 2},
		// More nodes: still two.
		{"five nodes", peerFiles("a\nb\nc\nd\ne\n", ""), 2},
		// An explicit quorum wins over the default.
		{"explicit", peerFiles("a\nb\nc\nd\ne\n", "quorum: 3\n"), 3},
		// With Redis and no nodes.txt, observers join through Redis: any
		// quorum may be reached.
		{"explicit, redis", map[string]string{FileName: "quorum: 3\nredis: {url: 'redis://127.0.0.1:6379/0'}\n"}, 3},
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
		{"set", "tsdb: {listen: \"127.0.0.2:4343\"}\ncontrol:\n  listen: localhost:3030\n", "127.0.0.2:4343", "localhost:3030"},
		// Beyond this host, with the opt-out.
		{"insecure", "tsdb: {listen: \":4343\", insecure: true}\ncontrol:\n  listen: 0.0.0.0:3030\n  insecure: true\n", ":4343", "0.0.0.0:3030"},
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

func TestMode(t *testing.T) {
	const redis = "redis: {url: 'redis://127.0.0.1:6379/0'}\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  Mode
	}{
		// Nothing at all: a single node, its own leader.
		{"empty", nil, ModeLocal},
		// One node listed is still alone.
		{"one node", peerFiles("a\n", ""), ModeLocal},
		// Two nodes without Redis: the original dmonitor's peers.
		{"two nodes", peerFiles("a\nb\n", ""), ModePeer},
		// Peers on one machine, told apart by their ports.
		{"two ports", map[string]string{"nodes.txt": "127.0.0.1:2930\n127.0.0.1:2931\n", "token": "t\n",
			FileName: "observer: 127.0.0.1:2930\ncontrol: {listen: 127.0.0.1:2930, token_file: token}\n"}, ModePeer},
		// Redis alone.
		{"redis", map[string]string{FileName: redis}, ModeRedis},
		// Redis wins over nodes.txt, and needs no token.
		{"redis and nodes", map[string]string{"nodes.txt": "a\nb\nc\n", FileName: "observer: b\n" + redis}, ModeRedis},
	} {
		t.Run(tc.name, func(t *testing.T) {
			equal(t, "Mode()", load(t, tree(t, tc.files)).Mode(), tc.want)
		})
	}
}

func TestPeerAddr(t *testing.T) {
	for _, tc := range []struct{ entry, want string }{
		{"127.0.0.1:2930", "127.0.0.1:2930"},          // a port: the entry itself
		{"[::1]:2931", "[::1]:2931"},                  // an IPv6 address with a port
		{"host", "host:2929"},                         // a host name: the default port
		{"eu-1.example.org", "eu-1.example.org:2929"}, // a dotted one too
		{"::1", "[::1]:2929"},                         // a bare IPv6 address, bracketed
		{"[::1]", "[::1]:2929"},                       // an IPv6 address in brackets, no port
		{"fe80::1%eth0", "[fe80::1%eth0]:2929"},       // with a zone
		// PeerAddr does not validate; Load refuses these entries first.
		{"a:0", "a:0"},
		{"a:99999", "a:99999"},
		{"a:x", "a:x"},
	} {
		if got := PeerAddr(tc.entry); got != tc.want {
			t.Errorf("PeerAddr(%q) = %q, want %q", tc.entry, got, tc.want)
		}
	}
}

// TestNodes loads nodes.txt entries one at a time: the good ones are kept
// as written, the bad ones refused at their line.
func TestNodes(t *testing.T) {
	for _, tc := range []struct {
		entry string
		want  string // the error; "" when the entry loads
	}{
		{"host", ""},           // a host name
		{"127.0.0.1:2930", ""}, // an address and a port
		{"[::1]:2931", ""},     // an IPv6 address with a port
		{"::1", ""},            // a bare IPv6 address
		{"[::1]", ""},          // an IPv6 address in brackets
		{"a:1", ""},            // the lowest port
		{"a:65535", ""},        // the highest port
		// Port 0 is no port a peer can be reached on.
		{"a:0", `nodes.txt:1: node "a:0": want a port from 1 to 65535, got "0"`},
		// Beyond 16 bits.
		{"a:99999", `nodes.txt:1: node "a:99999": want a port from 1 to 65535, got "99999"`},
		// A service name is not resolved: a number is wanted.
		{"a:x", `nodes.txt:1: node "a:x": want a port from 1 to 65535, got "x"`},
		// Without brackets, a last :number is part of an IPv6 address:
		// this is the address ::1:2930 on the default port.
		{"::1:2930", ""},
		// Two colons in what is no IPv6 address.
		{"1.2.3.4:5:6", `nodes.txt:1: node "1.2.3.4:5:6": want host, host:port, or an IPv6 address, in brackets with a port ([::1]:2930)`},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			files := map[string]string{"nodes.txt": tc.entry + "\n"}
			cfg, err := LoadAs(tree(t, files), tc.entry)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("LoadAs: %v", err)
				}
				equal(t, "Nodes", cfg.Nodes, []string{tc.entry})
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v, want %s", err, tc.want)
			}
		})
	}
}

// TestLoadAs proves the observer given to LoadAs, as --observer gives it,
// replaces dmonitor.yaml's before the observer is judged, and that Load,
// for the tools, does not judge it.
func TestLoadAs(t *testing.T) {
	dir := tree(t, peerFiles("eu-1\nus-1\n", ""))
	// peerFiles names this node "a", which nodes.txt does not list: a
	// cluster's tree checked on a machine that is none of its nodes.
	if _, err := Load(dir); err != nil {
		t.Fatalf("Load judged the observer: %v", err)
	}
	c, err := LoadAs(dir, "us-1")
	if err != nil {
		t.Fatalf("LoadAs(us-1): %v", err)
	}
	equal(t, "Observer", c.Observer, "us-1")
	// "" changes nothing.
	_, err = LoadAs(dir, "")
	want := `nodes.txt: this observer "a" is not listed (nodes: eu-1, us-1): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`
	if err == nil || err.Error() != want {
		t.Errorf("LoadAs(\"\") error %v, want %s", err, want)
	}
}

func TestValidate(t *testing.T) {
	// A loaded Config is valid, and stays so until changed.
	c := load(t, tree(t, peerFiles("a\nb\nc\n", "quorum: 3\n")))
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate of a loaded Config: %v", err)
	}
	// An observer set after Load, as run --observer did before LoadAs.
	c.Observer = "d"
	want := `nodes.txt: this observer "d" is not listed (nodes: a, b, c): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`
	var errs Errors
	if err := c.Validate(); err == nil || err.Error() != want || !errors.As(err, &errs) {
		t.Errorf("Validate error %v, want Errors: %s", err, want)
	}
	// Dropping a node keeps the positions of what Load read.
	c.Observer, c.Nodes = "a", []string{"a", "b"}
	want = "dmonitor.yaml:1:9: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate error %v, want %s", err, want)
	}

	// A Config built by hand: every refusal, none with a line. The check
	// that repeats the global quorum is reported with it.
	c = &Config{Observer: "x", Nodes: []string{"a", "b"}, Quorum: 3, Checks: map[string]*Check{
		"same":  {Name: "same", Quorum: 3},
		"more":  {Name: "more", Quorum: 4},
		"fewer": {Name: "fewer", Quorum: 2},
	}}
	want = strings.Join([]string{
		"dmonitor.yaml: control.token_file is not set, but the 2 nodes of nodes.txt coordinate as peers (no redis.url), " +
			"which authenticate with the shared bearer token: set control.token_file (the same file on every node), or redis.url",
		"dmonitor.yaml: control.listen is \"\" (off), but the 2 nodes of nodes.txt coordinate as peers (no redis.url) over the control port: " +
			"set control.listen to an address the other nodes reach, or redis.url",
		"dmonitor.yaml: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum",
		"dmonitor.yaml: checks.more.quorum: 4 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower checks.more.quorum",
		`nodes.txt: this observer "x" is not listed (nodes: a, b): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`,
	}, "\n")
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate error:\n%v\nwant:\n%s", err, want)
	}
	// Redis with no nodes.txt bounds nothing; an empty Observer is not
	// judged.
	c = &Config{Redis: Redis{URL: "redis://r:6379/0"}, Quorum: 5}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate(redis, no nodes) = %v, want nil", err)
	}
}

// The Sentinel forms that lock/redislease connects with load; the README
// documents them.
func TestRedisSentinelURL(t *testing.T) {
	for _, u := range []string{
		"redis+sentinel://127.0.0.1:26379/mymaster",
		"redis+sentinel://:secret@127.0.0.1:26379,127.0.0.1:26380/mymaster/2",
		"rediss+sentinel://user:p%40ss@127.0.0.1/mymaster?sentinel_password=x",
	} {
		c := load(t, tree(t, map[string]string{FileName: "redis: {url: '" + u + "'}\n"}))
		equal(t, "Redis.URL", c.Redis.URL, u)
		equal(t, "Mode", c.Mode(), ModeRedis)
	}
	for _, u := range []string{"redis+sentinel://127.0.0.1:26379", "redis+sentinel:///mymaster"} {
		_, err := Load(tree(t, map[string]string{FileName: "redis: {url: '" + u + "'}\n"}))
		if err == nil || !strings.Contains(err.Error(), "redis+sentinel://") {
			t.Errorf("Load with redis.url %s: err = %v, want the forms named", u, err)
		}
	}
}

func TestLimitsAndTLS(t *testing.T) {
	dir := tree(t, map[string]string{
		"cert.pem": "x", "key.pem": "x", "ca.pem": "x", "token": "secret\n",
		FileName: "control:\n  listen: '[::]:2929'\n  token_file: token\n  tls_cert_file: cert.pem\n  tls_key_file: key.pem\n  tls_ca_file: ca.pem\n" +
			"tsdb: {listen: ':4242', token_file: token}\n" +
			"limits: {series_per_check: 7, series: 1000, new_series_per_request: 10, new_series_per_minute: 20, name_length: 64, disk_free_percent: 10, memory: 350MiB}\n",
	})
	c := load(t, dir)
	equal(t, "Control", c.Control, Control{Listen: "[::]:2929", TokenFile: filepath.Join(dir, "token"),
		TLSCertFile: filepath.Join(dir, "cert.pem"), TLSKeyFile: filepath.Join(dir, "key.pem"), TLSCAFile: filepath.Join(dir, "ca.pem")})
	equal(t, "TSDB.TokenFile", c.TSDB.TokenFile, filepath.Join(dir, "token"))
	equal(t, "Limits", c.Limits, Limits{SeriesPerCheck: 7, Series: 1000, NewSeriesPerRequest: 10, NewSeriesPerMinute: 20, NameLength: 64, DiskFreePercent: 10, Memory: 350 << 20})
}

// The command line's listen addresses replace the configuration's, and
// are judged as if written there.
func TestOverrideListen(t *testing.T) {
	c := load(t, tree(t, map[string]string{FileName: "control: {listen: '127.0.0.1:2929'}\n"}))
	control, tsdbAddr := "127.0.0.1:3939", ""
	if err := c.OverrideListen(&control, &tsdbAddr); err != nil {
		t.Fatal(err)
	}
	equal(t, "Control.Listen", c.Control.Listen, "127.0.0.1:3939")
	equal(t, "TSDB.Listen", c.TSDB.Listen, "")
	beyond := "0.0.0.0:2929"
	err := c.OverrideListen(&beyond, nil)
	if err == nil || !strings.Contains(err.Error(), "control.listen 0.0.0.0:2929 is reachable from beyond this host") || regexp.MustCompile(`dmonitor\.yaml:\d`).MatchString(err.Error()) {
		t.Errorf("OverrideListen(0.0.0.0:2929) = %v, want the exposure refused, with no line of %s", err, FileName)
	}
	bad := "2929"
	if err := c.OverrideListen(nil, &bad); err == nil || !strings.Contains(err.Error(), "--tsdb-listen: want host:port") {
		t.Errorf("OverrideListen(tsdb 2929) = %v, want the flag named", err)
	}
}

// TestUser: user: is kept as written, and its absence is "" (the daemon's
// default, resolved on the host where it starts, not here).
func TestUser(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		// Absent: the daemon decides (DefaultUser, or DefaultFallbackUser).
		{"absent", "", ""},
		// A key with no value is absent too.
		{"null", "user:\n", ""},
		// An account that need not exist on the machine that loads it.
		{"named", "user: monitoring\n", "monitoring"},
		// root, kept explicitly.
		{"root", "user: root\n", "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tree(t, map[string]string{FileName: tc.yaml}))
			equal(t, "User", c.User, tc.want)
		})
	}
}

// TestReceiverGrouping checks the grouping keys of a receiver: absent is
// DefaultGroupWait and no group_by, for a receiver of alert.d/ alone too;
// 0 turns grouping off; an empty group_by is none.
func TestReceiverGrouping(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  *Receiver
	}{
		// alert.d/ alone makes the receiver "default", grouped by default.
		{"alert.d only", map[string]string{"alert.d/oncall@example.org": ""},
			&Receiver{Name: "default", Email: []string{"oncall@example.org"}, GroupWait: DefaultGroupWait}},
		// Explicitly off.
		{"group_wait 0", map[string]string{FileName: "receivers:\n  default: {email: [a@example.org], group_wait: 0}\n"},
			&Receiver{Name: "default", Email: []string{"a@example.org"}}},
		// Days are durations here too; group_by: [] is no labels.
		{"long wait, empty group_by", map[string]string{FileName: "receivers:\n  default: {email: [a@example.org], group_wait: 1d, group_by: []}\n"},
			&Receiver{Name: "default", Email: []string{"a@example.org"}, GroupWait: 24 * time.Hour}},
		// receivers.default may only say how alert.d/'s mail is grouped.
		{"alert.d grouped", map[string]string{"alert.d/oncall@example.org": "",
			FileName: "receivers:\n  default: {group_wait: 0}\n"},
			&Receiver{Name: "default", Email: []string{"oncall@example.org"}}},
		// group_by kept in its order; alertname is a name like any other.
		{"group_by", map[string]string{FileName: "receivers:\n  default: {webhook: {url: 'http://127.0.0.1:9/'}, group_by: [host, alertname]}\n"},
			&Receiver{Name: "default", Webhook: &Webhook{URL: "http://127.0.0.1:9/"}, GroupWait: DefaultGroupWait, GroupBy: []string{"host", "alertname"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tree(t, tc.files))
			equal(t, "Receivers", c.Receivers, map[string]*Receiver{"default": tc.want})
		})
	}
}
