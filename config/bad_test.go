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
		files: peerFiles("a\n# b\nb\na # again\n", ""),
		want:  `nodes.txt:4: duplicate node "a" (first on line 1)`,
	},
	{
		// One node written twice: with the default port and without.
		name:  "duplicate node address",
		files: peerFiles("a\nb\na:2929\n[::1]\n::1\n", ""),
		want: `nodes.txt:3: duplicate node "a:2929": the same address as "a" (line 1)` + "\n" +
			`nodes.txt:5: duplicate node "::1": the same address as "[::1]" (line 4)`,
	},
	{
		// Ports outside 1..65535, or no number at all.
		name:  "bad node ports",
		files: peerFiles("a\na:0\nb:99999\nc:x\nd:+80\ne:\n[::1]:65536\n", ""),
		want: `nodes.txt:2: node "a:0": want a port from 1 to 65535, got "0"` + "\n" +
			`nodes.txt:3: node "b:99999": want a port from 1 to 65535, got "99999"` + "\n" +
			`nodes.txt:4: node "c:x": want a port from 1 to 65535, got "x"` + "\n" +
			`nodes.txt:5: node "d:+80": want a port from 1 to 65535, got "+80"` + "\n" +
			`nodes.txt:6: node "e:": want a port from 1 to 65535, got ""` + "\n" +
			`nodes.txt:7: node "[::1]:65536": want a port from 1 to 65535, got "65536"`,
	},
	{
		// Entries that are neither host[:port] nor an IPv6 address. While
		// nodes.txt is refused the mode is unknown, so quorum (3 of the 1
		// node left) is not judged: that would be noise.
		name:  "bad node entries",
		files: peerFiles("a\n:2930\nb:c:d\n[b]:2930\n[::1\n", "quorum: 3\n"),
		want: `nodes.txt:2: node ":2930": no host before the port (want host, host:port, or an IPv6 address, in brackets with a port ([::1]:2930))` + "\n" +
			`nodes.txt:3: node "b:c:d": want host, host:port, or an IPv6 address, in brackets with a port ([::1]:2930)` + "\n" +
			`nodes.txt:4: node "[b]:2930": want host, host:port, or an IPv6 address, in brackets with a port ([::1]:2930)` + "\n" +
			`nodes.txt:5: node "[::1": want host, host:port, or an IPv6 address, in brackets with a port ([::1]:2930)`,
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
		want:  "dmonitor.yaml:2:3: checks.http: command or probe is required",
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
		files: map[string]string{FileName: "interval: 0s\ntimeout: -5s\nworkers: 0\nquorum: -1\nprobe_workers: -2\n"},
		want: "dmonitor.yaml:1:11: interval: must be positive, got 0s\n" +
			"dmonitor.yaml:2:10: timeout: must be positive, got -5s\n" +
			"dmonitor.yaml:3:10: workers: must be positive, got 0\n" +
			"dmonitor.yaml:4:9: quorum: must be positive, got -1\n" +
			"dmonitor.yaml:5:16: probe_workers: must be positive, got -2",
	},
	{
		// A quorum the listed nodes can never reach, globally and per check.
		name:  "quorum above nodes",
		files: peerFiles("a\nb\n", "quorum: 3\nchecks:\n  up: {command: [check_dummy, '0'], quorum: 4}\n"),
		want: "dmonitor.yaml:1:9: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum\n" +
			"dmonitor.yaml:3:45: checks.up.quorum: 4 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower checks.up.quorum",
	},
	{
		// A check that inherits the global quorum, or repeats it, is
		// reported with it, once.
		name: "quorum above nodes, inherited",
		files: peerFiles("a\nb\n", "quorum: 3\nchecks:\n  up: {command: [check_dummy, '0']}\n"+
			"  down: {command: [check_dummy, '2'], quorum: 3}\n"),
		want: "dmonitor.yaml:1:9: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum\n" +
			"dmonitor.yaml:4:47: checks.down.quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower checks.down.quorum",
	},
	{
		// One node listed: its quorum is one.
		name:  "quorum above one node",
		files: peerFiles("a\n", "checks:\n  up: {command: [check_dummy, '0'], quorum: 2}\n"),
		want:  "dmonitor.yaml:2:45: checks.up.quorum: 2 is more than the 1 node in nodes.txt: list every observer in nodes.txt, or lower checks.up.quorum",
	},
	{
		// Every failure domain needs an observer: three domains never
		// form from two nodes.
		name:  "quorum_domains above nodes",
		files: peerFiles("a\nb\n", "quorum_domains: 3\nchecks:\n  up: {command: [check_dummy, '0'], quorum_domains: 4}\n"),
		want: "dmonitor.yaml:1:17: quorum_domains: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum_domains\n" +
			"dmonitor.yaml:3:53: checks.up.quorum_domains: 4 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower checks.up.quorum_domains",
	},
	{
		name:  "failure domains",
		files: map[string]string{FileName: "domain: ''\nquorum_domains: 0\npartial_notify: [pager]\nreceivers:\n  ops: {email: [a@example.org]}\n"},
		want: "dmonitor.yaml:1:9: domain: must not be empty; leave it out for an observer that is a domain of its own\n" +
			"dmonitor.yaml:2:17: quorum_domains: must be positive, got 0\n" +
			"dmonitor.yaml:3:18: partial_notify: no receiver \"pager\" (have ops)",
	},
	{
		// No nodes.txt and no Redis: this node is the only observer there
		// will ever be, so a quorum of two never forms.
		name:  "quorum above a lone node",
		files: map[string]string{FileName: "quorum: 2\n"},
		want:  "dmonitor.yaml:1:9: quorum: 2 is more than the one observer there can be with no nodes in nodes.txt and no redis.url: list the observers in nodes.txt, or lower quorum",
	},
	{
		// With Redis, the nodes of nodes.txt are still all the observers.
		name: "quorum above nodes, redis",
		files: map[string]string{"nodes.txt": "a\nb\n",
			FileName: "observer: a\nredis: {url: 'redis://127.0.0.1:6379/0'}\nquorum: 3\n"},
		want: "dmonitor.yaml:3:9: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum",
	},

	// --- modes: what a node needs to find and reach its peers ---
	{
		// The observer (here from dmonitor.yaml) must be one of the nodes.
		name:  "observer not in nodes",
		files: map[string]string{"nodes.txt": "a\nb\nc\n", "token": "secret\n", FileName: "observer: x\ncontrol: {token_file: token}\n"},
		want:  `nodes.txt: this observer "x" is not listed (nodes: a, b, c): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`,
	},
	{
		// The same in redis mode, and with a single node (local mode).
		name: "observer not in nodes, redis",
		files: map[string]string{"nodes.txt": "eu-1\nus-1\n",
			FileName: "observer: ap-1\nredis: {url: 'redis://127.0.0.1:6379/0'}\n"},
		want: `nodes.txt: this observer "ap-1" is not listed (nodes: eu-1, us-1): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`,
	},
	{
		// The entry is the name: "a" does not match "a:2930".
		name:  "observer not in nodes, port",
		files: map[string]string{"nodes.txt": "a:2930\n", FileName: "observer: a\n"},
		want:  `nodes.txt: this observer "a" is not listed (nodes: a:2930): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`,
	},
	{
		// Peers without the token, and no control key to point at.
		name:  "peers without token",
		files: map[string]string{"nodes.txt": "a\nb\n", FileName: "observer: a\n"},
		want: "dmonitor.yaml: control.token_file is not set, but the 2 nodes of nodes.txt coordinate as peers (no redis.url), " +
			"which authenticate with the shared bearer token: set control.token_file (the same file on every node), or redis.url",
	},
	{
		// The same, pointing at the control key; and the control server
		// off as well.
		name:  "peers without token or control port",
		files: map[string]string{"nodes.txt": "a\nb\nc\n", FileName: "observer: a\ncontrol:\n  listen: ''\n"},
		want: "dmonitor.yaml:2:1: control.token_file is not set, but the 3 nodes of nodes.txt coordinate as peers (no redis.url), " +
			"which authenticate with the shared bearer token: set control.token_file (the same file on every node), or redis.url\n" +
			"dmonitor.yaml:3:11: control.listen is \"\" (off), but the 3 nodes of nodes.txt coordinate as peers (no redis.url) over the control port: " +
			"set control.listen to an address the other nodes reach, or redis.url",
	},
	{
		// Everything at once, as Load collects it: a stranger as observer,
		// no token, no control port, an unreachable quorum.
		name:  "every refusal",
		files: map[string]string{"nodes.txt": "a\nb\n", FileName: "observer: x\nquorum: 3\ncontrol: {listen: ''}\n"},
		want: "dmonitor.yaml:2:9: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum\n" +
			"dmonitor.yaml:3:1: control.token_file is not set, but the 2 nodes of nodes.txt coordinate as peers (no redis.url), " +
			"which authenticate with the shared bearer token: set control.token_file (the same file on every node), or redis.url\n" +
			"dmonitor.yaml:3:19: control.listen is \"\" (off), but the 2 nodes of nodes.txt coordinate as peers (no redis.url) over the control port: " +
			"set control.listen to an address the other nodes reach, or redis.url\n" +
			`nodes.txt: this observer "x" is not listed (nodes: a, b): add it, or set observer: in dmonitor.yaml (or --observer) to its entry`,
	},
	{
		// A refused redis.url leaves the mode unknown: no peer-mode noise.
		name:  "bad redis url, nodes",
		files: map[string]string{"nodes.txt": "a\nb\n", FileName: "observer: a\nredis: {url: 'localhost:6379'}\n"},
		want:  `dmonitor.yaml:2:14: redis.url: want a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL, got "localhost:6379"`,
	},
	{
		// A control port anyone may reach, without a token.
		name:  "control beyond loopback without token",
		files: map[string]string{FileName: "control: {listen: '0.0.0.0:2929'}\n"},
		want: "dmonitor.yaml:1:19: control.listen 0.0.0.0:2929 is reachable from beyond this host and control.token_file is not set, " +
			"so anyone who reaches it could silence and acknowledge alerts: set control.token_file, listen on 127.0.0.1, " +
			"or set control.insecure: true to accept that",
	},
	{
		name:  "tsdb beyond loopback without token",
		files: map[string]string{FileName: "tsdb:\n  listen: ':4242'\n"},
		want: "dmonitor.yaml:2:11: tsdb.listen :4242 is reachable from beyond this host and control.token_file is not set, " +
			"so anyone who reaches it could write to the store: set control.token_file (writers then send it as a bearer token), " +
			"listen on 127.0.0.1, or set tsdb.insecure: true to accept that",
	},
	{
		name:  "tls cert without key",
		files: map[string]string{"c.pem": "x", FileName: "control:\n  tls_cert_file: c.pem\n"},
		want:  "dmonitor.yaml:2:18: control.tls_cert_file and control.tls_key_file go together: set both, or neither",
	},
	{
		name:  "limits",
		files: map[string]string{FileName: "limits: {series: 0, disk_free_percent: 100, name_length: x, bogus: 1}\n"},
		want: "dmonitor.yaml:1:18: limits.series: must be positive, got 0\n" +
			"dmonitor.yaml:1:40: limits.disk_free_percent: must be below 100, got 100\n" +
			"dmonitor.yaml:1:58: limits.name_length: want an integer, got a string\n" +
			"dmonitor.yaml:1:61: limits: unknown field \"bogus\"",
	},
	{
		// limits.memory is a size, and one a daemon can live in.
		name:  "limits.memory",
		files: map[string]string{FileName: "limits:\n  memory: 10MiB\n"},
		want:  "dmonitor.yaml:2:11: limits.memory: must be at least 64MiB, got 10MiB",
	},
	{
		name:  "limits.memory not a size",
		files: map[string]string{FileName: "limits: {memory: lots}\n"},
		want:  "dmonitor.yaml:1:18: limits.memory: invalid size \"lots\" (want e.g. 256MiB, 1GB or 4096)",
	},
	{
		name:  "limits.memory not a scalar",
		files: map[string]string{FileName: "limits: {memory: [1]}\n"},
		want:  "dmonitor.yaml:1:18: limits.memory: want a size, got a list",
	},
	{
		name:  "insecure not a bool",
		files: map[string]string{FileName: "control: {insecure: yes please}\n"},
		want:  "dmonitor.yaml:1:21: control.insecure: want true or false, got a string",
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
			"dmonitor.yaml:3:14: redis.url: want a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL, got \"localhost:6379\"",
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
		// user: with nothing in it is no account; leaving it out is the default.
		name:  "user empty",
		files: map[string]string{FileName: "user: \"\"\n"},
		want:  "dmonitor.yaml:1:7: user: must not be empty (leave user: out for the default, dmonitor)",
	},
	{
		// A colon would be a field separator of /etc/passwd.
		name:  "user with a colon",
		files: map[string]string{FileName: "user: \"dmonitor:dmonitor\"\n"},
		want:  `dmonitor.yaml:1:7: user: "dmonitor:dmonitor": an account name has no ':', '/' or white space`,
	},
	{
		// A list where a name is wanted.
		name:  "user not a string",
		files: map[string]string{FileName: "user: [a, b]\n"},
		want:  "dmonitor.yaml:1:7: user: want a string, got a list",
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
	{
		// A negative wait, a wait that is no duration, and one of the
		// wrong type.
		name: "receiver group_wait",
		files: map[string]string{FileName: "receivers:\n" +
			"  a: {email: [a@example.org], group_wait: -1s}\n" +
			"  b: {email: [b@example.org], group_wait: soon}\n" +
			"  c: {email: [c@example.org], group_wait: [1s]}\n"},
		want: "dmonitor.yaml:2:43: receivers.a.group_wait: must not be negative, got -1s (0 sends each notification alone)\n" +
			"dmonitor.yaml:3:43: receivers.b.group_wait: invalid duration \"soon\" (want e.g. 90s, 1h30m, 30d or 2w)\n" +
			"dmonitor.yaml:4:43: receivers.c.group_wait: want a duration, got a list",
	},
	{
		// group_by is a list of label names, each once.
		name: "receiver group_by",
		files: map[string]string{FileName: "receivers:\n" +
			"  a: {email: [a@example.org], group_by: alertname}\n" +
			"  b: {email: [b@example.org], group_by: [host, 'team-name', host, [x]]}\n"},
		want: "dmonitor.yaml:2:41: receivers.a.group_by: want a list of strings, got a string\n" +
			"dmonitor.yaml:3:67: receivers.b.group_by[3]: want a string, got a list",
	},
	{
		// Once every element is a string, each is judged.
		name: "receiver group_by names",
		files: map[string]string{FileName: "receivers:\n" +
			"  b: {email: [b@example.org], group_by: [host, 'team-name', host]}\n"},
		want: "dmonitor.yaml:2:48: receivers.b.group_by[1]: bad label name \"team-name\" (want letters, digits and _, not starting with a digit)\n" +
			"dmonitor.yaml:2:61: receivers.b.group_by[2]: duplicate label \"host\" (first on line 2)",
	},
	{
		// receivers.default may leave its destinations to alert.d/, but
		// then alert.d/ must give some.
		name:  "default receiver with only grouping, no alert.d",
		files: map[string]string{FileName: "receivers:\n  default: {group_by: [host]}\n"},
		want:  "dmonitor.yaml:2:3: receivers.default: no destination (want email, webhook, alertmanager or exec, or addresses in alert.d/)",
	},
	{
		// Grouping settings are no destination.
		name:  "receiver with only grouping",
		files: map[string]string{FileName: "receivers:\n  ops: {group_wait: 5s, group_by: [host]}\n"},
		want:  "dmonitor.yaml:2:3: receivers.ops: no destination (want email, webhook, alertmanager or exec)",
	},
}

// peerFiles is a tree of peers whose nodes.txt is nodes, this node being
// "a" with the shared token, and yaml the rest of dmonitor.yaml from its
// line 1 (so the positions in messages are those of yaml alone).
func peerFiles(nodes, yaml string) map[string]string {
	return map[string]string{"nodes.txt": nodes, "token": "secret\n",
		FileName: yaml + "observer: a\ncontrol: {token_file: token}\n"}
}

// TestLoadBad loads each bad tree as the node that runs it (LoadAs, which
// judges the observer too).
func TestLoadBad(t *testing.T) {
	for _, tc := range append(badCases, probeBadCases...) {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadAs(tree(t, tc.files), "")
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
observer: a
`,
	})
	want := `alert.d/oncall: file name is not an email address: mail: missing '@' or angle-addr
dmonitor.yaml: control.token_file is not set, but the 2 nodes of nodes.txt coordinate as peers (no redis.url), which authenticate with the shared bearer token: set control.token_file (the same file on every node), or redis.url
dmonitor.yaml:1:11: interval: invalid duration "5" (want e.g. 90s, 1h30m, 30d or 2w)
dmonitor.yaml:2:10: workers: must be positive, got 0
dmonitor.yaml:3:9: quorum: 3 is more than the 2 nodes in nodes.txt: list every observer in nodes.txt, or lower quorum
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
