package deploy_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/dmonitor/dmonitor/config"
)

// TestStackConfig loads the evaluators' configuration tree as dmonitor run
// does. Its plugins are looked up in Debian's plugin directory, which is
// where the image has them too (the same package), so a tree that loads
// here loads in the containers.
func TestStackConfig(t *testing.T) {
	cfg := loadConfig(t, stackConfigDir)

	if want := []string{"eu-1", "us-1", "ap-1"}; !slices.Equal(cfg.Nodes, want) {
		t.Errorf("nodes %v, want %v", cfg.Nodes, want)
	}
	if cfg.Quorum != 2 {
		t.Errorf("quorum %d, want 2", cfg.Quorum)
	}

	type target struct{ host, check string }
	var got []target
	for _, tg := range cfg.Targets {
		got = append(got, target{tg.Host, tg.Check.Name})
		// Only what the image has: a plugin anywhere else would be
		// found here and missing in the container.
		if dir := filepath.Dir(tg.Check.Command[0]); dir != config.SystemPluginDir {
			t.Errorf("check %s runs %s: want a plugin of %s, which the image ships", tg.Check.Name, tg.Check.Command[0], config.SystemPluginDir)
		}
	}
	want := []target{
		{"grafana", "grafana_api"},
		{"mail", "smtp"},
		{"opentsdb", "opentsdb_api"},
		{"redis", "redis"},
		{"www", "http"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}

	for _, c := range []struct{ what, got, want string }{
		{"tsdb.backend", cfg.TSDB.Backend, config.BackendOpenTSDB},
		{"tsdb.url", cfg.TSDB.URL, "http://opentsdb:4242"},
		{"tsdb.listen", cfg.TSDB.Listen, ""},
		{"redis.url", cfg.Redis.URL, "redis://redis:6379/0"},
		{"control.listen", cfg.Control.Listen, "0.0.0.0:2929"},
		{"data_dir", cfg.DataDir, "/var/lib/dmonitor"},
		{"smtp.addr", cfg.SMTP.Addr, "mail:1025"},
		{"smtp.tls", cfg.SMTP.TLS, config.TLSNone},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	r := cfg.Receivers[config.DefaultReceiver]
	if r == nil || !slices.Equal(r.Email, []string{"oncall@example.org"}) {
		t.Errorf("receiver %q: %+v, want the alert.d/ address oncall@example.org", config.DefaultReceiver, r)
	}
}

// TestImageConfig loads the configuration the image ships: valid, checking
// nothing, its data in the image's volume and its control port reachable
// from outside the container.
func TestImageConfig(t *testing.T) {
	cfg := loadConfig(t, imageConfigDir)
	if len(cfg.Targets) != 0 {
		t.Errorf("the image's configuration has %d targets, want none", len(cfg.Targets))
	}
	if cfg.DataDir != "/var/lib/dmonitor" {
		t.Errorf("data_dir %s, want the image's volume /var/lib/dmonitor", cfg.DataDir)
	}
	if cfg.Control.Listen != "0.0.0.0:2929" {
		t.Errorf("control.listen %q, want 0.0.0.0:2929: loopback inside a container cannot be published", cfg.Control.Listen)
	}
}
