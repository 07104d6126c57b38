package observer

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/plugin"
	"github.com/dmonitor/dmonitor/probe"
)

// job is one scheduled check of one host: a plugin's command, or a probe.
type job struct {
	target config.Target
	cmd    plugin.Command
	probe  probe.Probe // nil for a plugin check
	// slots bounds the probes running at once, shared by every probe job
	// of the observer (probe_workers). It is not the runner's bound on
	// plugins: a probe waiting on a target that does not answer holds a
	// socket, not a process, and with one bound for both, targets timing
	// out would hold back every plugin, or slow plugins every probe.
	slots   chan struct{}
	running atomic.Bool // guards against overlapping runs of this check
	// begun says the running run has its worker or probe slot: a run come
	// due while the previous one still waits for one is a sign of a node
	// that cannot keep up (SelfSchedule), not of a check slower than its
	// interval.
	begun atomic.Bool
}

// start records that j's run has its worker or probe slot.
func (j *job) start() { j.begun.Store(true) }

// splay returns when, within its interval, the target first runs. Checks
// are spread by a hash of host and check, so a thousand checks with the same
// interval do not start in the same second and a restart keeps each check's
// phase. Observers are staggered by their position in nodes.txt on top of
// that, so N observers together look at a target every interval/N: an
// outage is seen sooner than by N observers that run in step.
func splay(t config.Target, observer string, nodes []string) time.Duration {
	iv := t.Check.Interval
	h := fnv.New64a()
	h.Write([]byte(t.Host))
	h.Write([]byte{0})
	h.Write([]byte(t.Check.Name))
	off := time.Duration(h.Sum64() % uint64(iv))
	if i := slices.Index(nodes, observer); i > 0 {
		off += iv * time.Duration(i) / time.Duration(len(nodes))
	}
	return off % iv
}

// slotWidth is the granularity of the splay: the targets of one interval
// whose first runs fall in the same slot share one gocron job. gocron keeps
// a few KiB per job (its state by value, a context, a timer), which at
// 10,000 targets is most of the daemon's memory; slots bound the job count
// by interval/slotWidth per distinct interval instead.
const slotWidth = 100 * time.Millisecond

type slotKey struct{ interval, offset time.Duration }

// schedule registers the targets on s: one gocron job per interval and
// splay slot, each running its targets side by side. Overlaps are guarded
// by each target's own flag rather than gocron's singleton mode, which costs
// a goroutine and a buffered channel per job.
func (ob *Observer) schedule(ctx context.Context, s gocron.Scheduler, now time.Time) error {
	slots := make(map[slotKey][]*job)
	var order []slotKey
	probeSlots := make(chan struct{}, max(ob.cfg.ProbeWorkers, 1))
	for _, t := range ob.cfg.Targets {
		j := &job{target: t}
		if t.Check.Probe != nil {
			// Built once per target: a probe keeps what its runs share
			// (an HTTP probe's client), and nothing between runs.
			p, err := t.Check.NewProbe(t.Host)
			if err != nil {
				return fmt.Errorf("schedule: %w", err)
			}
			j.probe, j.slots = p, probeSlots
		} else {
			j.cmd = plugin.Command{Argv: t.Check.Argv(t.Host), Timeout: t.Check.Timeout, Started: j.start}
		}
		ob.jobs[instanceKey{t.Host, t.Check.Name}] = j
		k := slotKey{t.Check.Interval, splay(t, ob.cfg.Observer, ob.cfg.Nodes).Truncate(slotWidth)}
		if _, ok := slots[k]; !ok {
			order = append(order, k)
		}
		slots[k] = append(slots[k], j)
	}
	for _, k := range order {
		jobs := slots[k]
		start := now.Add(k.offset)
		// Registering many jobs takes time and gocron refuses a start in the
		// past: a slot whose moment has gone by starts one interval later,
		// keeping its phase.
		for !start.After(time.Now()) {
			start = start.Add(k.interval)
		}
		_, err := s.NewJob(
			gocron.DurationJob(k.interval),
			gocron.NewTask(func() { ob.runSlot(ctx, jobs) }),
			gocron.WithStartAt(gocron.WithStartDateTime(start)),
		)
		if err != nil {
			t := jobs[0].target
			return fmt.Errorf("schedule %s on %s (and %d more checks): %w", t.Check.Name, t.Host, len(jobs)-1, err)
		}
	}
	return nil
}

// runSlot runs the targets of one slot concurrently (the runner bounds how
// many plugins really run) and returns when all of them have, so stopping
// the scheduler waits for every check it started.
func (ob *Observer) runSlot(ctx context.Context, jobs []*job) {
	if len(jobs) == 1 {
		ob.runJob(ctx, jobs[0])
		return
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { ob.runJob(ctx, j) })
	}
	wg.Wait()
}

// runJob runs j once unless its previous run is still going.
func (ob *Observer) runJob(ctx context.Context, j *job) {
	if !j.running.CompareAndSwap(false, true) {
		ob.late.skip(j, !j.begun.Load())
		ob.metrics.skipped.Inc()
		ob.log.Debug("check still running, skipped", "host", j.target.Host, "check", j.target.Check.Name)
		return
	}
	defer j.running.Store(false)
	j.begun.Store(false)
	ob.late.ran()
	r := ob.run(ctx, j)
	if ctx.Err() != nil {
		return // killed by shutdown: not an observation of the target
	}
	r.Host, r.Check, r.Observer, r.Domain = j.target.Host, j.target.Check.Name, ob.cfg.Observer, ob.cfg.Domain
	ob.record(r)
}

// run runs j's plugin through the runner, or its probe. A probe waits for
// one of the observer's probe slots, as a plugin waits for a worker; the probe's timeout (the check's) counts from
// its start, not from the wait, as a plugin's does.
func (ob *Observer) run(ctx context.Context, j *job) check.Result {
	if j.probe == nil {
		return ob.runner.Run(ctx, j.cmd)
	}
	// A done ctx must win even when a slot is free, which select alone,
	// choosing at random among ready cases, would not promise.
	if ctx.Err() == nil {
		select {
		case j.slots <- struct{}{}:
			defer func() { <-j.slots }()
			j.start()
			return j.probe.Run(ctx)
		case <-ctx.Done():
		}
	}
	return check.Result{Status: check.Unknown, Raw: check.Unknown.String(), ExitCode: -1,
		Output: fmt.Sprintf("probe not started: %v", context.Cause(ctx)), Start: time.Now()}
}
