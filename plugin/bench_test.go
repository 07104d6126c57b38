package plugin

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/check"
)

var dummyArgv = []string{pluginDir + "check_dummy", "0", "ok"}

// benchWorkers is how many plugins run at once in the benchmarks: enough to
// keep every core busy with forks and execs.
func benchWorkers() int { return 4 * runtime.GOMAXPROCS(0) }

func runDummy(b *testing.B, r *Runner) {
	res := r.Run(context.Background(), Command{Argv: dummyArgv})
	if res.Status != check.OK {
		b.Errorf("check_dummy: %v %q", res.Status, res.Output)
	}
}

func execDummy(b *testing.B) {
	if _, err := exec.Command(dummyArgv[0], dummyArgv[1:]...).Output(); err != nil {
		b.Errorf("check_dummy: %v", err)
	}
}

// BenchmarkRunDummy runs check_dummy through a Runner, many at once.
func BenchmarkRunDummy(b *testing.B) {
	r := NewRunner(benchWorkers(), Options{})
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			runDummy(b, r)
		}
	})
}

// BenchmarkExecFloor is the baseline: the same plugin, the same parallelism,
// through a bare exec.Command(...).Output().
func BenchmarkExecFloor(b *testing.B) {
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			execDummy(b)
		}
	})
}

// BenchmarkRunnerVsFloor measures both in the same process, in alternating
// rounds so that load from elsewhere hits both alike, and reports
// runner/floor, the Runner's speed as a fraction of the bare loop's (1 is
// parity), and the daemon's own CPU time per run of each (children excluded).
func BenchmarkRunnerVsFloor(b *testing.B) {
	r := NewRunner(benchWorkers(), Options{})
	const round = 64
	var runnerTime, floorTime time.Duration
	var runnerCPU, floorCPU time.Duration
	var runs int
	measure := func(one func()) (wall, cpu time.Duration) {
		cpu0 := selfCPU()
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan struct{}, round)
		for range round {
			next <- struct{}{}
		}
		close(next)
		for range benchWorkers() {
			wg.Go(func() {
				for range next {
					one()
				}
			})
		}
		wg.Wait()
		return time.Since(start), selfCPU() - cpu0
	}
	for b.Loop() {
		w, c := measure(func() { runDummy(b, r) })
		runnerTime, runnerCPU = runnerTime+w, runnerCPU+c
		w, c = measure(func() { execDummy(b) })
		floorTime, floorCPU = floorTime+w, floorCPU+c
		runs += round
	}
	b.ReportMetric(float64(runs)/runnerTime.Seconds(), "runner-runs/s")
	b.ReportMetric(float64(runs)/floorTime.Seconds(), "floor-runs/s")
	b.ReportMetric(floorTime.Seconds()/runnerTime.Seconds(), "runner/floor")
	b.ReportMetric(float64(runnerCPU.Microseconds())/float64(runs), "runner-cpu-us/run")
	b.ReportMetric(float64(floorCPU.Microseconds())/float64(runs), "floor-cpu-us/run")
}

// selfCPU is the user and system time this process has used, not counting
// its children: what the daemon itself spends.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
