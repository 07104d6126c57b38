package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// pos is a line and column of dmonitor.yaml; the zero pos is no position.
type pos struct{ line, col int }

func posOf(n *yaml.Node) pos { return pos{n.Line, n.Column} }

// positions are where dmonitor.yaml set the keys Validate judges.
type positions struct {
	quorum      pos            // the value of quorum
	checkQuorum map[string]pos // the value of checks.<name>.quorum, by check name; nil when none is set
	// quorumDomains and checkQuorumDomains are quorum and checkQuorum's
	// counterparts for quorum_domains.
	quorumDomains      pos
	checkQuorumDomains map[string]pos
	control            pos // the control key
	listen             pos // the value of control.listen
	tsdbListen         pos // the value of tsdb.listen
	tlsCert            pos // the value of control.tls_cert_file or tls_key_file
}

// Validate checks what only the keys together decide: that this
// configuration can ever alert, as the node named Observer. It refuses
//
//   - an Observer missing from a non-empty Nodes: the node would never
//     find itself among its peers;
//   - peer mode (Mode) without control.token_file, or with control.listen
//     "": peers talk over the control port, authenticated with the shared
//     bearer token;
//   - a quorum, global or a check's, above the observers that can ever
//     report: the nodes of nodes.txt, or this node alone when nodes.txt
//     lists none and redis.url is not set (with redis.url and no nodes.txt,
//     observers join through Redis and any quorum may be reached). A
//     check's quorum equal to the global one is reported with it.
//
// Load makes the same checks but the first, and LoadAs all of them; call
// Validate again after changing a Config, as after overriding Observer. It returns nil or Errors,
// positioned as Load's are when c came from Load. An empty Observer is not
// judged: Load reports why it has none.
func (c *Config) Validate() error {
	if errs := c.validate(true); len(errs) > 0 {
		return errs
	}
	return nil
}

// validate makes Validate's checks, the observer's only when asNode.
func (c *Config) validate(asNode bool) Errors {
	var errs Errors
	at := func(file string, p pos, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: p.line, Col: p.col, Msg: fmt.Sprintf(format, args...)})
	}

	if asNode && len(c.Nodes) > 0 && c.Observer != "" && !slices.Contains(c.Nodes, c.Observer) {
		at(nodesFile, pos{}, "this observer %q is not listed (nodes: %s): add it, or set observer: in %s (or --observer) to its entry",
			c.Observer, strings.Join(c.Nodes, ", "), FileName)
	}

	if c.Mode() == ModePeer {
		peers := fmt.Sprintf("the %d nodes of %s coordinate as peers (no redis.url)", len(c.Nodes), nodesFile)
		if c.Control.TokenFile == "" {
			at(FileName, c.at.control, "control.token_file is not set, but %s, which authenticate with the shared bearer token: "+
				"set control.token_file (the same file on every node), or redis.url", peers)
		}
		if c.Control.Listen == "" {
			at(FileName, c.at.listen, "control.listen is \"\" (off), but %s over the control port: "+
				"set control.listen to an address the other nodes reach, or redis.url", peers)
		}
	}

	if c.Control.Listen != "" && !loopback(c.Control.Listen) && c.Control.TokenFile == "" && !c.Control.Insecure {
		at(FileName, c.at.listen, "control.listen %s is reachable from beyond this host and control.token_file is not set, "+
			"so anyone who reaches it could silence and acknowledge alerts: set control.token_file, listen on 127.0.0.1, "+
			"or set control.insecure: true to accept that", c.Control.Listen)
	}
	if c.TSDB.Backend == BackendEmbedded && c.TSDB.Listen != "" && !loopback(c.TSDB.Listen) && c.Control.TokenFile == "" && !c.TSDB.Insecure {
		at(FileName, c.at.tsdbListen, "tsdb.listen %s is reachable from beyond this host and control.token_file is not set, "+
			"so anyone who reaches it could write to the store: set control.token_file (writers then send it as a bearer token), "+
			"listen on 127.0.0.1, or set tsdb.insecure: true to accept that", c.TSDB.Listen)
	}
	if (c.Control.TLSCertFile == "") != (c.Control.TLSKeyFile == "") {
		at(FileName, c.at.tlsCert, "control.tls_cert_file and control.tls_key_file go together: set both, or neither")
	}

	if most, bounded := c.maxObservers(); bounded {
		tooMany := func(path string, p pos, quorum int) {
			if len(c.Nodes) == 0 {
				at(FileName, p, "%s: %d is more than the one observer there can be with no nodes in %s and no redis.url: "+
					"list the observers in %s, or lower %s", path, quorum, nodesFile, nodesFile, path)
				return
			}
			at(FileName, p, "%s: %d is more than the %s in %s: list every observer in %s, or lower %s",
				path, quorum, plural(most, "node"), nodesFile, nodesFile, path)
		}
		// Every domain needs an observer of its own.
		if c.Quorum > most {
			tooMany("quorum", c.at.quorum, c.Quorum)
		}
		if c.QuorumDomains > most {
			tooMany("quorum_domains", c.at.quorumDomains, c.QuorumDomains)
		}
		for _, name := range slices.Sorted(maps.Keys(c.Checks)) {
			ch := c.Checks[name]
			p, explicit := c.at.checkQuorum[name]
			if ch.Quorum > most && (explicit || ch.Quorum != c.Quorum) {
				tooMany(join("checks", name)+".quorum", p, ch.Quorum)
			}
			p, explicit = c.at.checkQuorumDomains[name]
			if ch.QuorumDomains > most && (explicit || ch.QuorumDomains != c.QuorumDomains) {
				tooMany(join("checks", name)+".quorum_domains", p, ch.QuorumDomains)
			}
		}
	}

	errs.sort()
	return errs
}

// OverrideListen replaces control.listen and tsdb.listen with what the
// command line gives (nil keeps the configuration's; "" turns the server
// off), then validates the result again. Errors about the addresses carry
// no line of dmonitor.yaml: the value came from the flag.
func (c *Config) OverrideListen(control, tsdbAddr *string) error {
	for _, o := range []struct {
		flag string
		v    *string
		dst  *string
		at   *pos
	}{{"--control-listen", control, &c.Control.Listen, &c.at.listen}, {"--tsdb-listen", tsdbAddr, &c.TSDB.Listen, &c.at.tsdbListen}} {
		if o.v == nil {
			continue
		}
		if *o.v != "" {
			if _, _, err := net.SplitHostPort(*o.v); err != nil {
				return fmt.Errorf("%s: want host:port, or \"\" for off, got %q", o.flag, *o.v)
			}
		}
		*o.dst, *o.at = *o.v, pos{}
	}
	return c.Validate()
}

// loopback says whether the listen address addr is reachable from this
// host only: a loopback IP or "localhost". An empty host, 0.0.0.0, :: and
// any other name listen beyond it.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// maxObservers returns how many observers can ever report a result; false
// when there is no bound, observers joining through Redis.
func (c *Config) maxObservers() (int, bool) {
	switch {
	case len(c.Nodes) > 0:
		return len(c.Nodes), true
	case c.Redis.URL != "":
		return 0, false
	}
	return 1, true
}

// plural writes n and noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// checkNode says what is wrong with the nodes.txt entry s; "" when it is a
// host or an IPv6 address, with or without a port: "eu-1", "eu-1:2930",
// "::1", "[::1]", "[::1]:2930". Host names are otherwise free-form.
func checkNode(s string) string {
	const want = "want host, host:port, or an IPv6 address, in brackets with a port ([::1]:2930)"
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port, or a malformed one.
		host = s
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
			if !isIPv6(host) {
				return fmt.Sprintf("node %q: %s", s, want)
			}
		}
		if strings.ContainsAny(host, "[]") || strings.Contains(host, ":") && !isIPv6(host) {
			return fmt.Sprintf("node %q: %s", s, want)
		}
		return ""
	}
	switch {
	case host == "":
		return fmt.Sprintf("node %q: no host before the port (%s)", s, want)
	case strings.HasPrefix(s, "[") && !isIPv6(host), strings.ContainsAny(host, "[]"):
		return fmt.Sprintf("node %q: %s", s, want)
	}
	// strconv.Atoi would take a sign: only digits are a port.
	n, err := strconv.Atoi(port)
	if err != nil || strings.TrimLeft(port, "0123456789") != "" || n < 1 || n > 65535 {
		return fmt.Sprintf("node %q: want a port from 1 to 65535, got %q", s, port)
	}
	return ""
}

// isIPv6 reports whether s is an IPv6 address, with or without a zone.
func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

// keyNode returns the key node of key in the mapping n; nil when n is no
// mapping or has no such key.
func keyNode(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := deref(n.Content[i]); k.Kind == yaml.ScalarNode && k.Value == key {
			return k
		}
	}
	return nil
}
