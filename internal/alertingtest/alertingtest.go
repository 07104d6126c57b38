// Package alertingtest drives an alerting.Dispatcher in the tests of the
// receivers, so that each tests its own wire format, not the set-up.
package alertingtest

import (
	"context"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
)

// Gate is a dispatcher Clock whose every wait lasts until the gate is
// opened, and none after: a test queues all it wants first, so a
// group_wait gathers all of it.
type Gate struct {
	now  time.Time
	open chan time.Time
}

// NewGate returns a closed gate whose clock says now.
func NewGate(now time.Time) *Gate { return &Gate{now: now, open: make(chan time.Time)} }

func (g *Gate) Now() time.Time                       { return g.now }
func (g *Gate) After(time.Duration) <-chan time.Time { return g.open }

// Dispatch sends every one of ns to receiver on d, whose Clock is g, runs
// d until the test ends, and then opens g.
func Dispatch(t *testing.T, d *alerting.Dispatcher, g *Gate, receiver string, ns []*alerting.Notification) {
	t.Helper()
	for _, n := range ns {
		if err := d.Send(receiver, *n); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	close(g.open)
}
