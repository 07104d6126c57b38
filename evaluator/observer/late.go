package observer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dmonitor/dmonitor/check"
)

// SelfSchedule is critical while this node skips a tenth or more of the
// runs that come due because the previous run of the same check is still
// waiting for a worker (workers) or a probe slot (probe_workers): the
// node cannot keep up, its checks run less often than configured, so
// their results go stale and their instances unknown, which by itself
// pages nobody. A run skipped while the previous one runs (a check slower
// than its interval, a plugin hung until its timeout) is that check's
// trouble, which its own result tells; it is not counted.
const SelfSchedule = "dmonitor.schedule"

// lateShare is the share of the runs come due over the last lateReports
// reports that, skipped, makes the node late. Over several reports, not
// one: a report's window (a heartbeat, 1 to 10 s) may hold only a few
// runs, and a burst (a confirmation round, every worker briefly busy)
// should not decide alone.
const (
	lateShare   = 0.1
	lateReports = 6
)

// lateness counts the runs that come due and those skipped while the
// previous run waited for a worker, from every check's goroutine, for the
// self check SelfSchedule.
type lateness struct {
	due, skipped atomic.Int64
	// example is a job skipped since the last report, to name in it.
	example atomic.Pointer[job]

	mu sync.Mutex // serialises reports
	// seen holds the counts at the last lateReports+1 reports, a ring
	// from next: what came due and was skipped over the last reports is
	// the newest less the oldest.
	seen  [lateReports + 1][2]int64
	next  int
	named *job // the last job skipped that a report took from example
}

// ran counts a run that came due and started.
func (l *lateness) ran() { l.due.Add(1) }

// skip counts a run of j that came due while j's previous run was going,
// waiting for a worker when waiting.
func (l *lateness) skip(j *job, waiting bool) {
	l.due.Add(1)
	if !waiting {
		return
	}
	l.skipped.Add(1)
	if l.example.Load() == nil {
		l.example.CompareAndSwap(nil, j)
	}
}

// check is the self check SelfSchedule: how many of the runs come due
// over its last lateReports reports were skipped.
func (l *lateness) check(workers, probeWorkers int) SelfCheck {
	return SelfCheck{Name: SelfSchedule, Run: func(context.Context) (check.Status, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		now := [2]int64{l.due.Load(), l.skipped.Load()}
		l.seen[l.next] = now
		l.next = (l.next + 1) % len(l.seen)
		oldest := l.seen[l.next] // zero until the ring is full: counted from the start
		d, s := now[0]-oldest[0], now[1]-oldest[1]
		if ex := l.example.Swap(nil); ex != nil {
			l.named = ex
		}
		msg := fmt.Sprintf("%d of %d runs come due over the last %d reports skipped waiting for a worker", s, d, lateReports)
		if d == 0 || float64(s) < lateShare*float64(d) || l.named == nil {
			return check.OK, msg
		}
		return check.Critical, fmt.Sprintf("%s, their check's previous run still waiting for a worker (%s on %s among them): "+
			"checks run less often than their interval. Raise workers (%d) or probe_workers (%d), "+
			"lengthen the intervals, or spread the checks over more nodes",
			msg, l.named.target.Check.Name, l.named.target.Host, workers, probeWorkers)
	}}
}
