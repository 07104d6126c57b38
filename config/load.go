package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults beside those of config.go.
const (
	DefaultPluginDir = "plugins"
	DefaultDataDir   = "data"
	DefaultLeaseTTL  = 6 * time.Second
	// SystemPluginDir is where Debian's monitoring-plugins package installs
	// the Nagios plugins; it is plugin_path unless dmonitor.yaml says
	// otherwise.
	SystemPluginDir = "/usr/lib/nagios/plugins"
)

// The values TSDB.Backend takes.
const (
	BackendEmbedded = "embedded"
	BackendOpenTSDB = "opentsdb"
)

// The values SMTP.TLS takes.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "tls"
)

// The fixed names of the config tree.
const (
	nodesFile    = "nodes.txt"
	hostsDir     = "hosts.d"
	alertDir     = "alert.d"
	pluginPrefix = "check_"
)

// Load reads the config tree in dir: nodes.txt, hosts.d/, alert.d/, the
// plugin directory and dmonitor.yaml, all of them optional; an empty
// directory loads as the defaults with no targets. Load returns either a
// complete Config or an error of type Errors listing every problem found,
// never both.
//
// Nodes. nodes.txt lists one node per line, # starting a comment: host or
// host:port, an IPv6 address bare (::1) or in brackets ([::1], [::1]:2930);
// a node without a port has DefaultPeerPort (PeerAddr). A port outside
// 1..65535, two entries with one address and two words on a line are
// refused at their line. The entries decide the mode (Config.Mode).
//
// Refusals. A configuration that could never alert is refused, as
// Validate says (LoadAs also refuses an observer that a non-empty
// nodes.txt does not list): peer mode (two nodes or more, no
// redis.url) without control.token_file or with control.listen ""; a
// quorum, global or a check's, above the nodes of nodes.txt, or above 1
// with neither nodes.txt nor redis.url. These checks are left out while
// nodes.txt or redis.url has a problem of its own, which decides the mode.
//
// Checks. A check named in hosts.d/<host>/ is the check of that name in
// dmonitor.yaml, or else the implicit check plugins/check_<name>, run with
// the host as its single argument. A check command's first element with a
// slash is a path, absolute or relative to dir; without one it is looked up
// in Config.PluginPath (plugin_dir, then plugin_path, by default
// SystemPluginDir), and the first file found is the plugin, runnable or not.
// Every check of dmonitor.yaml is validated, but one that no host runs is
// left out of Checks. Names starting with a dot in hosts.d/ and alert.d/
// (.gitkeep, editor files) are ignored. A missing plugin_dir is no error in
// itself.
//
// Receivers. alert.d/<address> files make up the email list of the receiver
// "default" (DefaultReceiver). When dmonitor.yaml also declares
// receivers.default, the two are merged: its destinations are kept and the
// alert.d/ addresses it does not list already (compared case-insensitively)
// are added after its own. An exec receiver's program with no slash is
// looked up in $PATH and must exist, as must control.token_file.
//
// dmonitor.yaml. A key with a null value is the same as an absent key;
// tsdb.listen or control.listen set to "" turns that server off. Durations
// are those of ParseDuration, and every one must be positive. smtp.from
// defaults to dmonitor@<host name>, smtp.tls to starttls.
func Load(dir string) (*Config, error) {
	return loadTree(dir, "", false)
}

// LoadAs is Load for the node that is to run as observer, as `dmonitor
// run --observer` names it, so that nodes can share one tree: observer
// replaces dmonitor.yaml's observer: (and the host name), and the tree is
// refused, as Validate says, when a non-empty nodes.txt does not list it.
// An empty observer keeps dmonitor.yaml's (or the host name). Load does not
// judge the observer, so `dmonitor check` and `rules check` work on a
// cluster's tree anywhere.
func LoadAs(dir, observer string) (*Config, error) {
	return loadTree(dir, observer, true)
}

func loadTree(dir, observer string, asNode bool) (*Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, Errors{{File: dir, Msg: err.Error(), Err: err}}
	}
	l := &loader{dir: abs}
	cfg := l.load(observer)
	// A refused nodes.txt entry or redis.url leaves the mode unknown: what
	// Validate would say of the rest is then noise.
	if cfg != nil && !l.modeUnknown {
		l.errs = append(l.errs, cfg.validate(asNode)...)
	}
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}
	return cfg, nil
}

// Target returns the target that runs check on host; false when there is
// none.
func (c *Config) Target(host, check string) (Target, bool) {
	i, ok := slices.BinarySearchFunc(c.Targets, host, func(t Target, host string) int {
		return cmp.Or(strings.Compare(t.Host, host), strings.Compare(t.Check.Name, check))
	})
	if !ok {
		return Target{}, false
	}
	return c.Targets[i], true
}

type loader struct {
	dir  string // absolute
	errs Errors
	// modeUnknown is true when a nodes.txt entry or redis.url was refused,
	// so Config.Mode and the number of nodes may not be what was meant.
	modeUnknown bool
}

// checkDef is one entry of dmonitor.yaml's checks, with the nodes later
// validation points at.
type checkDef struct {
	check   *Check
	cmdList *yaml.Node   // the command list; nil when absent
	cmd     []*yaml.Node // its elements
	cmdOK   bool         // the command decoded as a list of strings
	// probe is the probe mapping, nil when absent; probeOK says it decoded
	// without error, so that building its probe is worth trying.
	probe   *yaml.Node
	probeOK bool
}

// yamlState is what validation after decoding needs to know of
// dmonitor.yaml.
type yamlState struct {
	quorum *yaml.Node // nil when absent
	// partialNotify are the elements of partial_notify; nil when absent.
	partialNotify []*yaml.Node
	pluginDir     *yaml.Node
	pluginPath    []string // nil when absent
	checks        []*checkDef
	receivers     []*Receiver // in file order
	// defaultKey is the key receivers.default; nil when absent.
	defaultKey *yaml.Node
}

// rel returns path as errors show it: relative to the config directory when
// inside it, absolute otherwise.
func (l *loader) rel(path string) string {
	r, err := filepath.Rel(l.dir, path)
	if err != nil || r == "." || r == ".." || strings.HasPrefix(r, "../") {
		return path
	}
	return r
}

// abs makes a path from the config absolute, relative to the config dir.
func (l *loader) abs(path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	return filepath.Join(l.dir, path)
}

// errorf records a problem with the file at path, at line (0: none).
func (l *loader) errorf(path string, line int, err error, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.rel(path), Line: line, Msg: fmt.Sprintf(format, args...), Err: err})
}

func (l *loader) load(observer string) *Config {
	fi, err := os.Stat(l.dir)
	if err != nil {
		l.errorf(l.dir, 0, err, "%s", ioMessage(err))
		return nil
	}
	if !fi.IsDir() {
		l.errorf(l.dir, 0, nil, "not a directory")
		return nil
	}
	cfg := &Config{
		Dir:            l.dir,
		Interval:       DefaultInterval,
		Timeout:        DefaultTimeout,
		Workers:        DefaultWorkers,
		ProbeWorkers:   DefaultProbeWorkers,
		RepeatInterval: DefaultRepeat,
		PluginDir:      filepath.Join(l.dir, DefaultPluginDir),
		DataDir:        filepath.Join(l.dir, DefaultDataDir),
		Checks:         make(map[string]*Check),
		TSDB: TSDB{
			Backend:    BackendEmbedded,
			Listen:     DefaultTSDBListen,
			Retention:  DefaultRetention,
			OutOfOrder: DefaultOutOfOrder,
			BatchSize:  DefaultBatchSize,
			SpoolSize:  DefaultSpoolSize,
		},
		Control:       Control{Listen: DefaultControlListen},
		SMTP:          SMTP{Addr: DefaultSMTPAddr, TLS: TLSStartTLS},
		Receivers:     make(map[string]*Receiver),
		Redis:         Redis{LeaseTTL: DefaultLeaseTTL},
		QuorumDomains: 1,
		Limits: Limits{
			SeriesPerCheck: DefaultSeriesPerCheck, Series: DefaultSeries,
			NewSeriesPerRequest: DefaultNewSeriesPerRequest, NewSeriesPerMinute: DefaultNewSeriesPerMinute,
			NameLength: DefaultNameLength, DiskFreePercent: DefaultDiskFreePercent,
		},
	}
	cfg.Nodes = l.readNodes()
	st := l.readYAML(cfg)

	if observer != "" {
		cfg.Observer = observer
	}
	hostname, herr := os.Hostname()
	if cfg.Observer == "" {
		if herr != nil {
			l.errorf(filepath.Join(l.dir, FileName), 0, herr, "observer is not set and the host name is unknown: %v", herr)
		}
		cfg.Observer = hostname
	}
	if cfg.SMTP.From == "" && hostname != "" {
		cfg.SMTP.From = "dmonitor@" + hostname
	}
	if st.quorum == nil {
		// With one node or none, a quorum of two could never be reached.
		cfg.Quorum = 2
		if len(cfg.Nodes) <= 1 {
			cfg.Quorum = 1
		}
	}

	l.checkPluginDir(cfg, st.pluginDir)
	cfg.PluginPath = []string{cfg.PluginDir}
	if st.pluginPath == nil {
		st.pluginPath = []string{SystemPluginDir}
	}
	for _, p := range st.pluginPath {
		cfg.PluginPath = append(cfg.PluginPath, l.abs(p))
	}

	// Every YAML check is kept, used or not, so `dmonitor check` can run it
	// against any host; plugins/ files become checks only when a host uses
	// them, so a stray file there cannot refuse the configuration.
	for _, def := range st.checks {
		l.resolveCheck(cfg, def)
		cfg.Checks[def.check.Name] = def.check
	}

	for _, u := range l.readHosts() {
		c, ok := cfg.Checks[u.check]
		if !ok {
			if c, ok = l.implicitCheck(cfg, u); !ok {
				continue
			}
			cfg.Checks[u.check] = c
		}
		cfg.Targets = append(cfg.Targets, Target{Host: u.host, Check: c})
	}

	for _, r := range st.receivers {
		cfg.Receivers[r.Name] = r
	}
	if addrs := l.readAlertDir(); len(addrs) > 0 {
		r := cfg.Receivers[DefaultReceiver]
		if r == nil {
			r = &Receiver{Name: DefaultReceiver, GroupWait: DefaultGroupWait}
			cfg.Receivers[DefaultReceiver] = r
		}
		for _, a := range addrs {
			if !slices.ContainsFunc(r.Email, func(e string) bool { return sameAddress(e, a) }) {
				r.Email = append(r.Email, a)
			}
		}
	}
	if r := cfg.Receivers[DefaultReceiver]; r != nil && !r.hasDestination() {
		// Only grouping keys in dmonitor.yaml, and no alert.d/ addresses.
		k := st.defaultKey
		l.errs = append(l.errs, &Error{File: FileName, Line: k.Line, Col: k.Column,
			Msg: join("receivers", DefaultReceiver) + ": no destination (want email, webhook, alertmanager or exec, or addresses in " + alertDir + "/)"})
		delete(cfg.Receivers, DefaultReceiver)
	}
	for i, name := range cfg.PartialNotify {
		if _, ok := cfg.Receivers[name]; !ok && name != DefaultReceiver {
			n := st.partialNotify[i]
			l.errs = append(l.errs, &Error{File: FileName, Line: n.Line, Col: n.Column,
				Msg: fmt.Sprintf("partial_notify: no receiver %q (have %s)", name, strings.Join(slices.Sorted(maps.Keys(cfg.Receivers)), ", "))})
		}
	}
	if len(cfg.PartialNotify) == 0 {
		cfg.PartialNotify = []string{DefaultReceiver}
	}
	return cfg
}

// readNodes reads nodes.txt: one node (host[:port]) per line, # starts a
// comment.
func (l *loader) readNodes() []string {
	path := filepath.Join(l.dir, nodesFile)
	before := len(l.errs)
	data, ok := l.readFile(path)
	if !ok {
		// No file is no nodes; an unreadable one leaves them unknown.
		l.modeUnknown = len(l.errs) > before
		return nil
	}
	type entry struct {
		node string
		line int
	}
	var nodes []string
	first := make(map[string]entry) // by control address: "a" and "a:2929" are one node
	for i, line := range strings.Split(string(data), "\n") {
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			l.errorf(path, i+1, nil, "want one host name per line, got %q", line)
			l.modeUnknown = true
			continue
		}
		if why := checkNode(line); why != "" {
			l.errorf(path, i+1, nil, "%s", why)
			l.modeUnknown = true
			continue
		}
		addr := PeerAddr(line)
		if e, dup := first[addr]; dup {
			if e.node == line {
				l.errorf(path, i+1, nil, "duplicate node %q (first on line %d)", line, e.line)
			} else {
				l.errorf(path, i+1, nil, "duplicate node %q: the same address as %q (line %d)", line, e.node, e.line)
			}
			continue
		}
		first[addr] = entry{line, i + 1}
		nodes = append(nodes, line)
	}
	return nodes
}

// readYAML decodes dmonitor.yaml into cfg, which holds the defaults.
func (l *loader) readYAML(cfg *Config) *yamlState {
	st := &yamlState{}
	data, ok := l.readFile(filepath.Join(l.dir, FileName))
	if !ok {
		return st
	}
	d := &decoder{file: FileName, errs: &l.errs}
	root := d.parse(data)
	if root == nil {
		return st
	}
	// Validate judges the keys that only together say whether this node
	// can alert; it points at these.
	if k := keyNode(root, "control"); k != nil {
		cfg.at.control = posOf(k)
	}
	d.mapping("", root, fields{
		"observer": func(p string, n *yaml.Node) {
			if d.str(p, n, &cfg.Observer) && cfg.Observer == "" {
				d.errorf(n, p, "must not be empty")
			}
		},
		"domain": func(p string, n *yaml.Node) {
			if d.str(p, n, &cfg.Domain) && cfg.Domain == "" {
				d.errorf(n, p, "must not be empty; leave it out for an observer that is a domain of its own")
			}
		},
		"interval": func(p string, n *yaml.Node) { d.positiveDuration(p, n, &cfg.Interval) },
		"timeout":  func(p string, n *yaml.Node) { d.positiveDuration(p, n, &cfg.Timeout) },
		"quorum": func(p string, n *yaml.Node) {
			st.quorum = n
			if d.positive(p, n, &cfg.Quorum) {
				cfg.at.quorum = posOf(n)
			}
		},
		"quorum_domains": func(p string, n *yaml.Node) {
			if d.positive(p, n, &cfg.QuorumDomains) {
				cfg.at.quorumDomains = posOf(n)
			}
		},
		"partial_notify": func(p string, n *yaml.Node) {
			if nodes, ok := d.strings(p, n, &cfg.PartialNotify); ok {
				st.partialNotify = nodes
			}
		},
		"workers":         func(p string, n *yaml.Node) { d.positive(p, n, &cfg.Workers) },
		"probe_workers":   func(p string, n *yaml.Node) { d.positive(p, n, &cfg.ProbeWorkers) },
		"repeat_interval": func(p string, n *yaml.Node) { d.duration(p, n, &cfg.RepeatInterval) },
		"plugin_dir": func(p string, n *yaml.Node) {
			if l.path(d, p, n, &cfg.PluginDir) {
				st.pluginDir = n
			}
		},
		"plugin_path": func(p string, n *yaml.Node) {
			d.strings(p, n, &st.pluginPath)
		},
		"data_dir": func(p string, n *yaml.Node) {
			if l.path(d, p, n, &cfg.DataDir) {
				if fi, exists, err := stat(cfg.DataDir); exists && (err != nil || !fi.IsDir()) {
					d.errorf(n, p, "%s: %s", l.rel(cfg.DataDir), whyNotDir(fi, err))
				}
			}
		},
		"user": func(p string, n *yaml.Node) {
			if d.str(p, n, &cfg.User) {
				if why := badUserName(cfg.User); why != "" {
					d.errorf(n, p, "%s", why)
				}
			}
		},
		"checks": func(p string, n *yaml.Node) {
			d.pairs(p, n, func(k, v *yaml.Node) {
				def := &checkDef{check: &Check{Name: k.Value}}
				cp := join(p, k.Value)
				if k.Value == "" {
					d.errorf(k, p, "empty check name")
				}
				d.mapping(cp, v, fields{
					"command": func(p string, n *yaml.Node) {
						def.cmdList = n
						def.cmd, def.cmdOK = d.strings(p, n, &def.check.Command)
					},
					"interval": func(p string, n *yaml.Node) { d.positiveDuration(p, n, &def.check.Interval) },
					"timeout":  func(p string, n *yaml.Node) { d.positiveDuration(p, n, &def.check.Timeout) },
					"quorum": func(p string, n *yaml.Node) {
						if d.positive(p, n, &def.check.Quorum) {
							if cfg.at.checkQuorum == nil {
								cfg.at.checkQuorum = make(map[string]pos)
							}
							cfg.at.checkQuorum[def.check.Name] = posOf(n)
						}
					},
					"quorum_domains": func(p string, n *yaml.Node) {
						if d.positive(p, n, &def.check.QuorumDomains) {
							if cfg.at.checkQuorumDomains == nil {
								cfg.at.checkQuorumDomains = make(map[string]pos)
							}
							cfg.at.checkQuorumDomains[def.check.Name] = posOf(n)
						}
					},
					"probe": func(p string, n *yaml.Node) {
						def.probe = n
						def.check.Probe, def.probeOK = decodeProbe(d, p, n)
					},
				})
				switch {
				case def.cmdList != nil && def.probe != nil:
					d.errorf(def.probe, cp, "command and probe both given: a check runs a plugin or a probe, not both")
					def.cmdOK, def.probeOK = false, false
				case def.cmdList == nil && def.probe == nil:
					d.errorf(k, cp, "command or probe is required")
				}
				st.checks = append(st.checks, def)
			})
		},
		"tsdb": func(p string, n *yaml.Node) {
			var backend *yaml.Node
			d.mapping(p, n, fields{
				"backend": func(p string, n *yaml.Node) {
					backend = n
					if d.str(p, n, &cfg.TSDB.Backend) && cfg.TSDB.Backend != BackendEmbedded && cfg.TSDB.Backend != BackendOpenTSDB {
						d.errorf(n, p, "unknown backend %q (want %s or %s)", cfg.TSDB.Backend, BackendEmbedded, BackendOpenTSDB)
					}
				},
				"url": func(p string, n *yaml.Node) { d.httpURL(p, n, &cfg.TSDB.URL) },
				"listen": func(p string, n *yaml.Node) {
					d.listenAddr(p, n, &cfg.TSDB.Listen)
					cfg.at.tsdbListen = posOf(n)
				},
				"insecure":     func(p string, n *yaml.Node) { d.boolean(p, n, &cfg.TSDB.Insecure) },
				"token_file":   func(p string, n *yaml.Node) { l.existingFile(d, p, n, &cfg.TSDB.TokenFile) },
				"retention":    func(p string, n *yaml.Node) { d.positiveDuration(p, n, &cfg.TSDB.Retention) },
				"out_of_order": func(p string, n *yaml.Node) { d.positiveDuration(p, n, &cfg.TSDB.OutOfOrder) },
				"batch_size":   func(p string, n *yaml.Node) { d.positive(p, n, &cfg.TSDB.BatchSize) },
				"spool_size":   func(p string, n *yaml.Node) { d.size(p, n, &cfg.TSDB.SpoolSize) },
			})
			if backend != nil && cfg.TSDB.Backend == BackendOpenTSDB && cfg.TSDB.URL == "" {
				d.errorf(backend, p, "backend %s needs a url", BackendOpenTSDB)
			}
		},
		"redis": func(p string, n *yaml.Node) {
			d.mapping(p, n, fields{
				"url": func(p string, n *yaml.Node) {
					if !d.redisURL(p, n, &cfg.Redis.URL) {
						l.modeUnknown = true
					}
				},
				"lease_ttl": func(p string, n *yaml.Node) { d.positiveDuration(p, n, &cfg.Redis.LeaseTTL) },
			})
		},
		"control": func(p string, n *yaml.Node) {
			d.mapping(p, n, fields{
				"listen": func(p string, n *yaml.Node) {
					d.listenAddr(p, n, &cfg.Control.Listen)
					cfg.at.listen = posOf(n)
				},
				"token_file": func(p string, n *yaml.Node) { l.existingFile(d, p, n, &cfg.Control.TokenFile) },
				"tls_cert_file": func(p string, n *yaml.Node) {
					l.existingFile(d, p, n, &cfg.Control.TLSCertFile)
					cfg.at.tlsCert = posOf(n)
				},
				"tls_key_file": func(p string, n *yaml.Node) {
					l.existingFile(d, p, n, &cfg.Control.TLSKeyFile)
					cfg.at.tlsCert = posOf(n)
				},
				"tls_ca_file": func(p string, n *yaml.Node) { l.existingFile(d, p, n, &cfg.Control.TLSCAFile) },
				"insecure":    func(p string, n *yaml.Node) { d.boolean(p, n, &cfg.Control.Insecure) },
			})
		},
		"limits": func(p string, n *yaml.Node) {
			d.mapping(p, n, fields{
				"series_per_check":       func(p string, n *yaml.Node) { d.positive(p, n, &cfg.Limits.SeriesPerCheck) },
				"series":                 func(p string, n *yaml.Node) { d.positive(p, n, &cfg.Limits.Series) },
				"new_series_per_request": func(p string, n *yaml.Node) { d.positive(p, n, &cfg.Limits.NewSeriesPerRequest) },
				"new_series_per_minute":  func(p string, n *yaml.Node) { d.positive(p, n, &cfg.Limits.NewSeriesPerMinute) },
				"name_length":            func(p string, n *yaml.Node) { d.positive(p, n, &cfg.Limits.NameLength) },
				"disk_free_percent": func(p string, n *yaml.Node) {
					if d.positive(p, n, &cfg.Limits.DiskFreePercent) && cfg.Limits.DiskFreePercent >= 100 {
						d.errorf(n, p, "must be below 100, got %d", cfg.Limits.DiskFreePercent)
					}
				},
				"memory": func(p string, n *yaml.Node) {
					var v int64
					if !d.size(p, n, &v) {
						return
					}
					if v < MinMemory {
						d.errorf(n, p, "must be at least 64MiB, got %s", n.Value)
						return
					}
					cfg.Limits.Memory = v
				},
			})
		},
		"smtp": func(p string, n *yaml.Node) {
			d.mapping(p, n, fields{
				"addr": func(p string, n *yaml.Node) {
					if d.str(p, n, &cfg.SMTP.Addr) {
						if _, _, err := net.SplitHostPort(cfg.SMTP.Addr); err != nil {
							d.errorf(n, p, "want host:port, got %q", cfg.SMTP.Addr)
						}
					}
				},
				"from": func(p string, n *yaml.Node) {
					if d.str(p, n, &cfg.SMTP.From) {
						if _, err := mail.ParseAddress(cfg.SMTP.From); err != nil {
							d.errorf(n, p, "invalid address %q: %v", cfg.SMTP.From, err)
						}
					}
				},
				"username": func(p string, n *yaml.Node) { d.str(p, n, &cfg.SMTP.Username) },
				"password": func(p string, n *yaml.Node) { d.str(p, n, &cfg.SMTP.Password) },
				"tls": func(p string, n *yaml.Node) {
					if d.str(p, n, &cfg.SMTP.TLS) && cfg.SMTP.TLS != TLSNone && cfg.SMTP.TLS != TLSStartTLS && cfg.SMTP.TLS != TLSImplicit {
						d.errorf(n, p, "unknown tls mode %q (want %s, %s or %s)", cfg.SMTP.TLS, TLSNone, TLSStartTLS, TLSImplicit)
					}
				},
			})
		},
		"receivers": func(p string, n *yaml.Node) {
			d.pairs(p, n, func(k, v *yaml.Node) {
				if r := l.receiver(d, join(p, k.Value), k, v); r != nil {
					st.receivers = append(st.receivers, r)
					if r.Name == DefaultReceiver {
						st.defaultKey = k
					}
				}
			})
		},
	})
	return st
}

// receiver decodes receivers.<name>. It returns nil for an unusable one.
func (l *loader) receiver(d *decoder, path string, key, n *yaml.Node) *Receiver {
	r := &Receiver{Name: key.Value, GroupWait: DefaultGroupWait}
	if r.Name == "" {
		d.errorf(key, path, "empty receiver name")
	}
	some := false     // a destination was given, well formed or not
	grouping := false // group_wait or group_by was given
	d.mapping(path, n, fields{
		"email": func(p string, n *yaml.Node) {
			some = true
			nodes, ok := d.strings(p, n, &r.Email)
			if !ok {
				return
			}
			if len(nodes) == 0 {
				d.errorf(n, p, "empty list")
			}
			for i, e := range r.Email {
				ep := fmt.Sprintf("%s[%d]", p, i)
				if _, err := mail.ParseAddress(e); err != nil {
					d.errorf(nodes[i], ep, "invalid address %q: %v", e, err)
				} else if j := slices.IndexFunc(r.Email[:i], func(o string) bool { return sameAddress(o, e) }); j >= 0 {
					d.errorf(nodes[i], ep, "duplicate address %q (first on line %d)", e, nodes[j].Line)
				}
			}
		},
		"webhook": func(p string, n *yaml.Node) {
			some = true
			r.Webhook = &Webhook{}
			d.mapping(p, n, fields{"url": func(p string, n *yaml.Node) { d.httpURL(p, n, &r.Webhook.URL) }})
			if !hasKey(n, "url") {
				d.errorf(n, p, "url is required")
			}
		},
		"alertmanager": func(p string, n *yaml.Node) {
			some = true
			r.Alertmanager = &Alertmanager{}
			d.mapping(p, n, fields{"url": func(p string, n *yaml.Node) { d.httpURL(p, n, &r.Alertmanager.URL) }})
			if !hasKey(n, "url") {
				d.errorf(n, p, "url is required")
			}
		},
		"exec": func(p string, n *yaml.Node) {
			some = true
			r.Exec = &Exec{}
			d.mapping(p, n, fields{"command": func(p string, n *yaml.Node) {
				nodes, ok := d.strings(p, n, &r.Exec.Command)
				if !ok {
					return
				}
				if len(nodes) == 0 || r.Exec.Command[0] == "" {
					d.errorf(n, p, "want a program and its arguments, got an empty command")
					return
				}
				// Not found on this node would mean a leader here could not
				// notify: refuse it now, not at the first alert.
				path, why := l.lookPath(r.Exec.Command[0], pathDirs())
				if why != "" {
					d.errorf(nodes[0], p, "%s", why)
					return
				}
				r.Exec.Command[0] = path
			}})
			if !hasKey(n, "command") {
				d.errorf(n, p, "command is required")
			}
		},
		"group_wait": func(p string, n *yaml.Node) {
			grouping = true
			var v time.Duration
			if !d.duration(p, n, &v) {
				return
			}
			if v < 0 {
				d.errorf(n, p, "must not be negative, got %s (0 sends each notification alone)", n.Value)
				return
			}
			r.GroupWait = v
		},
		"group_by": func(p string, n *yaml.Node) {
			grouping = true
			var by []string
			nodes, ok := d.strings(p, n, &by)
			if !ok {
				return
			}
			good := true
			for i, name := range by {
				ep := fmt.Sprintf("%s[%d]", p, i)
				if !labelName.MatchString(name) {
					d.errorf(nodes[i], ep, "bad label name %q (want letters, digits and _, not starting with a digit)", name)
					good = false
				} else if j := slices.Index(by[:i], name); j >= 0 {
					d.errorf(nodes[i], ep, "duplicate label %q (first on line %d)", name, nodes[j].Line)
					good = false
				}
			}
			if good && len(by) > 0 {
				r.GroupBy = by
			}
		},
	})
	if !some {
		if r.Name == DefaultReceiver && grouping {
			// How alert.d/'s mail is grouped: its addresses are judged
			// once alert.d/ is read.
			return r
		}
		d.errorf(key, path, "no destination (want email, webhook, alertmanager or exec)")
		return nil
	}
	return r
}

// hasDestination reports whether r sends anywhere.
func (r *Receiver) hasDestination() bool {
	return len(r.Email) > 0 || r.Webhook != nil || r.Alertmanager != nil || r.Exec != nil
}

// labelName is what a label name may be, as in rule files: Alertmanager's
// label syntax.
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// hasKey reports whether the mapping n has key with a non-null value.
func hasKey(n *yaml.Node, key string) bool {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return true // not a mapping at all: that error is reported already
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && !isNull(deref(n.Content[i+1])) {
			return true
		}
	}
	return false
}

// path decodes a file or directory name, relative to the config dir, into
// an absolute path.
func (l *loader) path(d *decoder, p string, n *yaml.Node, dst *string) bool {
	var s string
	if !d.str(p, n, &s) {
		return false
	}
	if s == "" {
		d.errorf(n, p, "must not be empty")
		return false
	}
	*dst = l.abs(s)
	return true
}

// checkPluginDir refuses a plugin directory that is not one. A missing one
// is no error, named in dmonitor.yaml or not: a tree of Nagios-style checks
// needs none, and a check that needs a plugin there reports it missing.
func (l *loader) checkPluginDir(cfg *Config, n *yaml.Node) {
	fi, exists, err := stat(cfg.PluginDir)
	if !exists {
		return
	}
	why := whyNotDir(fi, err)
	switch {
	case why == "":
	case n != nil:
		l.errs = append(l.errs, &Error{File: FileName, Line: n.Line, Col: n.Column,
			Msg: fmt.Sprintf("plugin_dir: %s: %s", l.rel(cfg.PluginDir), why), Err: err})
	default:
		l.errorf(cfg.PluginDir, 0, err, "%s", why)
	}
}

// resolveCheck completes a check of dmonitor.yaml: its program found, its
// defaults filled in.
func (l *loader) resolveCheck(cfg *Config, def *checkDef) {
	c := def.check
	if c.Interval == 0 {
		c.Interval = cfg.Interval
	}
	if c.Timeout == 0 {
		c.Timeout = cfg.Timeout
	}
	if c.Quorum == 0 {
		c.Quorum = cfg.Quorum
	}
	if c.QuorumDomains == 0 {
		c.QuorumDomains = cfg.QuorumDomains
	}
	if def.probeOK {
		// Built once here, with a stand-in host, so that whatever the
		// probe's own checks refuse is refused at load, with its line.
		if _, err := c.NewProbe("localhost"); err != nil {
			l.errs = append(l.errs, &Error{File: FileName, Line: def.probe.Line, Col: def.probe.Column,
				Msg: join("checks", c.Name) + ".probe: " + errors.Unwrap(err).Error(), Err: err})
		}
		return
	}
	if !def.cmdOK {
		return // missing or malformed: reported while decoding
	}
	p := join("checks", c.Name) + ".command"
	at := func(n *yaml.Node, format string, args ...any) {
		l.errs = append(l.errs, &Error{File: FileName, Line: n.Line, Col: n.Column, Msg: p + ": " + fmt.Sprintf(format, args...)})
	}
	if len(c.Command) == 0 || c.Command[0] == "" {
		at(def.cmdList, "want a plugin and its arguments, got an empty command")
		return
	}
	for i, a := range c.Command {
		if strings.Contains(strings.ReplaceAll(a, hostPlaceholder, ""), "{{") {
			at(def.cmd[i], "unknown placeholder in %q (only %s is replaced)", a, hostPlaceholder)
		}
	}
	path, why := l.lookPath(c.Command[0], cfg.PluginPath)
	if why != "" {
		at(def.cmd[0], "%s", why)
		return
	}
	c.Command[0] = path
}

// use is one hosts.d/<host>/<check> entry.
type use struct {
	host, check string
	path        string // the entry, for errors
}

// readHosts lists hosts.d/, sorted by host, then check.
func (l *loader) readHosts() []use {
	dir := filepath.Join(l.dir, hostsDir)
	var uses []use
	for _, host := range l.readDir(dir) {
		hp := filepath.Join(dir, host)
		fi, _, err := stat(hp)
		if why := whyNotDir(fi, err); why != "" {
			l.errorf(hp, 0, err, "%s (%s/ holds one directory per host)", why, hostsDir)
			continue
		}
		for _, check := range l.readDir(hp) {
			cp := filepath.Join(hp, check)
			fi, _, err := stat(cp)
			if why := whyNotFile(fi, err); why != "" {
				l.errorf(cp, 0, err, "%s (want an empty file naming a check)", why)
				continue
			}
			uses = append(uses, use{host: host, check: check, path: cp})
		}
	}
	return uses
}

// implicitCheck makes the check that plugins/check_<name> defines by being
// there. false means there is none; the problem is recorded.
func (l *loader) implicitCheck(cfg *Config, u use) (*Check, bool) {
	plugin := filepath.Join(cfg.PluginDir, pluginPrefix+u.check)
	fi, exists, err := stat(plugin)
	if !exists {
		l.errorf(u.path, 0, nil, "no plugin %s and no checks.%s in %s", l.rel(plugin), u.check, FileName)
		return nil, false
	}
	if why := whyNotProgram(fi, err); why != "" {
		// Reported once per plugin, not once per host using it.
		if !slices.ContainsFunc(l.errs, func(e *Error) bool { return e.File == l.rel(plugin) }) {
			l.errorf(plugin, 0, err, "check %q: %s", u.check, why)
		}
		return nil, false
	}
	return &Check{
		Name:          u.check,
		Command:       []string{plugin, hostPlaceholder},
		Interval:      cfg.Interval,
		Timeout:       cfg.Timeout,
		Quorum:        cfg.Quorum,
		QuorumDomains: cfg.QuorumDomains,
		Implicit:      true,
	}, true
}

// readAlertDir lists the addresses of alert.d/.
func (l *loader) readAlertDir() []string {
	dir := filepath.Join(l.dir, alertDir)
	var addrs []string
	for _, name := range l.readDir(dir) {
		p := filepath.Join(dir, name)
		fi, _, err := stat(p)
		if why := whyNotFile(fi, err); why != "" {
			l.errorf(p, 0, err, "%s (want an empty file named for an email address)", why)
			continue
		}
		a, err := mail.ParseAddress(name)
		switch {
		case err != nil:
			l.errorf(p, 0, err, "file name is not an email address: %v", err)
		case a.Name != "" || a.Address != name:
			l.errorf(p, 0, nil, "file name is not a bare email address (want e.g. ops@example.org)")
		default:
			addrs = append(addrs, name)
		}
	}
	return addrs
}

// readDir returns the names in the optional directory dir, sorted, leaving
// out those starting with a dot.
func (l *loader) readDir(dir string) []string {
	fi, exists, err := stat(dir)
	if !exists {
		return nil
	}
	if why := whyNotDir(fi, err); why != "" {
		l.errorf(dir, 0, err, "%s", why)
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		l.errorf(dir, 0, err, "%s", ioMessage(err))
		return nil
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// readFile reads the optional regular file at path. false means there is
// nothing to use: no file, or a problem that is recorded.
func (l *loader) readFile(path string) ([]byte, bool) {
	fi, exists, err := stat(path)
	if !exists {
		return nil, false
	}
	// A named pipe would block the read forever: look before reading.
	if why := whyNotFile(fi, err); why != "" {
		l.errorf(path, 0, err, "%s", why)
		return nil, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		l.errorf(path, 0, err, "%s", ioMessage(err))
		return nil, false
	}
	return data, true
}

// lookPath finds the program name: a name with a slash is a path, absolute
// or relative to the config dir; a bare name is looked up in dirs, the first
// match winning even when it cannot run, so shadowing is never silent. It
// returns the absolute path, or why there is none.
func (l *loader) lookPath(name string, dirs []string) (path, why string) {
	var tried []string
	if strings.Contains(name, "/") {
		tried = []string{l.abs(name)}
	} else {
		for _, dir := range dirs {
			tried = append(tried, filepath.Join(dir, name))
		}
	}
	for _, p := range tried {
		fi, exists, err := stat(p)
		if !exists {
			continue
		}
		if why := whyNotProgram(fi, err); why != "" {
			return "", l.rel(p) + ": " + why
		}
		return p, ""
	}
	shown := make([]string, len(tried))
	for i, p := range tried {
		shown[i] = l.rel(p)
	}
	return "", fmt.Sprintf("%s not found (tried %s)", name, strings.Join(shown, ", "))
}

// pathDirs returns the directories of $PATH, where a bare exec command is
// looked up.
func pathDirs() []string {
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// stat stats path, following symbolic links. exists is false only when
// there is nothing at path; a broken symbolic link exists, with an error.
func stat(path string) (fi fs.FileInfo, exists bool, err error) {
	fi, err = os.Stat(path)
	if err == nil {
		return fi, true, nil
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return nil, true, err
	}
	if _, lerr := os.Lstat(path); lerr != nil {
		return nil, false, nil
	}
	target, _ := os.Readlink(path)
	return nil, true, &brokenLinkError{target: target, err: err}
}

// brokenLinkError is stat's error for a symbolic link to nothing.
type brokenLinkError struct {
	target string
	err    error
}

func (e *brokenLinkError) Error() string { return "broken symbolic link to " + e.target }
func (e *brokenLinkError) Unwrap() error { return e.err }

// whyNotFile says why fi (or err, from stat) is not a regular file; "" when
// it is one.
func whyNotFile(fi fs.FileInfo, err error) string {
	if err != nil {
		return statMessage(err)
	}
	if !fi.Mode().IsRegular() {
		return "is " + kind(fi) + ", not a regular file"
	}
	return ""
}

// whyNotDir says why fi (or err, from stat) is not a directory; "" when it
// is one.
func whyNotDir(fi fs.FileInfo, err error) string {
	if err != nil {
		return statMessage(err)
	}
	if !fi.IsDir() {
		return "is " + kind(fi) + ", not a directory"
	}
	return ""
}

// whyNotProgram says why fi (or err, from stat) cannot be executed; "" when
// it can.
func whyNotProgram(fi fs.FileInfo, err error) string {
	if why := whyNotFile(fi, err); why != "" {
		return why
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Sprintf("is not executable (mode %v)", fi.Mode().Perm())
	}
	return ""
}

// statMessage describes an error of stat without the path.
func statMessage(err error) string {
	var bl *brokenLinkError
	if errors.As(err, &bl) {
		return bl.Error()
	}
	return ioMessage(err)
}

// kind names the file type of fi, with its article.
func kind(fi fs.FileInfo) string {
	switch m := fi.Mode(); {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a file"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}

// sameAddress reports whether two email addresses name the same mailbox,
// ignoring case as every mail system in practice does.
func sameAddress(a, b string) bool {
	pa, err1 := mail.ParseAddress(a)
	pb, err2 := mail.ParseAddress(b)
	if err1 != nil || err2 != nil {
		return strings.EqualFold(a, b)
	}
	return strings.EqualFold(pa.Address, pb.Address)
}

// httpURL decodes an http or https URL.
func (d *decoder) httpURL(path string, n *yaml.Node, dst *string) {
	var s string
	if !d.str(path, n, &s) {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		d.errorf(n, path, "want an http or https URL, got %q", s)
		return
	}
	*dst = s
}

// existingFile decodes the path of a file that must exist.
func (l *loader) existingFile(d *decoder, path string, n *yaml.Node, dst *string) {
	if !l.path(d, path, n, dst) {
		return
	}
	if fi, exists, err := stat(*dst); !exists {
		d.errorf(n, path, "%s does not exist", l.rel(*dst))
	} else if why := whyNotFile(fi, err); why != "" {
		d.errorf(n, path, "%s: %s", l.rel(*dst), why)
	}
}

// redisURL decodes a URL of the forms go-redis accepts; false when it
// refused n.
func (d *decoder) redisURL(path string, n *yaml.Node, dst *string) bool {
	var s string
	if !d.str(path, n, &s) {
		return false
	}
	if !redisURLOK(s) {
		d.errorf(n, path, "want a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL, got %q", s)
		return false
	}
	*dst = s
	return true
}

// redisURLOK says whether s has the shape of a URL lock/redislease
// connects with. The Sentinel form lists several hosts, which net/url
// refuses, so it is checked by hand: sentinels, then the master's name.
func redisURLOK(s string) bool {
	scheme, rest, _ := strings.Cut(s, "://")
	switch scheme {
	case "redis+sentinel", "rediss+sentinel":
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			rest = rest[i+1:]
		}
		hosts, master, _ := strings.Cut(rest, "/")
		master, _, _ = strings.Cut(master, "?")
		master, _, _ = strings.Cut(master, "/")
		return hosts != "" && master != ""
	}
	u, err := url.Parse(s)
	return err == nil && ((u.Scheme == "redis" || u.Scheme == "rediss") && u.Host != "" || u.Scheme == "unix" && u.Path != "")
}

// listenAddr decodes a host:port to listen on; "" is kept: it turns the
// server off.
func (d *decoder) listenAddr(path string, n *yaml.Node, dst *string) {
	var s string
	if !d.str(path, n, &s) {
		return
	}
	if s != "" {
		if _, _, err := net.SplitHostPort(s); err != nil {
			d.errorf(n, path, "want host:port, or \"\" for off, got %q", s)
			return
		}
	}
	*dst = s
}

// badUserName says why name cannot be an account of the host's user
// database (passwd(5): no colon, no slash, no white space, no leading dash,
// not empty), or "" when it can. Whether the account exists is the host's
// business, judged when the daemon starts: a configuration is often
// checked on another machine.
func badUserName(name string) string {
	switch {
	case name == "":
		return "must not be empty (leave user: out for the default, " + DefaultUser + ")"
	case name[0] == '-':
		return fmt.Sprintf("%q: an account name cannot start with '-'", name)
	case strings.ContainsAny(name, ":/ \t\n\r"):
		return fmt.Sprintf("%q: an account name has no ':', '/' or white space", name)
	}
	return ""
}
