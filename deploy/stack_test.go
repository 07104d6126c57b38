package deploy_test

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dmonitor/dmonitor/config"
)

// Paths of the stack's files, relative to this directory (go test runs in
// it).
const (
	composeFile     = "../docker-compose.yml"
	dockerfile      = "../Dockerfile"
	stackConfigDir  = "dmonitor"
	imageConfigDir  = "image"
	datasourceFile  = "grafana/provisioning/datasources/opentsdb.yaml"
	dashboardsDir   = "grafana/provisioning/dashboards"
	dashboardFile   = dashboardsDir + "/dmonitor.json"
	providerFile    = dashboardsDir + "/dmonitor.yaml"
	composeRepoRoot = ".." // what a relative path in docker-compose.yml is relative to
)

// compose is the part of docker-compose.yml the tests look at.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string            `yaml:"image"`
	Platform    string            `yaml:"platform"`
	Build       any               `yaml:"build"`
	Hostname    string            `yaml:"hostname"`
	Command     []string          `yaml:"command"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	Networks    map[string]struct {
		Aliases []string `yaml:"aliases"`
	} `yaml:"networks"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// flag returns the value of --name in the service's command; "" when absent.
func (s service) flag(name string) string {
	for i, a := range s.Command {
		if a == name && i+1 < len(s.Command) {
			return s.Command[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// names returns every name the service answers to on the compose network.
func (s service) names(key string) []string {
	n := []string{key}
	if s.Hostname != "" {
		n = append(n, s.Hostname)
	}
	for _, net := range s.Networks {
		n = append(n, net.Aliases...)
	}
	return n
}

// mount is one volume entry of a service, short syntax.
type mount struct {
	source, target string
	readOnly       bool
}

func (s service) mounts(t *testing.T) []mount {
	t.Helper()
	var ms []mount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			t.Fatalf("%s: volume %q: want source:target[:mode]", composeFile, v)
		}
		ms = append(ms, mount{source: parts[0], target: parts[1], readOnly: len(parts) == 3 && parts[2] == "ro"})
	}
	return ms
}

// hostPath returns the repository file or directory that the container path
// p is, through the service's bind mounts; false when none covers it.
func (s service) hostPath(t *testing.T, p string) (string, bool) {
	t.Helper()
	for _, m := range s.mounts(t) {
		if !strings.HasPrefix(m.source, ".") {
			continue // a named volume
		}
		if rest, ok := strings.CutPrefix(p, m.target); ok && (rest == "" || rest[0] == '/') {
			return filepath.Join(composeRepoRoot, m.source, rest), true
		}
	}
	return "", false
}

func readCompose(t *testing.T) *compose {
	t.Helper()
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return &c
}

// evaluators returns the dmonitor services: those that run `dmonitor run`.
func (c *compose) evaluators() map[string]service {
	ev := make(map[string]service)
	for name, s := range c.Services {
		if len(s.Command) > 0 && s.Command[0] == "run" {
			ev[name] = s
		}
	}
	return ev
}

// resolves reports whether host is a name some service answers to.
func (c *compose) resolves(host string) bool {
	for key, s := range c.Services {
		for _, n := range s.names(key) {
			if n == host {
				return true
			}
		}
	}
	return false
}

// loadConfig loads a configuration tree as the stack's first evaluator
// (eu-1) does, failing the test with every problem it names.
func loadConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	// The stack's checks are Debian's plugins, as in the image; without the
	// package every check would be refused, which says nothing of the files.
	if _, err := os.Stat(filepath.Join(config.SystemPluginDir, "check_http")); err != nil {
		t.Fatalf("Debian's monitoring-plugins are not installed (%v); run `make test`, which installs monitoring-plugins-basic", err)
	}
	cfg, err := config.LoadAs(dir, "eu-1")
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			t.Fatalf("config.LoadAs(%s, eu-1) refused it:\n%v", dir, err)
		}
		t.Fatalf("config.LoadAs(%s, eu-1): %v", dir, err)
	}
	return cfg
}

// urlHostPort returns the host and port of a URL, or of a host:port.
func urlHostPort(t *testing.T, s string) (host, port string) {
	t.Helper()
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("%q: want an address with a port: %v", s, err)
	}
	return host, port
}
