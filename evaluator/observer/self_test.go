package observer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
)

// The plugins self check is critical while a check of the node cannot
// run: a plugin missing, or icmp probes the node may not open sockets for
// (whose runs are all UNKNOWN, which no rule counts as failing). It names
// what and which checks, and is OK again once they can run.
func TestSelfPluginsCheck(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "check_ctl")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\necho OK\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctl := &config.Check{Name: "ctl", Command: []string{plugin}, Interval: time.Minute}
	ping := &config.Check{Name: "ping", Probe: &config.ProbeSpec{Type: config.ProbeICMP}, Interval: time.Minute}
	gw := &config.Check{Name: "gw", Probe: &config.ProbeSpec{Type: config.ProbeICMP}, Interval: time.Minute}
	web := &config.Check{Name: "web", Probe: &config.ProbeSpec{Type: config.ProbeTCP}, Interval: time.Minute}
	denied := errors.New(`ICMP datagram sockets are not allowed to group 0: net.ipv4.ping_group_range is "1 0"`)
	asked := 0
	allow := func(err error) func() error {
		return func() error { asked++; return err }
	}
	cfg := func(checks ...*config.Check) *config.Config {
		c := &config.Config{}
		for _, h := range []string{"www1", "www2"} {
			for _, chk := range checks {
				c.Targets = append(c.Targets, config.Target{Host: h, Check: chk})
			}
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		cfg    *config.Config
		icmp   error
		status check.Status
		output []string
		asks   bool
	}{
		{"plugins only", cfg(ctl, web), denied, check.OK, []string{"all 1 plugins present"}, false},
		{"icmp allowed", cfg(ctl, ping), nil, check.OK, []string{"all 1 plugins present, icmp probes allowed"}, true},
		{"icmp denied", cfg(ctl, ping, gw, web), denied, check.Critical,
			[]string{"icmp probes cannot run (check gw, ping): " + denied.Error()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked = 0
			st, out := plugins(tc.cfg, allow(tc.icmp))
			if st != tc.status {
				t.Errorf("status %v (%s), want %v", st, out, tc.status)
			}
			for _, w := range tc.output {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
			if (asked > 0) != tc.asks {
				t.Errorf("asked whether icmp is allowed %d times, want it asked: %v", asked, tc.asks)
			}
		})
	}

	// A plugin missing and icmp denied: both named.
	if err := os.Remove(plugin); err != nil {
		t.Fatal(err)
	}
	st, out := plugins(cfg(ctl, ping), allow(denied))
	if st != check.Critical || !strings.Contains(out, plugin+" missing (check ctl)") || !strings.Contains(out, "icmp probes cannot run (check ping)") {
		t.Errorf("a plugin missing and icmp denied: %v %q", st, out)
	}
}
