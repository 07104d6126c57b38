package observer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/tsdb"
)

// A plugin printing a new perfdata label on every run stops adding series
// at the limit; the labels stored before it keep being stored, and other
// checks have their own allowance.
func TestSeriesPerCheck(t *testing.T) {
	hits := prometheus.NewCounter(prometheus.CounterOpts{Name: "hits"})
	s := newSeriesLimit(3, hits, slog.New(slog.DiscardHandler))
	run := func(host string, labels ...string) []string {
		r := check.Result{Host: host, Check: "pids", Observer: "o", Start: time.Unix(1, 0)}
		for _, l := range labels {
			r.Perf = append(r.Perf, check.Perf{Label: l, Value: 1})
		}
		var stored []string
		for _, p := range s.admit(host, "pids", ResultPoints(nil, &r)) {
			if p.Metric == MetricCheckPerf {
				stored = append(stored, p.Tags["label"])
			}
		}
		return stored
	}
	for i := range 10 {
		run("a", fmt.Sprint("pid", i))
	}
	if got := fmt.Sprint(run("a", "pid0", "pid2", "pid9", "new")); got != "[pid0 pid2]" {
		t.Errorf("stored labels = %s, want the first three's only: [pid0 pid2]", got)
	}
	if got := testutil.ToFloat64(hits); got != 9 {
		t.Errorf("limit hits = %v, want 9 (7 runs past the limit, then pid9 and new)", got)
	}
	if got := fmt.Sprint(run("b", "x", "y")); got != "[x y]" {
		t.Errorf("another host's check stored %s, want [x y]", got)
	}
}

// perfPoints are the points of a result of host's check with a perfdata
// item per label.
func perfPoints(host, chk string, labels ...string) []tsdb.Point {
	r := check.Result{Host: host, Check: chk, Observer: "o", Start: time.Unix(1, 0)}
	for _, l := range labels {
		r.Perf = append(r.Perf, check.Perf{Label: l, Value: 1})
	}
	return ResultPoints(nil, &r)
}

// Checks that admitted the same labels share one set, so many checks cost
// a pointer each; a check whose labels grow moves to another set, and a
// set no check uses is forgotten, so a plugin printing a new label on
// every run leaves no sets behind.
func TestSeriesLimitSharesSets(t *testing.T) {
	s := newSeriesLimit(5, prometheus.NewCounter(prometheus.CounterOpts{Name: "hits"}), slog.New(slog.DiscardHandler))
	for i := range 1000 {
		s.admit(fmt.Sprint("h", i), "ssh", perfPoints("", "", "time"))
	}
	if len(s.sets) != 1 {
		t.Fatalf("1000 checks with the same label hold %d sets, want 1", len(s.sets))
	}
	for i := range 20 {
		s.admit("h0", "ssh", perfPoints("", "", "time", fmt.Sprint("pid", i)))
	}
	if len(s.sets) != 2 {
		t.Errorf("after one check's labels grew %d sets are held, want 2 (the shared one and its own)", len(s.sets))
	}
	if got := s.labels[instanceKey{"h0", "ssh"}].labels; fmt.Sprint(got) != "[pid0 pid1 pid2 pid3 time]" {
		t.Errorf("the growing check's labels = %v, want the first five", got)
	}
	if got := s.labels[instanceKey{"h1", "ssh"}].labels; fmt.Sprint(got) != "[time]" {
		t.Errorf("another check's labels = %v, want [time]", got)
	}
}

// The labels kept are copies: a set does not hold on to the plugin output
// a label was cut from.
func TestSeriesLimitCopiesLabels(t *testing.T) {
	s := newSeriesLimit(5, prometheus.NewCounter(prometheus.CounterOpts{Name: "hits"}), slog.New(slog.DiscardHandler))
	output := strings.Repeat("x", 1<<16) + "rtt"
	pts := perfPoints("h", "c", output[len(output)-3:])
	s.admit("h", "c", pts)
	kept := s.labels[instanceKey{"h", "c"}].labels[0]
	if kept != "rtt" {
		t.Fatalf("kept label %q, want rtt", kept)
	}
	start := uintptr(unsafe.Pointer(unsafe.StringData(output)))
	if p := uintptr(unsafe.Pointer(unsafe.StringData(kept))); p >= start && p < start+uintptr(len(output)) {
		t.Error("the kept label points into the plugin's output")
	}
}

// A check past its limit is logged once, however many runs it refuses
// labels in; another check past its own limit is logged too.
func TestSeriesLimitLogsOnce(t *testing.T) {
	var warnings atomic.Int32
	log := slog.New(countHandler{&warnings})
	hits := prometheus.NewCounter(prometheus.CounterOpts{Name: "hits"})
	s := newSeriesLimit(1, hits, log)
	for i := range 5 {
		s.admit("a", "c", perfPoints("a", "c", "time", fmt.Sprint("x", i), fmt.Sprint("x", i)))
	}
	if n := warnings.Load(); n != 1 {
		t.Errorf("%d warnings for one check, want 1", n)
	}
	if got := testutil.ToFloat64(hits); got != 10 {
		t.Errorf("limit hits = %v, want 10 (each run's two refused points)", got)
	}
	s.admit("b", "c", perfPoints("b", "c", "time", "size"))
	if n := warnings.Load(); n != 2 {
		t.Errorf("%d warnings for two checks, want 2", n)
	}
}

// countHandler counts the warnings logged through it.
type countHandler struct{ n *atomic.Int32 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }
