package observer

import (
	"context"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

// outgoing is what waits to be told to the other observers about one
// target: its latest result, and whether to ask them to confirm it.
type outgoing struct {
	result  check.Result
	hasRes  bool
	confirm bool
}

// publishRetry bounds the wait before publishing again after the other
// observers could not be reached.
const (
	publishRetryMin = 500 * time.Millisecond
	publishRetryMax = 5 * time.Second
	shareTimeout    = 5 * time.Second
)

// queuePublish hands r, and a request to confirm it when wasPassing says
// it has just started failing, to the publishing goroutine. It never
// blocks: a result not yet sent is replaced by a newer one (by start) of
// the same target, so the queue holds at most one entry per target however
// long the other observers are out of reach.
func (ob *Observer) queuePublish(r check.Result, wasPassing bool) {
	ob.outMu.Lock()
	k := instanceKey{r.Host, r.Check}
	o := ob.out[k]
	// A run that started earlier can finish later (a re-check overtaking
	// the scheduled run): the newest by start wins, as in every live table.
	if !o.hasRes || !r.Start.Before(o.result.Start) {
		o.result, o.hasRes = r, true
	}
	o.confirm = o.confirm || wasPassing && r.Status.Failing()
	ob.out[k] = o
	ob.outMu.Unlock()
	ob.wakePublisher()
}

// queueConfirm asks the other observers to run host's check now, from the
// publishing goroutine.
func (ob *Observer) queueConfirm(host, chk string) {
	ob.outMu.Lock()
	k := instanceKey{host, chk}
	o := ob.out[k]
	o.confirm = true
	ob.out[k] = o
	ob.outMu.Unlock()
	ob.wakePublisher()
}

func (ob *Observer) wakePublisher() {
	select {
	case ob.outWake <- struct{}{}:
	default:
	}
}

// publishLoop tells the other observers what queuePublish and queueConfirm
// queued, until ctx is done. While they cannot be reached it retries with
// a growing pause, keeping only the newest result of each target.
func (ob *Observer) publishLoop(ctx context.Context) {
	retry := publishRetryMin
	for {
		select {
		case <-ctx.Done():
			return
		case <-ob.outWake:
		}
		if ob.publishQueued(ctx) {
			retry = publishRetryMin
			continue
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, publishRetryMax)
		ob.wakePublisher()
	}
}

// batchPublisher is a Share that publishes many results in one round trip
// (redisshare pipelines them): at thousands of checks a second, one round
// trip per result leaves the other observers seconds behind, past the
// freshness their quorum needs.
type batchPublisher interface {
	PublishAll(ctx context.Context, rs []check.Result) error
}

// publishChunk bounds one PublishAll: a pipeline of this many results is
// about 150 KB.
const publishChunk = 500

// maxSpare bounds the batch kept for reuse (see Observer.outSpare): a Go
// map keeps the room it once grew to, and a backlog after an outage of
// the share can be every target.
const maxSpare = 4096

// publishQueued sends everything queued; false when the share failed, with
// what was not sent queued again (unless a newer result replaced it).
func (ob *Observer) publishQueued(ctx context.Context) bool {
	next := ob.outSpare
	ob.outSpare = nil
	if next == nil {
		next = make(map[instanceKey]outgoing)
	}
	ob.outMu.Lock()
	batch := ob.out
	ob.out = next
	ob.outMu.Unlock()
	if len(batch) <= maxSpare {
		// Whatever happens below, what is left of batch has been sent or
		// queued again by the time this returns.
		defer func() {
			clear(batch)
			ob.outSpare = batch
		}()
	}
	if bp, ok := ob.share.(batchPublisher); ok && len(batch) > 1 {
		if err := ob.publishAll(ctx, bp, batch); err != nil {
			ob.shareErr("publish results", err)
			ob.requeue(batch)
			return false
		}
	}
	for k, o := range batch {
		if ctx.Err() != nil {
			return true
		}
		if err := ob.send(ctx, k, o); err != nil {
			ob.shareErr("publish result", err)
			ob.requeue(batch)
			return false
		}
		delete(batch, k)
	}
	return true
}

// publishAll publishes the results of batch in chunks, and leaves in batch
// only what is still to send: the confirmation requests, and on failure
// the results of the chunk that failed and of those after it.
func (ob *Observer) publishAll(ctx context.Context, bp batchPublisher, batch map[instanceKey]outgoing) error {
	keys := make([]instanceKey, 0, len(batch))
	for k, o := range batch {
		if o.hasRes {
			keys = append(keys, k)
		}
	}
	rs := make([]check.Result, 0, min(len(keys), publishChunk))
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), publishChunk)]
		rs = rs[:0]
		for _, k := range chunk {
			rs = append(rs, batch[k].result)
		}
		pctx, cancel := context.WithTimeout(ctx, shareTimeout)
		err := bp.PublishAll(pctx, rs)
		cancel()
		if err != nil {
			return err
		}
		ob.shareDown.Store(false)
		for _, k := range chunk {
			if o := batch[k]; o.confirm {
				o.hasRes = false
				batch[k] = o
			} else {
				delete(batch, k)
			}
		}
		keys = keys[len(chunk):]
	}
	return nil
}

// requeue puts back what failed to go out, under anything newer.
func (ob *Observer) requeue(batch map[instanceKey]outgoing) {
	ob.outMu.Lock()
	defer ob.outMu.Unlock()
	for k, old := range batch {
		cur, ok := ob.out[k]
		if !ok {
			ob.out[k] = old
			continue
		}
		if old.hasRes && (!cur.hasRes || cur.result.Start.Before(old.result.Start)) {
			cur.result, cur.hasRes = old.result, true
		}
		cur.confirm = cur.confirm || old.confirm
		ob.out[k] = cur
	}
}

func (ob *Observer) send(ctx context.Context, k instanceKey, o outgoing) error {
	ctx, cancel := context.WithTimeout(ctx, shareTimeout)
	defer cancel()
	if o.hasRes {
		if err := ob.share.Publish(ctx, o.result); err != nil {
			return err
		}
		ob.shareDown.Store(false)
	}
	if !o.confirm {
		return nil
	}
	host, chk := k.host, k.check
	started, err := ob.share.RequestConfirm(ctx, host, chk, ob.confirmTTL(chk))
	if err != nil {
		return err
	}
	if started {
		ob.metrics.confirmations.Inc()
		ob.log.Info("asked the other observers to confirm", "host", host, "check", chk)
	}
	return nil
}
