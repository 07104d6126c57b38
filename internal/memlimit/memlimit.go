// Package memlimit sets the Go runtime's soft memory limit of the daemon:
// the heap size at which the collector runs however little garbage there
// is. Without one the collector lets the heap grow to twice the live data
// (GOGC=100) before collecting, so a daemon holding 250 MB takes 500 MB; with
// one it collects more often as the heap nears the limit and stays under it,
// at the price of CPU once the limit is close to the live data.
//
// Where the limit comes from, first found wins: GOMEMLIMIT in the
// environment (the runtime applies it itself), the configuration
// (limits.memory), 90% of the memory limit of the process's cgroup, which
// is what Prometheus's --auto-gomemlimit takes, leaving room for what the
// runtime does not count (the executable, C memory) before the kernel's OOM
// killer acts; else none.
package memlimit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"

	automemlimit "github.com/KimMachineGun/automemlimit/memlimit"
)

// Where a limit came from.
const (
	SourceEnv    = "GOMEMLIMIT"    // the environment
	SourceConfig = "limits.memory" // the configuration
	SourceCgroup = "cgroup"        // CgroupRatio of the cgroup's limit
	SourceNone   = "none"          // no limit
)

// CgroupRatio is the share of the cgroup's memory limit taken as the
// runtime's.
const CgroupRatio = 0.9

// Limit is a memory limit and where it came from.
type Limit struct {
	Bytes  int64 // math.MaxInt64 for none
	Source string
	// Cgroup is the cgroup's memory limit when one was read, else 0.
	Cgroup uint64
}

// CgroupFunc returns the memory limit of the process's cgroup, an error
// wrapping automemlimit.ErrNoLimit (or ErrNoCgroup) when there is none.
type CgroupFunc func() (uint64, error)

// Decide returns the limit for env (the GOMEMLIMIT variable, "" when
// unset), configured (limits.memory in bytes, 0 when unset) and the
// cgroup's limit. An error says the cgroup's limit could not be read; the
// limit is then the one without it.
func Decide(env string, configured int64, cgroup CgroupFunc) (Limit, error) {
	switch {
	case env != "":
		// The runtime parsed it at start; debug.SetMemoryLimit(-1) reads
		// what it made of it.
		return Limit{Bytes: debug.SetMemoryLimit(-1), Source: SourceEnv}, nil
	case configured > 0:
		return Limit{Bytes: configured, Source: SourceConfig}, nil
	}
	none := Limit{Bytes: math.MaxInt64, Source: SourceNone}
	if cgroup == nil {
		return none, nil
	}
	c, err := cgroup()
	switch {
	case errors.Is(err, automemlimit.ErrNoLimit), errors.Is(err, automemlimit.ErrNoCgroup),
		errors.Is(err, automemlimit.ErrCgroupsNotSupported):
		return none, nil
	case err != nil:
		return none, fmt.Errorf("read the cgroup's memory limit: %w", err)
	case c == 0 || c > math.MaxInt64:
		return none, nil
	}
	return Limit{Bytes: int64(float64(c) * CgroupRatio), Source: SourceCgroup, Cgroup: c}, nil
}

// Apply decides the limit for configured (limits.memory, 0 when unset),
// the environment and the process's cgroup, and sets it. A daemon that
// restarts on a new configuration applies it again: a limit no longer
// configured is lifted. The error is Decide's; the limit is set all the
// same.
func Apply(configured int64) (Limit, error) {
	l, err := Decide(os.Getenv("GOMEMLIMIT"), configured, automemlimit.FromCgroup)
	if l.Source != SourceEnv {
		debug.SetMemoryLimit(l.Bytes)
	}
	return l, err
}

// String describes l for a log line: "350.0 MiB (limits.memory)", or "none".
func (l Limit) String() string {
	if l.Bytes == math.MaxInt64 {
		return SourceNone
	}
	s := fmt.Sprintf("%.1f MiB (%s)", float64(l.Bytes)/(1<<20), l.Source)
	if l.Source == SourceCgroup {
		s = fmt.Sprintf("%.1f MiB (%.0f%% of the cgroup's %.1f MiB)", float64(l.Bytes)/(1<<20), CgroupRatio*100, float64(l.Cgroup)/(1<<20))
	}
	return s
}
