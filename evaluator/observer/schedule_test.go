package observer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/dmonitor/dmonitor/config"
)

func TestSplaySpreadsChecks(t *testing.T) {
	const n = 1000
	iv := time.Minute
	c := &config.Check{Name: "http", Interval: iv}
	perSecond := make(map[time.Duration]int)
	for i := range n {
		off := splay(config.Target{Host: fmt.Sprintf("host%04d", i), Check: c}, "eu-1", nil)
		if off < 0 || off >= iv {
			t.Fatalf("splay %v outside [0, %v)", off, iv)
		}
		perSecond[off.Truncate(time.Second)]++
	}
	// 1000 checks over 60 s average 16.7 a second; a hash spreads them
	// within a small factor of that, where no splay puts all in one second.
	for sec, k := range perSecond {
		if k > 40 {
			t.Errorf("%d checks start in second %v of the interval", k, sec)
		}
	}
	if len(perSecond) < 55 {
		t.Errorf("checks start in only %d of 60 seconds", len(perSecond))
	}
}

func TestSplayStaggersObservers(t *testing.T) {
	c := &config.Check{Name: "http", Interval: 30 * time.Second}
	nodes := []string{"a", "b", "c"}
	tgt := config.Target{Host: "www1", Check: c}
	a, b, cc := splay(tgt, "a", nodes), splay(tgt, "b", nodes), splay(tgt, "c", nodes)
	for _, d := range []time.Duration{(b - a + 30*time.Second) % (30 * time.Second), (cc - b + 30*time.Second) % (30 * time.Second)} {
		if d != 10*time.Second {
			t.Errorf("observers %v, %v, %v apart by %v, want interval/3 = 10s", a, b, cc, d)
		}
	}
}

func TestScheduleSlotsBoundJobsAndSkipPastStarts(t *testing.T) {
	c := &config.Check{Name: "svc", Command: []string{"/bin/true"}, Interval: 30 * time.Second, Timeout: time.Second}
	cfg := &config.Config{Observer: "eu-1", Interval: 30 * time.Second, Checks: map[string]*config.Check{"svc": c}}
	for i := range 10000 {
		cfg.Targets = append(cfg.Targets, config.Target{Host: fmt.Sprintf("h%05d", i), Check: c})
	}
	ob := New(Options{Config: cfg})
	s, err := gocron.NewScheduler()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	// A start computed from a "now" long gone (slow registration, say)
	// must still be accepted: gocron refuses starts in the past.
	if err := ob.schedule(context.Background(), s, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	// 30 s in 100 ms slots: at most 300 jobs for 10,000 checks.
	if n := len(s.Jobs()); n > 300 || n < 250 {
		t.Fatalf("%d gocron jobs for 10,000 checks at 30s, want at most 300 (one per slot) and most slots used", n)
	}
}
