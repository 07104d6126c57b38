package evaluator

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/plugin"
)

// job is one scheduled check of one host.
type job struct {
	target  config.Target
	cmd     plugin.Command
	running atomic.Bool // guards against overlapping runs of this check
}

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

// schedule registers one gocron job per target on s. Overlaps are guarded
// by each job's own flag rather than gocron's singleton mode, which costs a
// goroutine and a buffered channel per job.
func (e *Evaluator) schedule(ctx context.Context, s gocron.Scheduler, now time.Time) ([]*job, error) {
	jobs := make([]*job, 0, len(e.cfg.Targets))
	for _, t := range e.cfg.Targets {
		j := &job{target: t, cmd: plugin.Command{Argv: t.Check.Argv(t.Host), Timeout: t.Check.Timeout}}
		start := now.Add(splay(t, e.cfg.Observer, e.cfg.Nodes))
		_, err := s.NewJob(
			gocron.DurationJob(t.Check.Interval),
			gocron.NewTask(func() { e.runJob(ctx, j) }),
			gocron.WithStartAt(gocron.WithStartDateTime(start)),
			gocron.WithName(t.Host+"/"+t.Check.Name),
		)
		if err != nil {
			return nil, fmt.Errorf("schedule %s on %s: %w", t.Check.Name, t.Host, err)
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// runJob runs j once unless its previous run is still going.
func (e *Evaluator) runJob(ctx context.Context, j *job) {
	if !j.running.CompareAndSwap(false, true) {
		e.metrics.skipped.Inc()
		e.log.Debug("check still running, skipped", "host", j.target.Host, "check", j.target.Check.Name)
		return
	}
	defer j.running.Store(false)
	r := e.runner.Run(ctx, j.cmd)
	if ctx.Err() != nil {
		return // killed by shutdown: not an observation of the target
	}
	r.Host, r.Check, r.Observer = j.target.Host, j.target.Check.Name, e.cfg.Observer
	e.record(r)
}
