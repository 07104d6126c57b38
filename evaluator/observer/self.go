package observer

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/tsdb"
)

// The self checks: what each node reports of its own health, as results
// of checks on itself (host = the observer's name), shared and stored like
// any other result, so the leader can alert on any node's trouble and the
// history can be graphed.
const (
	// SelfTSDB is critical while the store does not take this node's
	// points (the TSDB unreachable, the spool growing, points dropped).
	SelfTSDB = "dmonitor.tsdb"
	// SelfDisk is critical while the data directory is nearly full or
	// cannot be written.
	SelfDisk = "dmonitor.disk"
	// SelfPlugins is critical while a check of this node cannot run: its
	// plugin missing or not executable, or, for icmp probes, the ICMP
	// sockets they need not allowed.
	SelfPlugins = "dmonitor.plugins"
	// SelfConfig is always OK; its output is the configuration's hash,
	// which the leader compares with its own.
	SelfConfig = "dmonitor.config"
)

// IsSelfCheck says whether chk names a self check: their results come from
// every node about itself, not from the configured targets.
func IsSelfCheck(chk string) bool {
	switch chk {
	case SelfTSDB, SelfDisk, SelfPlugins, SelfConfig, SelfSchedule:
		return true
	}
	return false
}

// SelfCheck is a self check the daemon provides: Run says how this part
// of the node is, as a plugin would.
type SelfCheck struct {
	Name string
	Run  func(ctx context.Context) (check.Status, string)
}

// PluginsCheck is the self check SelfPlugins of cfg: it reports the
// plugins of this node's checks that are missing or not executable (a
// package removed, a file not copied to this node), and icmp probes that
// this node may not run (net.ipv4.ping_group_range, see
// probe.ICMPAllowed), which the checks' own results only say as UNKNOWN,
// and an unknown result pages nobody. icmpAllowed is probe.ICMPAllowed
// but in tests.
func PluginsCheck(cfg *config.Config, icmpAllowed func() error) SelfCheck {
	return SelfCheck{Name: SelfPlugins, Run: func(context.Context) (check.Status, string) { return plugins(cfg, icmpAllowed) }}
}

func plugins(cfg *config.Config, icmpAllowed func() error) (check.Status, string) {
	users := make(map[string][]string) // plugin path → the checks that run it
	var pings []string                 // the icmp probe checks
	for _, t := range cfg.Targets {
		c := t.Check
		switch {
		case c.Probe != nil:
			if c.Probe.Type == config.ProbeICMP && !slices.Contains(pings, c.Name) {
				pings = append(pings, c.Name)
			}
		case len(c.Command) > 0 && !slices.Contains(users[c.Command[0]], c.Name):
			users[c.Command[0]] = append(users[c.Command[0]], c.Name)
		}
	}
	var bad []string
	for _, path := range slices.Sorted(maps.Keys(users)) {
		fi, err := os.Stat(path)
		why := ""
		switch {
		case err != nil:
			why = "missing"
		case fi.IsDir():
			why = "a directory"
		case fi.Mode().Perm()&0o111 == 0:
			why = "not executable"
		default:
			continue
		}
		bad = append(bad, fmt.Sprintf("%s %s (check %s)", path, why, strings.Join(users[path], ", ")))
	}
	var problems []string
	if len(bad) > 0 {
		problems = append(problems, "plugins: "+strings.Join(bad, "; "))
	}
	ok := fmt.Sprintf("all %d plugins present", len(users))
	if len(pings) > 0 {
		if err := icmpAllowed(); err != nil {
			slices.Sort(pings)
			problems = append(problems, fmt.Sprintf("icmp probes cannot run (check %s): %v", strings.Join(pings, ", "), err))
		}
		ok += ", icmp probes allowed"
	}
	if len(problems) > 0 {
		return check.Critical, strings.Join(problems, "; ")
	}
	return check.OK, ok
}

// runSelfChecks records the result of every self check, as this
// observer's results on itself. Unlike a check's, their results are not
// counted in dmonitor_checks_total, and the leader judges them with the
// self alerts' rules, not the rules of rules.d.
func (ob *Observer) runSelfChecks(ctx context.Context) {
	for _, sc := range ob.self {
		start := ob.now()
		status, output := sc.Run(ctx)
		r := check.Result{Host: ob.cfg.Observer, Check: sc.Name, Observer: ob.cfg.Observer,
			Status: status, Raw: status.String(), Output: output, Start: start, Duration: ob.now().Sub(start)}
		ob.writer.Write(ResultPoints(make([]tsdb.Point, 0, 2), &r))
		ob.live.put(r)
		ob.queuePublish(r, false)
	}
}
