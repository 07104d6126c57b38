package deploy_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// composeTool returns the command that validates compose files: `docker
// compose` (v2) when the docker CLI has it, else Debian's docker-compose
// 1.29. Neither needs a Docker engine to run `config`.
func composeTool(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
			return []string{"docker", "compose"}
		}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	t.Fatalf("neither `docker compose` nor `docker-compose` is installed: run `make test`, which installs Debian's docker-compose")
	return nil
}

// TestComposeConfig validates docker-compose.yml the way `docker compose up`
// would before starting anything, and shows on a broken file that the tool
// really refuses what is wrong.
func TestComposeConfig(t *testing.T) {
	tool := composeTool(t)
	tests := []struct {
		file    string
		wantErr string // "" when the file must be valid
	}{
		// The stack itself.
		{file: composeFile},
		// A dependency on a service that does not exist: refused, so a
		// pass above means something.
		{file: "testdata/compose/undefined-dependency.bad.yml", wantErr: "undefined"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			args := append(slices.Clone(tool[1:]), "-f", tt.file, "config", "-q")
			cmd := exec.CommandContext(ctx, tool[0], args...)
			// A value set in the caller's environment must not decide
			// the outcome; the file says what it needs.
			cmd.Env = append(cmd.Environ(), "DMONITOR_VERSION=test", "COMPOSE_PROJECT_NAME=dmonitor-test")
			out, err := cmd.CombinedOutput()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("%s config: %v\n%s", strings.Join(tool, " "), err, out)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("%s config accepted %s", strings.Join(tool, " "), tt.file)
			case tt.wantErr != "" && !strings.Contains(string(out), tt.wantErr):
				t.Fatalf("%s config refused %s, but its message does not say %q:\n%s", strings.Join(tool, " "), tt.file, tt.wantErr, out)
			}
		})
	}
}

// TestComposePortsOnLoopback: nothing in the stack has authentication, so
// no port may be published beyond the host's loopback.
func TestComposePortsOnLoopback(t *testing.T) {
	c := readCompose(t)
	published := 0
	for name, s := range c.Services {
		for _, p := range s.Ports {
			published++
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q: want 127.0.0.1:HOST:CONTAINER", name, p)
			}
		}
	}
	if published == 0 {
		t.Fatalf("%s publishes no port at all", composeFile)
	}
}

// TestComposeEvaluators checks the three dmonitor services: distinct
// observers, the ones nodes.txt lists and reachable under those names, the
// shared configuration read-only, a data volume each, and a control port
// each on the host.
func TestComposeEvaluators(t *testing.T) {
	c := readCompose(t)
	cfg := loadConfig(t, stackConfigDir)
	ev := c.evaluators()
	if len(ev) != 3 {
		t.Fatalf("%s: %d services run `dmonitor run`, want 3", composeFile, len(ev))
	}
	var observers, hostPorts []string
	dataVolumes := make(map[string]string) // volume -> service
	for name, s := range ev {
		obs := s.flag("--observer")
		if obs == "" {
			t.Errorf("service %s: no --observer: it would be named after the container", name)
		}
		observers = append(observers, obs)
		// Peers are the names in nodes.txt: each evaluator must answer to
		// its own on the compose network.
		if !slices.Contains(s.names(name), obs) {
			t.Errorf("service %s: observer %s is not its hostname or a network alias", name, obs)
		}
		if got := s.flag("--config"); got != "/etc/dmonitor" {
			t.Errorf("service %s: --config %q, want /etc/dmonitor", name, got)
		}
		var confMounted, dataMounted bool
		for _, m := range s.mounts(t) {
			switch m.target {
			case "/etc/dmonitor":
				confMounted = true
				if filepath.Clean(m.source) != "deploy/dmonitor" || !m.readOnly {
					t.Errorf("service %s mounts %s:%s (read-only %v), want ./deploy/dmonitor read-only", name, m.source, m.target, m.readOnly)
				}
			case cfg.DataDir:
				dataMounted = true
				if _, declared := c.Volumes[m.source]; !declared {
					t.Errorf("service %s: %s is not a named volume of %s", name, m.source, composeFile)
				}
				if other, dup := dataVolumes[m.source]; dup {
					t.Errorf("services %s and %s share the data volume %s", name, other, m.source)
				}
				dataVolumes[m.source] = name
			}
		}
		if !confMounted {
			t.Errorf("service %s does not mount the configuration at /etc/dmonitor", name)
		}
		if !dataMounted {
			t.Errorf("service %s has no volume at data_dir %s: its data would be lost with the container", name, cfg.DataDir)
		}
		_, ctlPort := urlHostPort(t, cfg.Control.Listen)
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if len(parts) == 3 && parts[2] == ctlPort {
				hostPorts = append(hostPorts, parts[1])
			}
		}
	}
	slices.Sort(observers)
	nodes := slices.Sorted(slices.Values(cfg.Nodes))
	if !slices.Equal(observers, nodes) {
		t.Errorf("observers %v, want those of nodes.txt %v", observers, nodes)
	}
	slices.Sort(hostPorts)
	if want := []string{"2929", "2930", "2931"}; !slices.Equal(hostPorts, want) {
		t.Errorf("control ports published on the host: %v, want %v", hostPorts, want)
	}
}

// TestComposeServesTheConfig: every host the evaluators' configuration
// names (targets, the TSDB, Redis, the mail relay) is a service of the
// stack, so none of them fails on a name that does not resolve.
func TestComposeServesTheConfig(t *testing.T) {
	c := readCompose(t)
	cfg := loadConfig(t, stackConfigDir)
	tsdbHost, _ := urlHostPort(t, cfg.TSDB.URL)
	redisHost, _ := urlHostPort(t, cfg.Redis.URL)
	smtpHost, _ := urlHostPort(t, cfg.SMTP.Addr)
	names := map[string]string{
		"tsdb.url":  tsdbHost,
		"redis.url": redisHost,
		"smtp.addr": smtpHost,
	}
	for _, tg := range cfg.Targets {
		names["hosts.d/"+tg.Host+"/"+tg.Check.Name] = tg.Host
	}
	for what, host := range names {
		if !c.resolves(host) {
			t.Errorf("%s names %q, which is no service of %s", what, host, composeFile)
		}
	}
}
