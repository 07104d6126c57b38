package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/evaluator/observer"
	"github.com/dmonitor/dmonitor/probe"
)

// health is this node's own health: the self checks it reports to the
// leader (observer.SelfChecks), and what /readyz says of them.
type health struct {
	mu   sync.Mutex
	last map[string]string // self check → why it fails; absent when it passes
	ran  bool              // the self checks have run once
	hash string            // of the configuration in force
}

// setHash records the hash of the configuration in force, which the self
// check observer.SelfConfig reports.
func (h *health) setHash(sum string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hash = sum
}

// checks returns the self checks of cfg, the store's (tsdb; nil when it
// has nothing to say) and the configuration's hash among them, each
// remembered for Ready.
func (h *health) checks(cfg *config.Config, tsdb func() (check.Status, string)) []observer.SelfCheck {
	scs := []observer.SelfCheck{
		observer.PluginsCheck(cfg, probe.ICMPAllowed),
		{Name: observer.SelfDisk, Run: func(context.Context) (check.Status, string) { return diskFree(cfg) }},
		{Name: observer.SelfConfig, Run: func(context.Context) (check.Status, string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			return check.OK, "config " + h.hash[:min(12, len(h.hash))]
		}},
	}
	if tsdb != nil {
		scs = append(scs, observer.SelfCheck{Name: observer.SelfTSDB, Run: func(context.Context) (check.Status, string) { return tsdb() }})
	}
	for i, sc := range scs {
		run := sc.Run
		scs[i].Run = func(ctx context.Context) (check.Status, string) {
			s, out := run(ctx)
			h.record(sc.Name, s, out)
			return s, out
		}
	}
	return scs
}

func (h *health) record(name string, s check.Status, out string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last == nil {
		h.last = make(map[string]string)
	}
	h.ran = true
	if s.Failing() {
		h.last[name] = out
	} else {
		delete(h.last, name)
	}
}

// Ready says whether this node can do its job: its self checks have run
// and none fails. The configuration's hash never fails.
func (h *health) Ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ran {
		return errors.New("starting: the self checks have not run yet")
	}
	var errs []error
	for _, name := range []string{observer.SelfTSDB, observer.SelfDisk, observer.SelfPlugins} {
		if why, ok := h.last[name]; ok {
			errs = append(errs, fmt.Errorf("%s: %s", name, why))
		}
	}
	return errors.Join(errs...)
}

// diskFree is critical while the file system of cfg's data directory has
// less than limits.disk_free_percent free.
func diskFree(cfg *config.Config) (check.Status, string) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(cfg.DataDir, &st); err != nil {
		return check.Critical, fmt.Sprintf("data_dir %s: %v", cfg.DataDir, err)
	}
	total, free := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
	if total == 0 {
		return check.OK, fmt.Sprintf("data_dir %s: size unknown", cfg.DataDir)
	}
	pct := 100 * float64(free) / float64(total)
	msg := fmt.Sprintf("data_dir %s: %.1f%% free (%s of %s)", cfg.DataDir, pct, mib(free), mib(total))
	if pct < float64(cfg.Limits.DiskFreePercent) {
		return check.Critical, fmt.Sprintf("%s, under limits.disk_free_percent %d%%", msg, cfg.Limits.DiskFreePercent)
	}
	return check.OK, msg
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
