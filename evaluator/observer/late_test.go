package observer

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/internal/await"
)

// TestLateChecksReported: a run come due while the check's previous run
// still waits for a worker is skipped, and the self check SelfSchedule
// reports it: critical, naming the check, while a tenth or more of the
// runs come due over its last lateReports reports were skipped so; OK
// again once none of them holds such a skip. A run skipped while the
// previous one runs is not counted.
func TestLateChecksReported(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	if err := syscall.Mkfifo(release, 0o600); err != nil {
		t.Fatal(err)
	}
	hold := &config.Check{Name: "hold", Interval: time.Hour, Timeout: time.Minute,
		Command: []string{"/bin/sh", "-c", "read x < " + release + "; echo OK"}}
	queued := &config.Check{Name: "queued", Interval: time.Hour, Timeout: time.Minute,
		Command: []string{"/bin/sh", "-c", "echo OK"}}
	ob := probeObserver(t, 1, hold, queued)
	var late SelfCheck
	for _, sc := range ob.self {
		if sc.Name == SelfSchedule {
			late = sc
		}
	}
	if late.Run == nil {
		t.Fatalf("no self check %s among %d", SelfSchedule, len(ob.self))
	}
	if st, out := late.Run(t.Context()); st != check.OK {
		t.Errorf("nothing come due yet: %s %q, want OK", st, out)
	}

	// hold takes the only worker; queued waits for it.
	ob.Recheck("x", "hold")
	await.Until(t, "hold running", func() bool { return ob.jobs[instanceKey{"x", "hold"}].begun.Load() })
	ob.Recheck("x", "queued")
	await.Until(t, "queued waiting", func() bool { return ob.jobs[instanceKey{"x", "queued"}].running.Load() })
	ob.Recheck("x", "hold")   // skipped while running: not counted
	ob.Recheck("x", "queued") // skipped while waiting for the worker
	await.Until(t, "four runs come due", func() bool { return ob.late.due.Load() == 4 })
	st, out := late.Run(t.Context())
	if st != check.Critical || !strings.Contains(out, "1 of 4 runs come due over the last 6 reports skipped waiting for a worker") ||
		!strings.Contains(out, "queued on x among them") {
		t.Errorf("one of four runs skipped waiting: %s %q, want CRITICAL naming queued on x", st, out)
	}

	f, err := os.OpenFile(release, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	ob.rechecks.Wait()
	// The skip counts for lateReports reports, then no longer.
	for i := range lateReports {
		st, out := late.Run(t.Context())
		if want := i < lateReports-1; (st == check.Critical) != want {
			t.Errorf("report %d after the skip: %s %q, want critical %v", i+2, st, out, want)
		}
	}
}
