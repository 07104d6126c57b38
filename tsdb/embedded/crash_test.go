package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// crashChildEnv, when set to a directory, turns the test binary into the
// child of TestKill9KeepsAcknowledgedPoints: it appends batches to a store
// there and prints "acked N" after each Append returns, until killed.
const crashChildEnv = "DMONITOR_EMBEDDED_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

const crashSeries, crashPerSeries = 20, 5

// crashBatch is batch n of the child: crashSeries series with
// crashPerSeries points each, at times and values derived from n.
func crashBatch(n int) []tsdb.Point {
	pts := make([]tsdb.Point, 0, crashSeries*crashPerSeries)
	for j := range crashPerSeries {
		for i := range crashSeries {
			pts = append(pts, tsdb.Point{
				Metric: "crash",
				Tags:   map[string]string{"host": fmt.Sprintf("h%02d", i)},
				Time:   at(int64(n*crashPerSeries + j)),
				Value:  float64(n*1000 + j*100 + i),
			})
		}
	}
	return pts
}

func crashChild(dir string) int {
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for n := 0; ; n++ {
		if err := s.Append(context.Background(), crashBatch(n)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Unbuffered: the line leaves the process when Append has returned.
		fmt.Printf("acked %d\n", n)
	}
}

func TestKill9KeepsAcknowledgedPoints(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	// Read acknowledgements until enough batches are in, with a deadline
	// in case the child hangs.
	const want = 50
	acked := -1
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(60 * time.Second)
	for acked < want-1 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited after %d batches: %s", acked+1, stderr.String())
			}
			n, err := strconv.Atoi(strings.TrimPrefix(line, "acked "))
			if err != nil || n != acked+1 {
				t.Fatalf("child said %q after batch %d", line, acked)
			}
			acked = n
		case <-deadline:
			t.Fatalf("child acknowledged %d batches in 60s: %s", acked+1, stderr.String())
		}
	}
	// Kill in the middle of its next Append.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	for range lines { // let the reader finish
	}

	s := openStore(t, dir, Options{})
	out := mustQuery(t, s, tsdb.Query{Metric: "crash", Start: at(0), End: at(1 << 30)})
	stored := map[string]map[int64]float64{}
	for _, ser := range out {
		m := map[int64]float64{}
		for _, x := range svsOf(t, ser) {
			m[x.sec] = x.v
		}
		stored[ser.Tags["host"]] = m
	}
	missing := 0
	for n := 0; n <= acked; n++ {
		for _, p := range crashBatch(n) {
			v, ok := stored[p.Tags["host"]][int64(p.Time.Sub(base)/time.Second)]
			if !ok || v != p.Value {
				missing++
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of the %d acknowledged points are missing or wrong after kill -9", missing, (acked+1)*crashSeries*crashPerSeries)
	}
}
