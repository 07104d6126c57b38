package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator"
	"github.com/dmonitor/dmonitor/rules"
)

// daemonArgs are where runDaemon reloads its configuration from, and
// when.
type daemonArgs struct {
	dir, observer string
	// controlListen and tsdbListen override the configuration's listen
	// addresses when set (--control-listen, --tsdb-listen).
	controlListen, tsdbListen *string
	// user overrides the configuration's user: when set (--user).
	user *string
	hup  <-chan os.Signal
	// notify tells the service manager of the daemon's state.
	notify notifier
}

// load loads the configuration as the command line asks: from dir, as
// observer, with its listen addresses.
func (a daemonArgs) load() (*config.Config, error) {
	cfg, err := config.LoadAs(a.dir, a.observer)
	if err != nil {
		return nil, err
	}
	if a.controlListen != nil || a.tsdbListen != nil {
		if err := cfg.OverrideListen(a.controlListen, a.tsdbListen); err != nil {
			return nil, err
		}
	}
	if a.user != nil {
		cfg.User = *a.user
	}
	return cfg, nil
}

// reloadConfig is how runDaemon says it stopped to restart on a new
// configuration.
type reloadConfig struct {
	cfg *config.Config
	set *rules.Set
}

func (r *reloadConfig) Error() string { return "configuration reloaded" }

// reloadOnHUP loads the whole configuration on every SIGHUP, and when its
// files change, until ctx is done. A configuration or rule set that does not load is refused with
// every error logged, dmonitor_config_last_reload_successful 0, and the
// one in force stays. A new rule set alone is applied in place; any other
// change returns a *reloadConfig, which stops the daemon to restart it.
//
// current is the hash of cfg's tree; h is told of every new one.
func reloadOnHUP(ctx context.Context, args daemonArgs, cfg *config.Config, current treeHash, ev *evaluator.Evaluator, h *health, reg prometheus.Registerer, log *slog.Logger) error {
	ok := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dmonitor_config_last_reload_successful", Help: "1 when the last configuration reload (SIGHUP) was applied, 0 when it was refused.",
	})
	hashGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dmonitor_config_hash", Help: "A hash of the configuration in force (dmonitor.yaml, nodes.txt, hosts.d, alert.d, plugins, rules.d), to compare nodes.",
	})
	reg.MustRegister(ok, hashGauge)
	ok.Set(1)
	hashGauge.Set(hashValue(current.all))

	changed, err := watchConfig(ctx, cfg, log)
	if err != nil {
		log.Warn("configuration files are not watched; reload with SIGHUP", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-args.hup:
		case <-changed:
		}
		// RELOADING=1 now, READY=1 once the outcome is known: here when
		// the configuration in force stays, from the restarted daemon
		// when a new one replaces it.
		args.notify.reloading()
		next, err := args.load()
		var set *rules.Set
		if err == nil {
			set, err = loadRules(next)
		}
		if err != nil {
			ok.Set(0)
			log.Error("configuration reload refused; the previous configuration stays in force", "err", err)
			args.notify.ready(runningStatus(cfg) + "; the last reload was refused, see the log")
			continue
		}
		sum, err := configHash(next)
		if err != nil {
			ok.Set(0)
			log.Error("configuration reload refused; the previous configuration stays in force", "err", err)
			args.notify.ready(runningStatus(cfg) + "; the last reload was refused, see the log")
			continue
		}
		ok.Set(1)
		if sum == current {
			log.Debug("configuration unchanged")
			args.notify.ready(runningStatus(cfg))
			continue
		}
		logRuleWarnings(log, set)
		if sum.withoutRules == current.withoutRules {
			ev.SetRules(set)
			current = sum
			hashGauge.Set(hashValue(current.all))
			h.setHash(current.shared)
			log.Info("rules reloaded", "rules", len(set.Rules()))
			args.notify.ready(runningStatus(cfg))
			continue
		}
		return &reloadConfig{cfg: next, set: set}
	}
}

// treeHash is the hash of a configuration tree, with and without rules.d,
// and of what every node of a cluster must agree on (shared): the tree but
// dmonitor.yaml and the files it names, and of dmonitor.yaml what is not
// the node's own (its name, addresses, directories, secrets).
type treeHash struct{ all, withoutRules, shared string }

// topOfTree says whether the file or directory name at the top of a
// configuration tree is configuration: anything else there (a log, a
// backup) is not.
func topOfTree(name string, dir bool) bool {
	if dir {
		switch name {
		case "hosts.d", "alert.d", "rules.d", config.DefaultPluginDir:
			return true
		}
		return false
	}
	return name == config.FileName || name == "nodes.txt"
}

// configHash hashes the configuration files of cfg's tree (names and
// contents: dmonitor.yaml, nodes.txt, hosts.d, alert.d, rules.d, the
// plugins and the files dmonitor.yaml names; no hidden file, nothing else),
// so a reload can tell what changed.
func configHash(cfg *config.Config) (treeHash, error) {
	all, without, shared := sha256.New(), sha256.New(), sha256.New()
	own := map[string]bool{filepath.Join(cfg.Dir, config.FileName): true, cfg.Control.TokenFile: true, cfg.TSDB.TokenFile: true,
		cfg.Control.TLSCertFile: true, cfg.Control.TLSKeyFile: true, cfg.Control.TLSCAFile: true}
	err := filepath.WalkDir(cfg.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// The configuration and nothing else: a log file or an editor's
		// swap file beside it is no change of configuration.
		rel, _ := filepath.Rel(cfg.Dir, path)
		if strings.HasPrefix(d.Name(), ".") && path != cfg.Dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if path != cfg.Dir && filepath.Dir(path) == cfg.Dir && !topOfTree(rel, true) && path != cfg.PluginDir || path == cfg.DataDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || filepath.Dir(path) == cfg.Dir && !topOfTree(rel, false) && !own[path] {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, h := range []hash.Hash{all, without, shared} {
			if h == without && strings.HasPrefix(rel, "rules.d"+string(filepath.Separator)) || h == shared && own[path] {
				continue
			}
			fmt.Fprintf(h, "%s\x00%d\x00", rel, len(b))
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		return treeHash{}, fmt.Errorf("hash configuration %s: %w", cfg.Dir, err)
	}
	// What the nodes share of dmonitor.yaml, in a fixed order; domain:
	// is each node's own, as observer: is.
	fmt.Fprintf(shared, "interval %v timeout %v quorum %d domains %d partial %q repeat %v redis %s\n",
		cfg.Interval, cfg.Timeout, cfg.Quorum, cfg.QuorumDomains, cfg.PartialNotify, cfg.RepeatInterval, cfg.Redis.URL)
	for _, name := range slices.Sorted(maps.Keys(cfg.Checks)) {
		c := cfg.Checks[name]
		// A probe's options as JSON: they hold no pointer whose address
		// would differ between nodes but a CA pool, which JSON writes as
		// {} (its file, when in the tree, is hashed as a file).
		spec, err := json.Marshal(c.Probe)
		if err != nil {
			return treeHash{}, fmt.Errorf("hash configuration %s: check %s: %w", cfg.Dir, name, err)
		}
		fmt.Fprintf(shared, "check %q %q %s %v %v %d %d\n", name, c.Command, spec, c.Interval, c.Timeout, c.Quorum, c.QuorumDomains)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Receivers)) {
		fmt.Fprintf(shared, "receiver %q %+v\n", name, *cfg.Receivers[name])
	}
	return treeHash{hex.EncodeToString(all.Sum(nil)), hex.EncodeToString(without.Sum(nil)), hex.EncodeToString(shared.Sum(nil))}, nil
}

// hashValue is a hash as a gauge can show it exactly: its first 48 bits.
func hashValue(h string) float64 {
	if len(h) < 12 {
		return 0
	}
	v, _ := strconv.ParseUint(h[:12], 16, 64)
	return float64(v)
}

// settle is how long the configuration files must stay quiet after a
// change before it is reloaded: an editor's save, a `cp -r` or a
// configuration management run is many events, and should be one reload.
const settle = time.Second

// watchConfig watches cfg's tree (the directory, hosts.d/ and each host in
// it, alert.d/, rules.d/ and the plugin directory; the data directory is
// not watched) and sends on the returned channel once the files have been
// quiet for settle after a change. fsnotify watches directories one level
// deep, so the hosts are watched one by one; a host added is seen through
// hosts.d/, and the restart that follows watches it in turn. The watcher
// ends with ctx.
func watchConfig(ctx context.Context, cfg *config.Config, log *slog.Logger) (<-chan struct{}, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch configuration: %w", err)
	}
	dirs := []string{cfg.Dir, filepath.Join(cfg.Dir, "hosts.d"), filepath.Join(cfg.Dir, "alert.d"),
		filepath.Join(cfg.Dir, "rules.d"), cfg.PluginDir}
	if hosts, err := os.ReadDir(filepath.Join(cfg.Dir, "hosts.d")); err == nil {
		for _, h := range hosts {
			if h.IsDir() {
				dirs = append(dirs, filepath.Join(cfg.Dir, "hosts.d", h.Name()))
			}
		}
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil && !os.IsNotExist(err) {
			log.Warn("configuration directory not watched", "dir", d, "err", err)
		}
	}
	changed := make(chan struct{}, 1)
	go func() {
		defer w.Close()
		quiet := time.NewTimer(settle)
		quiet.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if strings.HasPrefix(ev.Name, cfg.DataDir+string(filepath.Separator)) || ev.Name == cfg.DataDir {
					continue
				}
				quiet.Reset(settle)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("watching the configuration", "err", err)
			case <-quiet.C:
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}()
	return changed, nil
}
