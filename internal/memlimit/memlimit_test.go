package memlimit

import (
	"errors"
	"math"
	"runtime/debug"
	"testing"

	automemlimit "github.com/KimMachineGun/automemlimit/memlimit"
)

func TestDecide(t *testing.T) {
	const mib = 1 << 20
	cgroup := func(v uint64, err error) CgroupFunc { return func() (uint64, error) { return v, err } }
	broken := errors.New("permission denied")
	for _, c := range []struct {
		name       string
		env        string
		configured int64
		cgroup     CgroupFunc
		want       Limit
		wantErr    error
	}{
		// limits.memory is taken as it is, before the cgroup's.
		{"configured", "", 350 * mib, cgroup(1000*mib, nil), Limit{Bytes: 350 * mib, Source: SourceConfig}, nil},
		// Unconfigured, 90% of the cgroup's limit, the rest left to what
		// the runtime does not count.
		{"cgroup", "", 0, cgroup(1000*mib, nil), Limit{Bytes: 900 * mib, Source: SourceCgroup, Cgroup: 1000 * mib}, nil},
		// A cgroup without a limit, or none at all: no limit.
		{"cgroup unlimited", "", 0, cgroup(0, automemlimit.ErrNoLimit), Limit{Bytes: math.MaxInt64, Source: SourceNone}, nil},
		{"no cgroup", "", 0, cgroup(0, automemlimit.ErrNoCgroup), Limit{Bytes: math.MaxInt64, Source: SourceNone}, nil},
		{"no cgroup reader", "", 0, nil, Limit{Bytes: math.MaxInt64, Source: SourceNone}, nil},
		// A cgroup that cannot be read is said, and there is no limit.
		{"cgroup unreadable", "", 0, cgroup(0, broken), Limit{Bytes: math.MaxInt64, Source: SourceNone}, broken},
		// GOMEMLIMIT wins over everything: the runtime applied it, and
		// what it is is read back.
		{"environment", "300MiB", 350 * mib, cgroup(1000*mib, nil), Limit{Bytes: debug.SetMemoryLimit(-1), Source: SourceEnv}, nil},
	} {
		got, err := Decide(c.env, c.configured, c.cgroup)
		if got != c.want || !errors.Is(err, c.wantErr) {
			t.Errorf("%s: Decide = %+v, %v; want %+v, %v", c.name, got, err, c.want, c.wantErr)
		}
	}
}

// Apply sets the limit it decides, and lifts one no longer configured.
func TestApply(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	t.Setenv("GOMEMLIMIT", "")
	l, err := Apply(350 << 20)
	if err != nil || l.Source != SourceConfig {
		t.Fatalf("Apply = %+v, %v", l, err)
	}
	if got := debug.SetMemoryLimit(-1); got != 350<<20 {
		t.Errorf("runtime limit %d after Apply(350MiB)", got)
	}
	l, _ = Apply(0)
	if got := debug.SetMemoryLimit(-1); got != l.Bytes || l.Source == SourceConfig {
		t.Errorf("runtime limit %d after Apply(0) = %+v: the configured limit was not lifted", got, l)
	}
}

func TestLimitString(t *testing.T) {
	for _, c := range []struct {
		l    Limit
		want string
	}{
		{Limit{Bytes: math.MaxInt64, Source: SourceNone}, "none"},
		{Limit{Bytes: 350 << 20, Source: SourceConfig}, "350.0 MiB (limits.memory)"},
		{Limit{Bytes: 900 << 20, Source: SourceCgroup, Cgroup: 1000 << 20}, "900.0 MiB (90% of the cgroup's 1000.0 MiB)"},
	} {
		if got := c.l.String(); got != c.want {
			t.Errorf("String = %q, want %q", got, c.want)
		}
	}
}
