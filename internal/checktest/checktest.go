// Package checktest builds and compares check results for the tests of
// the packages that carry them between observers.
package checktest

import (
	"fmt"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// Result is a plausible result of chk on host by observer, started at
// start, with status st.
func Result(observer, host, chk string, start time.Time, st check.Status) check.Result {
	return check.Result{
		Host: host, Check: chk, Observer: observer, Status: st, Raw: st.String(),
		ExitCode: int(st), Output: "output of " + chk + " on " + host, Start: start,
		Duration: 1500 * time.Millisecond,
	}
}

// Describe renders every field of r, pointers followed and times as
// instants, so two results compare equal exactly when a reader could not
// tell them apart (NaN included, which == would not match).
func Describe(r check.Result) string {
	var b strings.Builder
	start := "zero"
	if !r.Start.IsZero() {
		start = fmt.Sprint(r.Start.UnixNano())
	}
	fmt.Fprintf(&b, "host=%q check=%q observer=%q status=%d raw=%q exit=%d output=%q start=%s duration=%d",
		r.Host, r.Check, r.Observer, r.Status, r.Raw, r.ExitCode, r.Output, start, r.Duration)
	opt := func(f *float64) string {
		if f == nil {
			return "nil"
		}
		return fmt.Sprint(*f)
	}
	for _, p := range r.Perf {
		fmt.Fprintf(&b, " perf{%q %v %q %q %q %s %s}", p.Label, p.Value, p.UOM, p.Warn, p.Crit, opt(p.Min), opt(p.Max))
	}
	return b.String()
}

// DescribeAll is Describe of each of rs.
func DescribeAll(rs []check.Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = Describe(r)
	}
	return out
}
