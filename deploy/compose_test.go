package deploy_test

import (
	"context"
	"os"
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

// testOpenTSDBImage stands for the digest an operator pins in .env; config
// never pulls it.
var testOpenTSDBImage = "petergrace/opentsdb-docker@sha256:" + strings.Repeat("0", 64)

// TestComposeConfig validates docker-compose.yml the way `docker compose up`
// would before starting anything, and shows on a broken file that the tool
// really refuses what is wrong.
func TestComposeConfig(t *testing.T) {
	tool := composeTool(t)
	tests := []struct {
		file    string
		env     []string // besides DMONITOR_VERSION and COMPOSE_PROJECT_NAME
		wantErr string   // "" when the file must be valid
	}{
		// The stack itself, with the OpenTSDB digest an operator pins.
		{file: composeFile, env: []string{"OPENTSDB_IMAGE=" + testOpenTSDBImage}},
		// Without that digest the stack refuses to start, and says what
		// to set, instead of pulling whatever latest is that day.
		{file: composeFile, wantErr: "OPENTSDB_IMAGE"},
		// A dependency on a service that does not exist: refused, so a
		// pass above means something.
		{file: "testdata/compose/undefined-dependency.bad.yml", wantErr: "undefined"},
	}
	// An empty env file: a .env beside docker-compose.yml (where an
	// operator pins OPENTSDB_IMAGE) must not decide the outcome either.
	noEnvFile := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(noEnvFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		name := filepath.Base(tt.file)
		if tt.wantErr != "" {
			name += "/refused " + tt.wantErr
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			args := append(slices.Clone(tool[1:]), "--env-file", noEnvFile, "-f", tt.file, "config", "-q")
			cmd := exec.CommandContext(ctx, tool[0], args...)
			// A value set in the caller's environment must not decide
			// the outcome; the file says what it needs.
			env := slices.DeleteFunc(cmd.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "OPENTSDB_IMAGE=") })
			cmd.Env = append(env, "DMONITOR_VERSION=test", "COMPOSE_PROJECT_NAME=dmonitor-test")
			cmd.Env = append(cmd.Env, tt.env...)
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

// TestComposeRedisPersistent: the notification queues and the silences
// live only in Redis (the README and docs/OPERATIONS.md ask for
// appendonly), so the service the evaluators' redis.url names writes its
// append-only file to a named volume, and says when it is up.
func TestComposeRedisPersistent(t *testing.T) {
	c := readCompose(t)
	cfg := loadConfig(t, stackConfigDir)
	host, _ := urlHostPort(t, cfg.Redis.URL)
	s, ok := c.Services[host]
	if !ok {
		t.Fatalf("redis.url names %q, which is no service of %s", host, composeFile)
	}
	if len(s.Command) == 0 || s.Command[0] != "redis-server" || s.flag("--appendonly") != "yes" {
		t.Errorf("service %s: command %q, want redis-server --appendonly yes", host, s.Command)
	}
	// The official image's working directory, where the append-only file
	// is written.
	const dataDir = "/data"
	var onVolume bool
	for _, m := range s.mounts(t) {
		if m.target != dataDir {
			continue
		}
		if _, declared := c.Volumes[m.source]; !declared || m.readOnly {
			t.Errorf("service %s mounts %s at %s (read-only %v): want a named volume of %s, writable", host, m.source, m.target, m.readOnly, composeFile)
		}
		onVolume = true
	}
	if !onVolume {
		t.Errorf("service %s has no volume at %s: the append-only file would go with the container", host, dataDir)
	}
	if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
		t.Errorf("service %s has no healthcheck, which the evaluators wait for", host)
	}
}

// TestComposeOpenTSDB: the image the evaluators' tsdb.url names is
// published for linux/amd64 only; the file says so, so that a host of
// another architecture runs it emulated instead of failing on a manifest,
// and keeps HBase on a volume.
func TestComposeOpenTSDB(t *testing.T) {
	c := readCompose(t)
	cfg := loadConfig(t, stackConfigDir)
	host, _ := urlHostPort(t, cfg.TSDB.URL)
	s, ok := c.Services[host]
	if !ok {
		t.Fatalf("tsdb.url names %q, which is no service of %s", host, composeFile)
	}
	if s.Platform != "linux/amd64" {
		t.Errorf("service %s: platform %q, want linux/amd64 (the only one the image is published for)", host, s.Platform)
	}
	var onVolume bool
	for _, m := range s.mounts(t) {
		if _, declared := c.Volumes[m.source]; declared && m.target == "/data/hbase" {
			onVolume = true
		}
	}
	if !onVolume {
		t.Errorf("service %s has no named volume at /data/hbase: the results would go with the container", host)
	}
}

// TestComposeHealthchecks: a service another waits for as healthy has a
// healthcheck (or compose would wait for ever), and the services with state
// or an API the evaluators use keep theirs.
func TestComposeHealthchecks(t *testing.T) {
	c := readCompose(t)
	has := func(name string) bool {
		s := c.Services[name]
		// A service built here takes the Dockerfile's HEALTHCHECK,
		// which TestDockerfile checks.
		return s.Build != nil || s.Healthcheck != nil && len(s.Healthcheck.Test) > 0
	}
	waited := 0
	for name, s := range c.Services {
		for dep, d := range s.DependsOn {
			if d.Condition != "service_healthy" {
				continue
			}
			waited++
			if !has(dep) {
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
	}
	if waited == 0 {
		t.Errorf("no service waits for another to be healthy: the evaluators would start before Redis and OpenTSDB answer")
	}
	for _, name := range []string{"redis", "opentsdb", "grafana", "mail"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("%s has no service %s", composeFile, name)
		} else if !has(name) {
			t.Errorf("service %s has no healthcheck", name)
		}
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
