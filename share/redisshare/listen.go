package redisshare

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

const minBackoff = 100 * time.Millisecond

// The log messages of a subscription's state changes.
const (
	msgDown      = "redis subscription down, reconnecting"
	msgStillDown = "redis subscription still down"
	msgRestored  = "redis subscription restored"
)

// listen subscribes to channel and hands every message to deliver until
// ctx is done, resubscribing after any failure. After each subscription is
// confirmed and before any message is handed on, sync (if not nil) runs:
// what was published while the subscription was down is then in the
// stored state it reads, and what is published from then on is queued on
// the subscription.
func (x *Exchange) listen(ctx context.Context, what, channel string, sync func(context.Context) error, deliver func(string)) error {
	backoff := minBackoff
	down := false
	up := func() {
		backoff = minBackoff
		if down {
			x.log.Info(msgRestored, "what", what, "channel", channel)
			down = false
		}
	}
	for {
		err := x.session(ctx, channel, sync, deliver, up)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !down {
			x.log.Warn(msgDown, "what", what, "channel", channel, "err", err)
			down = true
		} else {
			x.log.Debug(msgStillDown, "what", what, "channel", channel, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, x.maxBackoff)
	}
}

// session is one subscription, from subscribing until it fails or ctx is
// done. It does not let go-redis reconnect it: go-redis resubscribes
// silently and the messages published meanwhile would be lost without a
// resync.
func (x *Exchange) session(ctx context.Context, channel string, sync func(context.Context) error, deliver func(string), up func()) error {
	ps := x.client.Subscribe(ctx) // no channel yet: no I/O, no error swallowed
	// A read blocks without regard to ctx; closing the subscription is
	// what ends it when ctx is done.
	stop := closeOnDone(ctx, ps)
	defer stop()
	if err := ps.Subscribe(ctx, channel); err != nil {
		return fmt.Errorf("subscribe to %s: %w", channel, err)
	}
	// Only once Redis confirms is every later publish certain to reach us.
	msg, err := ps.ReceiveTimeout(ctx, x.ping)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", channel, err)
	}
	if s, ok := msg.(*redis.Subscription); !ok || s.Kind != "subscribe" {
		return fmt.Errorf("subscribe to %s: unexpected reply %v", channel, msg)
	}
	if sync != nil {
		if err := sync(ctx); err != nil {
			return err
		}
	}
	up()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, x.ping)
		if err != nil {
			if !isTimeout(err) || ctx.Err() != nil {
				return fmt.Errorf("receive from %s: %w", channel, err)
			}
			if pinged {
				return fmt.Errorf("receive from %s: no reply to ping within %v", channel, x.ping)
			}
			if err := ps.Ping(ctx); err != nil {
				return fmt.Errorf("ping on %s: %w", channel, err)
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Message:
			deliver(m.Payload)
		case *redis.Subscription:
			// go-redis resubscribed on a new connection: messages may have
			// been lost in between.
			return fmt.Errorf("subscription to %s renewed by the client (%s)", channel, m.Kind)
		}
	}
}

// closeOnDone closes ps when ctx is done. The returned stop closes ps in
// any case and returns once the watching goroutine has ended.
func closeOnDone(ctx context.Context, ps *redis.PubSub) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		select {
		case <-ctx.Done():
		case <-done:
		}
		_ = ps.Close()
	}()
	return func() {
		close(done)
		<-ended
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
