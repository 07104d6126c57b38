package config

import (
	"errors"
	"strings"
	"testing"
)

// badCases are trees Load must refuse, each with the exact error text. Paths
// in messages are relative to the config dir, except those outside it.
var badCases = []struct {
	name  string
	files map[string]string
	want  string
}{
	// --- hosts.d and plugins ---
	{
		// A check with neither a plugin nor a YAML definition.
		name:  "no plugin",
		files: map[string]string{"hosts.d/web1/http": ""},
		want:  "hosts.d/web1/http: no plugin plugins/check_http and no checks.http in dmonitor.yaml",
	},
	{
		// Every host using the missing check is named, so a typo is easy to find.
		name:  "no plugin, two hosts",
		files: map[string]string{"hosts.d/web1/htp": "", "hosts.d/web2/htp": ""},
		want: "hosts.d/web1/htp: no plugin plugins/check_htp and no checks.htp in dmonitor.yaml\n" +
			"hosts.d/web2/htp: no plugin plugins/check_htp and no checks.htp in dmonitor.yaml",
	},
	{
		// A plugin without an x bit; reported once though two hosts use it.
		name: "plugin not executable",
		files: map[string]string{"hosts.d/web1/ping": "", "hosts.d/web2/ping": "",
			"plugins/check_ping": "echo OK\n"},
		want: `plugins/check_ping: check "ping": is not executable (mode -rw-r--r--)`,
	},
	{
		// A directory where the plugin should be.
		name:  "plugin is a directory",
		files: map[string]string{"hosts.d/web1/ping": "", "plugins/check_ping/": ""},
		want:  `plugins/check_ping: check "ping": is a directory, not a regular file`,
	},
	{
		// A plugin symlinked to nothing.
		name:  "plugin is a broken symlink",
		files: map[string]string{"hosts.d/web1/ping": "", "plugins/check_ping": "->/nonexistent/check_ping"},
		want:  `plugins/check_ping: check "ping": broken symbolic link to /nonexistent/check_ping`,
	},
	{
		// hosts.d holds directories, one per host.
		name:  "host entry is a file",
		files: map[string]string{"hosts.d/web1": ""},
		want:  "hosts.d/web1: is a file, not a directory (hosts.d/ holds one directory per host)",
	},
	{
		// A check entry must be a file.
		name:  "check entry is a directory",
		files: map[string]string{"hosts.d/web1/http/": ""},
		want:  "hosts.d/web1/http: is a directory, not a regular file (want an empty file naming a check)",
	},
	{
		// A check entry linked to nothing.
		name:  "check entry is a broken symlink",
		files: map[string]string{"hosts.d/web1/http": "->../../nothing"},
		want:  "hosts.d/web1/http: broken symbolic link to ../../nothing (want an empty file naming a check)",
	},
	{
		// hosts.d itself must be a directory.
		name:  "hosts.d is a file",
		files: map[string]string{"hosts.d": "web1 http\n"},
		want:  "hosts.d: is a file, not a directory",
	},
	{
		// The default plugin dir is a file.
		name:  "plugins is a file",
		files: map[string]string{"plugins": ""},
		want:  "plugins: is a file, not a directory",
	},
	{
		// An explicit plugin_dir that is a file.
		name:  "plugin_dir is a file",
		files: map[string]string{"lib": "", FileName: "plugin_dir: lib\n"},
		want:  "dmonitor.yaml:1:13: plugin_dir: lib: is a file, not a directory",
	},

	// --- nodes.txt ---
	{
		// The same node twice.
		name:  "duplicate node",
		files: map[string]string{"nodes.txt": "a\n# b\nb\na # again\n"},
		want:  `nodes.txt:4: duplicate node "a" (first on line 1)`,
	},
	{
		// Two names on one line, as if it were a list.
		name:  "two nodes on a line",
		files: map[string]string{"nodes.txt": "a b\n"},
		want:  `nodes.txt:1: want one host name per line, got "a b"`,
	},
	{
		// A directory where the file should be.
		name:  "nodes.txt is a directory",
		files: map[string]string{"nodes.txt/": ""},
		want:  "nodes.txt: is a directory, not a regular file",
	},
	{
		// A named pipe would block the read forever; it is refused unread.
		name:  "nodes.txt is a fifo",
		files: map[string]string{"nodes.txt": "|fifo"},
		want:  "nodes.txt: is a named pipe, not a regular file",
	},
	{
		// A dangling symlink is not "no file".
		name:  "dmonitor.yaml is a broken symlink",
		files: map[string]string{FileName: "->/etc/dmonitor/nothing.yaml"},
		want:  "dmonitor.yaml: broken symbolic link to /etc/dmonitor/nothing.yaml",
	},

	// --- alert.d ---
	{
		// A file name that is no address.
		name:  "alert.d bad address",
		files: map[string]string{"alert.d/oncall": ""},
		want:  "alert.d/oncall: file name is not an email address: mail: missing '@' or angle-addr",
	},
	{
		// A display name has no place in a file name.
		name:  "alert.d display name",
		files: map[string]string{"alert.d/Ops <ops@example.org>": ""},
		want:  "alert.d/Ops <ops@example.org>: file name is not a bare email address (want e.g. ops@example.org)",
	},
	{
		// A directory in alert.d.
		name:  "alert.d directory",
		files: map[string]string{"alert.d/ops@example.org/": ""},
		want:  "alert.d/ops@example.org: is a directory, not a regular file (want an empty file named for an email address)",
	},

	// --- dmonitor.yaml: syntax and shape ---
	{
		// Broken YAML: only a line is known.
		name:  "syntax error",
		files: map[string]string{FileName: "interval: 30s\nchecks: [\n"},
		want:  "dmonitor.yaml:2: did not find expected node content",
	},
	{
		// Two documents in one file.
		name:  "two documents",
		files: map[string]string{FileName: "interval: 30s\n---\ninterval: 60s\n"},
		want:  "dmonitor.yaml:2:1: more than one YAML document; dmonitor.yaml holds one",
	},
	{
		// A list where the mapping belongs.
		name:  "top level is a list",
		files: map[string]string{FileName: "- interval: 30s\n"},
		want:  "dmonitor.yaml:1:1: want a mapping, got a list",
	},
	{
		// Typos are not ignored, at any depth.
		name:  "unknown fields",
		files: map[string]string{FileName: "intervall: 30s\ntsdb:\n  backnd: embedded\n"},
		want: "dmonitor.yaml:1:1: unknown field \"intervall\"\n" +
			"dmonitor.yaml:3:3: tsdb: unknown field \"backnd\"",
	},
	{
		// The same key twice.
		name:  "duplicate key",
		files: map[string]string{FileName: "interval: 30s\ntimeout: 5s\ninterval: 60s\n"},
		want:  `dmonitor.yaml:3:1: duplicate key "interval" (first on line 1)`,
	},
	{
		// The same check name twice.
		name: "duplicate check",
		files: map[string]string{FileName: "checks:\n  http: {command: [check_dummy, '0']}\n" +
			"  http: {command: [check_dummy, '1']}\n"},
		want: `dmonitor.yaml:3:3: checks: duplicate key "http" (first on line 2)`,
	},
	{
		// A command as one string, as a shell would take it.
		name:  "command is a string",
		files: map[string]string{FileName: "checks:\n  http:\n    command: check_http -H {{host}}\n"},
		want:  "dmonitor.yaml:3:14: checks.http.command: want a list of strings, got a string",
	},
	{
		// A list inside the command list.
		name:  "command element is a list",
		files: map[string]string{FileName: "checks:\n  http:\n    command: [check_http, [-H]]\n"},
		want:  "dmonitor.yaml:3:27: checks.http.command[1]: want a string, got a list",
	},
	{
		// A check with no command.
		name:  "check without command",
		files: map[string]string{FileName: "checks:\n  http:\n    interval: 30s\n"},
		want:  "dmonitor.yaml:2:3: checks.http: command is required",
	},
	{
		// An empty command.
		name:  "empty command",
		files: map[string]string{FileName: "checks:\n  http: {command: []}\n"},
		want:  "dmonitor.yaml:2:19: checks.http.command: want a plugin and its arguments, got an empty command",
	},
	{
		// A placeholder that is never replaced.
		name:  "unknown placeholder",
		files: map[string]string{FileName: "checks:\n  http: {command: [check_dummy, '0', '{{ host }}']}\n"},
		want:  `dmonitor.yaml:2:38: checks.http.command: unknown placeholder in "{{ host }}" (only {{host}} is replaced)`,
	},
	{
		// An integer where a number of workers belongs, but as a string.
		name:  "workers is a string",
		files: map[string]string{FileName: "workers: many\n"},
		want:  "dmonitor.yaml:1:10: workers: want an integer, got a string",
	},

	// --- dmonitor.yaml: values ---
	{
		// Durations need a unit; days must be whole.
		name:  "bad durations",
		files: map[string]string{FileName: "interval: 60\ntsdb: {retention: 1.5d}\n"},
		want: "dmonitor.yaml:1:11: interval: invalid duration \"60\" (want e.g. 90s, 1h30m, 30d or 2w)\n" +
			"dmonitor.yaml:2:19: tsdb.retention: invalid duration \"1.5d\" (want e.g. 90s, 1h30m, 30d or 2w)",
	},
	{
		// Sizes take a whole number and a byte unit; batches are counted.
		name:  "bad spool size and batch size",
		files: map[string]string{FileName: "tsdb:\n  spool_size: 1.5GiB\n  batch_size: 0\n"},
		want: "dmonitor.yaml:2:15: tsdb.spool_size: invalid size \"1.5GiB\" (want e.g. 256MiB, 1GB or 4096)\n" +
			"dmonitor.yaml:3:15: tsdb.batch_size: must be positive, got 0",
	},
	{
		// Zero and negative values.
		name:  "non-positive values",
		files: map[string]string{FileName: "interval: 0s\ntimeout: -5s\nworkers: 0\nquorum: -1\n"},
		want: "dmonitor.yaml:1:11: interval: must be positive, got 0s\n" +
			"dmonitor.yaml:2:10: timeout: must be positive, got -5s\n" +
			"dmonitor.yaml:3:10: workers: must be positive, got 0\n" +
			"dmonitor.yaml:4:9: quorum: must be positive, got -1",
	},
	{
		// A quorum the listed nodes can never reach, globally and per check.
		name: "quorum above nodes",
		files: map[string]string{"nodes.txt": "a\nb\n",
			FileName: "quorum: 3\nchecks:\n  up: {command: [check_dummy, '0'], quorum: 4}\n"},
		want: "dmonitor.yaml:1:9: quorum: 3 is more than the 2 nodes in nodes.txt\n" +
			"dmonitor.yaml:3:45: checks.up.quorum: 4 is more than the 2 nodes in nodes.txt",
	},
	{
		// An explicitly empty observer name.
		name:  "empty observer",
		files: map[string]string{FileName: "observer: ''\n"},
		want:  "dmonitor.yaml:1:11: observer: must not be empty",
	},
	{
		// A backend that does not exist.
		name:  "unknown backend",
		files: map[string]string{FileName: "tsdb:\n  backend: influx\n"},
		want:  `dmonitor.yaml:2:12: tsdb.backend: unknown backend "influx" (want embedded or opentsdb)`,
	},
	{
		// OpenTSDB without an address.
		name:  "opentsdb without url",
		files: map[string]string{FileName: "tsdb:\n  backend: opentsdb\n"},
		want:  "dmonitor.yaml:2:12: tsdb: backend opentsdb needs a url",
	},
	{
		// Addresses that cannot be listened on or dialled.
		name:  "bad addresses",
		files: map[string]string{FileName: "tsdb: {listen: localhost}\nsmtp: {addr: mail}\nredis: {url: 'localhost:6379'}\n"},
		want: "dmonitor.yaml:1:16: tsdb.listen: want host:port, or \"\" for off, got \"localhost\"\n" +
			"dmonitor.yaml:2:14: smtp.addr: want host:port, got \"mail\"\n" +
			"dmonitor.yaml:3:14: redis.url: want a redis://, rediss:// or unix:// URL, got \"localhost:6379\"",
	},
	{
		// A TLS mode that is not one of the three.
		name:  "smtp tls",
		files: map[string]string{FileName: "smtp:\n  tls: ssl\n"},
		want:  `dmonitor.yaml:2:8: smtp.tls: unknown tls mode "ssl" (want none, starttls or tls)`,
	},
	{
		// A sender that is no address.
		name:  "smtp from",
		files: map[string]string{FileName: "smtp: {from: dmonitor}\n"},
		want:  `dmonitor.yaml:1:14: smtp.from: invalid address "dmonitor": mail: missing '@' or angle-addr`,
	},
	{
		// A data_dir that exists as a file.
		name:  "data_dir is a file",
		files: map[string]string{"state": "", FileName: "data_dir: state\n"},
		want:  "dmonitor.yaml:1:11: data_dir: state: is a file, not a directory",
	},
	{
		// A token file that is not there.
		name:  "token file missing",
		files: map[string]string{FileName: "control: {token_file: secret/token}\n"},
		want:  "dmonitor.yaml:1:23: control.token_file: secret/token does not exist",
	},

	// --- dmonitor.yaml: check commands ---
	{
		// A plugin name found nowhere: both places tried are named.
		name:  "command not found",
		files: map[string]string{FileName: "checks:\n  http: {command: [check_htp, -H, '{{host}}']}\n"},
		want:  "dmonitor.yaml:2:20: checks.http.command: check_htp not found (tried plugins/check_htp, /usr/lib/nagios/plugins/check_htp)",
	},
	{
		// plugin_path replaces the Debian directory.
		name: "command not found, own plugin_path",
		files: map[string]string{FileName: "plugin_path: [/opt/plugins, lib]\n" +
			"checks:\n  http: {command: [check_http]}\n"},
		want: "dmonitor.yaml:3:20: checks.http.command: check_http not found (tried plugins/check_http, /opt/plugins/check_http, lib/check_http)",
	},
	{
		// A path relative to the config dir, not executable.
		name: "command not executable",
		files: map[string]string{"bin/check_x": "echo OK\n",
			FileName: "checks:\n  x: {command: [bin/check_x]}\n"},
		want: "dmonitor.yaml:2:17: checks.x.command: bin/check_x: is not executable (mode -rw-r--r--)",
	},
	{
		// The first match wins even when it cannot run: a plugins/
		// directory named like a Debian plugin does not silently fall through.
		name: "command shadowed by a directory",
		files: map[string]string{"plugins/check_dummy/": "",
			FileName: "checks:\n  d: {command: [check_dummy, '0']}\n"},
		want: "dmonitor.yaml:2:17: checks.d.command: plugins/check_dummy: is a directory, not a regular file",
	},
	{
		// An unused check is still validated.
		name:  "unused check is validated",
		files: map[string]string{FileName: "checks:\n  spare: {command: [/nonexistent/check_spare]}\n"},
		want:  "dmonitor.yaml:2:21: checks.spare.command: /nonexistent/check_spare not found (tried /nonexistent/check_spare)",
	},

	// --- dmonitor.yaml: receivers ---
	{
		// A receiver with nothing to send to, empty or null.
		name:  "receiver without destination",
		files: map[string]string{FileName: "receivers:\n  ops: {}\n  dev:\n"},
		want: "dmonitor.yaml:2:3: receivers.ops: no destination (want email, webhook, alertmanager or exec)\n" +
			"dmonitor.yaml:3:3: receivers.dev: no destination (want email, webhook, alertmanager or exec)",
	},
	{
		// Addresses that do not parse, and one listed twice.
		name:  "receiver bad email",
		files: map[string]string{FileName: "receivers:\n  ops:\n    email: [oncall, a@example.org, A@example.org]\n"},
		want: "dmonitor.yaml:3:13: receivers.ops.email[0]: invalid address \"oncall\": mail: missing '@' or angle-addr\n" +
			"dmonitor.yaml:3:36: receivers.ops.email[2]: duplicate address \"A@example.org\" (first on line 3)",
	},
	{
		// email as a single string.
		name:  "receiver email is a string",
		files: map[string]string{FileName: "receivers:\n  ops: {email: ops@example.org}\n"},
		want:  "dmonitor.yaml:2:16: receivers.ops.email: want a list of strings, got a string",
	},
	{
		// A webhook without a URL, and an Alertmanager with a bad one.
		name:  "receiver urls",
		files: map[string]string{FileName: "receivers:\n  hook: {webhook: {}}\n  am: {alertmanager: {url: '127.0.0.1:9093'}}\n"},
		want: "dmonitor.yaml:2:19: receivers.hook.webhook: url is required\n" +
			"dmonitor.yaml:3:28: receivers.am.alertmanager.url: want an http or https URL, got \"127.0.0.1:9093\"",
	},
	{
		// An exec receiver whose program is not on this node.
		name:  "receiver exec not found",
		files: map[string]string{FileName: "receivers:\n  page:\n    exec: {command: [/nonexistent/page, --urgent]}\n"},
		want:  "dmonitor.yaml:3:22: receivers.page.exec.command: /nonexistent/page not found (tried /nonexistent/page)",
	},
}

func TestLoadBad(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(tree(t, tc.files))
			if err == nil {
				t.Fatalf("Load succeeded, want error:\n%s", tc.want)
			}
			if cfg != nil {
				t.Errorf("Load returned a Config with its error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != strings.Count(tc.want, "\n")+1 {
				t.Errorf("error is not Errors with one element per line: %#v", err)
			}
		})
	}
}

// TestLoadManyProblems proves Load reports every problem of a tree at once,
// across all its files, in file order.
func TestLoadManyProblems(t *testing.T) {
	dir := tree(t, map[string]string{
		"nodes.txt":              "a\nb\na\n",
		"hosts.d/web1/http":      "",
		"hosts.d/web1/ping":      "",
		"hosts.d/web2":           "",
		"plugins/check_ping":     "echo OK\n",
		"alert.d/oncall":         "",
		"alert.d/ok@example.org": "",
		FileName: `interval: 5
workers: 0
quorum: 3
checks:
  disk: {command: "check_disk -w 10%"}
tsdb: {backend: opentsdb}
smtp: {tls: ssl, port: 25}
receivers:
  ops: {}
`,
	})
	want := `alert.d/oncall: file name is not an email address: mail: missing '@' or angle-addr
dmonitor.yaml:1:11: interval: invalid duration "5" (want e.g. 90s, 1h30m, 30d or 2w)
dmonitor.yaml:2:10: workers: must be positive, got 0
dmonitor.yaml:3:9: quorum: 3 is more than the 2 nodes in nodes.txt
dmonitor.yaml:5:19: checks.disk.command: want a list of strings, got a string
dmonitor.yaml:6:17: tsdb: backend opentsdb needs a url
dmonitor.yaml:7:13: smtp.tls: unknown tls mode "ssl" (want none, starttls or tls)
dmonitor.yaml:7:18: smtp: unknown field "port"
dmonitor.yaml:9:3: receivers.ops: no destination (want email, webhook, alertmanager or exec)
hosts.d/web1/http: no plugin plugins/check_http and no checks.http in dmonitor.yaml
hosts.d/web2: is a file, not a directory (hosts.d/ holds one directory per host)
nodes.txt:3: duplicate node "a" (first on line 1)
plugins/check_ping: check "ping": is not executable (mode -rw-r--r--)`
	_, err := Load(dir)
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}
