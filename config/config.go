// Package config reads the dmonitor configuration tree (nodes.txt, hosts.d/,
// alert.d/, plugins/, dmonitor.yaml) into one validated Config. Loading is
// all or nothing: a tree that cannot work is refused with every problem
// listed, each naming its file and, for YAML, its line.
package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/probe"
)

// Defaults that apply when dmonitor.yaml does not say otherwise.
const (
	DefaultInterval = 60 * time.Second
	DefaultTimeout  = 10 * time.Second
	DefaultWorkers  = 64
	// DefaultProbeWorkers bounds the probes waiting on their targets at
	// once: a probe holds a socket and a goroutine, not a process, and
	// when targets stop answering each one holds them for its whole
	// timeout, so the bound is larger than the plugins'.
	DefaultProbeWorkers  = 1024
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultOutOfOrder    = 7 * 24 * time.Hour
	DefaultRepeat        = 4 * time.Hour // re-notify a firing alert, as Alertmanager's repeat_interval
	DefaultBatchSize     = 50            // points per /api/put
	DefaultSpoolSize     = 256 << 20     // bytes
	DefaultTSDBListen    = "127.0.0.1:4242"
	DefaultControlListen = "127.0.0.1:2929"
	DefaultSMTPAddr      = "127.0.0.1:25"
	DefaultReceiver      = "default" // the receiver alert.d/ feeds
	// DefaultGroupWait is a receiver's group_wait: short, so that what
	// starts at once goes out together and a page is late by a second at
	// most.
	DefaultGroupWait    = time.Second
	DefaultPeerPort     = 2929       // the control port of a nodes.txt entry without one, as the original dmonitor's
	DefaultUser         = "dmonitor" // the account a daemon started as root runs as, as the Debian package adds it
	DefaultFallbackUser = "nobody"   // when DefaultUser does not exist on this host
	FileName            = "dmonitor.yaml"
	hostPlaceholder     = "{{host}}"
)

// Config is a loaded, validated configuration. Every path in it is absolute.
type Config struct {
	Dir      string // the config directory
	Observer string // this node's name
	// Domain is this observer's failure domain (dmonitor.yaml's domain:
	// a region, provider or network), carried in its results; "" when it
	// declares none, and it is then a domain of its own.
	Domain string
	// Nodes are the entries of nodes.txt, in file order, as written. Each
	// is host[:port] ("eu-1", "127.0.0.1:2930", "[::1]:2931", or a bare
	// IPv6 address such as "::1"): PeerAddr gives its control address, and
	// the entry itself is the observer name of the node it lists. Load
	// refuses a port outside 1..65535, two entries with one address and,
	// when the list is not empty, an Observer that is not in it.
	Nodes         []string
	Interval      time.Duration // default check interval
	Timeout       time.Duration // default plugin timeout
	Quorum        int           // default quorum
	QuorumDomains int           // default quorum_domains: failure domains that must see an outage; 1 when not set
	// PartialNotify are the receivers of the partial-outage alert
	// (partial_notify:), which a check with quorum_domains above 1 raises
	// when some domains see it failing but too few; [DefaultReceiver]
	// when not set.
	PartialNotify  []string
	Workers        int           // concurrent plugin runs
	ProbeWorkers   int           // concurrent probe runs
	RepeatInterval time.Duration // re-notify a firing, unacknowledged alert this often; 0 never
	PluginDir      string
	DataDir        string
	// User is the account `dmonitor run` switches to when started as root
	// (dmonitor.yaml's user:), before it opens the data directory or runs a
	// plugin. "" is DefaultUser, or DefaultFallbackUser when this host has
	// no such account; "root" keeps root. A name set explicitly must exist
	// when the daemon starts. Ignored when the daemon is not started as root.
	User string
	// PluginPath is where a check command without a slash is looked up, in
	// order: PluginDir, then dmonitor.yaml's plugin_path (by default
	// SystemPluginDir).
	PluginPath []string
	Checks     map[string]*Check // by name: every check of dmonitor.yaml, and each plugins/ check a target uses
	Targets    []Target          // host×check pairs, sorted by host then check
	TSDB       TSDB
	Control    Control
	SMTP       SMTP
	Receivers  map[string]*Receiver // by name; "default" holds alert.d/
	Redis      Redis
	Limits     Limits

	// at is where dmonitor.yaml set the keys Validate judges, so that its
	// errors point there; zero for a key not set and for a Config that
	// Load did not read.
	at positions
}

// Mode is how the nodes of a configuration coordinate; see docs/ARCHITECTURE.md.
type Mode string

// The coordination modes, as Config.Mode chooses them.
const (
	ModeLocal Mode = "local" // no redis.url, and nodes.txt lists one node or none
	ModeRedis Mode = "redis" // redis.url set
	ModePeer  Mode = "peer"  // no redis.url, two or more nodes in nodes.txt
)

// Mode returns how this node coordinates with the others: ModeRedis when
// redis.url is set, else ModePeer when nodes.txt lists two nodes or more,
// else ModeLocal. A Config from Load holds what its mode needs: a peer
// mode's control server and token.
func (c *Config) Mode() Mode {
	switch {
	case c.Redis.URL != "":
		return ModeRedis
	case len(c.Nodes) >= 2:
		return ModePeer
	}
	return ModeLocal
}

// PeerAddr returns the control address (host:port) of a nodes.txt entry:
// the entry itself when it has a port, else the entry with DefaultPeerPort
// (the original dmonitor's control port). An IPv6 address is written
// [::1]:2930 with a port, and bare (::1) or in brackets ([::1]) without,
// which gives [::1]:2929. PeerAddr does not validate: Load refuses a bad
// entry, such as a port outside 1..65535, before anything calls it.
func PeerAddr(entry string) string {
	if _, _, err := net.SplitHostPort(entry); err == nil {
		return entry
	}
	host := entry
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return net.JoinHostPort(host, strconv.Itoa(DefaultPeerPort))
}

// Check is one check definition: a plugin and its arguments, or an
// in-process probe.
type Check struct {
	Name string
	// Command is the argv of a plugin check; Command[0] is the plugin's
	// absolute path; {{host}} not yet expanded. Nil for a probe check.
	Command []string
	// Probe describes a probe check (checks.<name>.probe); nil for a
	// plugin check. A check is one or the other, never both.
	Probe         *ProbeSpec
	Interval      time.Duration
	Timeout       time.Duration
	Quorum        int
	QuorumDomains int
	// Implicit is true for a check defined only by plugins/check_<name>,
	// which is run with the host as its single argument.
	Implicit bool
}

// Argv returns the command line for host: Command with every {{host}}
// replaced by host.
func (c *Check) Argv(host string) []string {
	argv := make([]string, len(c.Command))
	for i, a := range c.Command {
		argv[i] = strings.ReplaceAll(a, hostPlaceholder, host)
	}
	return argv
}

// The probe types of ProbeSpec.Type.
const (
	ProbeTCP  = "tcp"
	ProbeTLS  = "tls"
	ProbeHTTP = "http"
	ProbeDNS  = "dns"
	ProbeICMP = "icmp"
)

// ProbeSpec is a check that package probe runs in-process instead of a
// plugin. The options of the probe of Type are filled in, the others are
// zero; their Host, ServerName, URL, Name and Server may hold {{host}},
// and their Timeout is unset: the check's Timeout applies
// (Check.NewProbe).
type ProbeSpec struct {
	Type string // ProbeTCP, ProbeTLS, ProbeHTTP, ProbeDNS or ProbeICMP
	TCP  probe.TCP
	TLS  probe.TLS
	HTTP probe.HTTP
	DNS  probe.DNS
	ICMP probe.ICMP
}

// NewProbe returns the probe of a probe check for host: its options with
// every {{host}} replaced by host and the check's timeout. Load has built
// it once already, so for a loaded Config only a host that makes a bad
// address (a URL that no longer parses) can fail it.
func (c *Check) NewProbe(host string) (probe.Probe, error) {
	s := c.Probe
	if s == nil {
		return nil, fmt.Errorf("check %s: not a probe check", c.Name)
	}
	x := func(v string) string { return strings.ReplaceAll(v, hostPlaceholder, host) }
	var (
		p   probe.Probe
		err error
	)
	switch s.Type {
	case ProbeTCP:
		o := s.TCP
		o.Host, o.Timeout = x(o.Host), c.Timeout
		p, err = probe.NewTCP(o)
	case ProbeTLS:
		o := s.TLS
		o.Host, o.ServerName, o.Timeout = x(o.Host), x(o.ServerName), c.Timeout
		p, err = probe.NewTLS(o)
	case ProbeHTTP:
		o := s.HTTP
		o.URL, o.Timeout = x(o.URL), c.Timeout
		p, err = probe.NewHTTP(o)
	case ProbeDNS:
		o := s.DNS
		o.Name, o.Server, o.Timeout = x(o.Name), x(o.Server), c.Timeout
		p, err = probe.NewDNS(o)
	case ProbeICMP:
		o := s.ICMP
		o.Host, o.Timeout = x(o.Host), c.Timeout
		p, err = probe.NewICMP(o)
	default:
		err = fmt.Errorf("unknown probe type %q", s.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("check %s on %s: %w", c.Name, host, err)
	}
	return p, nil
}

// Target is one check to run against one host.
type Target struct {
	Host  string
	Check *Check
}

// TSDB configures the time-series store.
type TSDB struct {
	Backend    string        // "embedded" or "opentsdb"
	URL        string        // opentsdb backend
	Listen     string        // embedded store's OpenTSDB API address; "" turns it off
	Retention  time.Duration // embedded store
	OutOfOrder time.Duration // how old a late write may be and still be accepted
	BatchSize  int           // opentsdb backend: points per /api/put request
	SpoolSize  int64         // opentsdb backend: bytes the spool may hold while OpenTSDB is down
	// Insecure accepts writes to a non-loopback Listen from anyone when
	// control.token_file is not set.
	Insecure bool
	// TokenFile, for the opentsdb backend, holds a bearer token sent with
	// every request: the control token of the dmonitor node whose API URL
	// names, or an authenticating proxy's.
	TokenFile string
}

// Control configures the control HTTP server.
type Control struct {
	Listen    string // "" turns it off
	TokenFile string
	// TLSCertFile and TLSKeyFile, both set, make the control port serve
	// HTTPS, and the peers call each other over it.
	TLSCertFile, TLSKeyFile string
	// TLSCAFile verifies the peers' certificates; "" uses the system's
	// roots.
	TLSCAFile string
	// Insecure accepts a non-loopback Listen without TokenFile: anyone who
	// reaches the port may silence and acknowledge.
	Insecure bool
}

// Limits bound what plugins and writers of the OpenTSDB API can make the
// node hold. Each is positive.
type Limits struct {
	// SeriesPerCheck bounds the perfdata labels stored per host×check;
	// a plugin printing new labels on every run stops growing the store
	// there.
	SeriesPerCheck int
	// Series bounds the series of the embedded store.
	Series int
	// NewSeriesPerRequest and NewSeriesPerMinute bound the series the
	// embedded store's OpenTSDB API may create.
	NewSeriesPerRequest, NewSeriesPerMinute int
	// NameLength bounds a metric name, tag key or tag value in bytes.
	NameLength int
	// DiskFreePercent is the share of the data directory's file system
	// under which the node alerts that its disk is nearly full.
	DiskFreePercent int
	// Memory is the Go runtime's soft memory limit in bytes (GOMEMLIMIT),
	// 0 when not configured: then 90% of the cgroup's memory limit when
	// there is one, else none. GOMEMLIMIT in the environment wins over
	// both. At least MinMemory.
	Memory int64
}

// MinMemory is the least limits.memory accepted: an idle daemon takes 30
// MiB, and a limit under its live data makes the collector run without
// pause.
const MinMemory = 64 << 20

// Default limits.
const (
	DefaultSeriesPerCheck      = 100
	DefaultSeries              = 1_000_000
	DefaultNewSeriesPerRequest = 10_000
	DefaultNewSeriesPerMinute  = 50_000
	DefaultNameLength          = 256
	DefaultDiskFreePercent     = 5
)

// SMTP configures outgoing mail.
type SMTP struct {
	Addr     string // host:port
	From     string
	Username string
	Password string
	// TLS is "none" (plain, for a local relay), "starttls" (opportunistic
	// STARTTLS, the default) or "tls" (implicit TLS, port 465).
	TLS string
}

// Receiver is a named destination for notifications.
type Receiver struct {
	Name  string
	Email []string // RFC 5322 addresses, as written; nil when the receiver sends no mail
	// The other destinations; nil when the receiver does not use them.
	Webhook      *Webhook
	Alertmanager *Alertmanager
	Exec         *Exec
	// GroupWait is how long the first notification of a group waits for
	// others to join it, so that they go out as one message (one mail, one
	// webhook call); 0 sends each alone, at once. DefaultGroupWait unless
	// dmonitor.yaml says otherwise. exec sends each alone whatever it is.
	GroupWait time.Duration
	// GroupBy names the labels the notifications of one message share
	// ("alertname" is the rule); nil: any notifications of the receiver
	// may go out together.
	GroupBy []string
}

// Webhook posts Alertmanager's webhook payload (version 4) to URL.
type Webhook struct {
	URL string // http or https
}

// Alertmanager sends alerts to a Prometheus Alertmanager's API at URL.
type Alertmanager struct {
	URL string // the Alertmanager's base URL, http or https
}

// Exec runs a command for each notification.
type Exec struct {
	Command []string // argv; Command[0] is an absolute path
}

// Redis configures the shared state of a multi-node setup: the leader lease
// and the alert state. An empty URL means a single node with a local lease.
type Redis struct {
	URL      string // redis://, rediss:// or unix://
	LeaseTTL time.Duration
}
