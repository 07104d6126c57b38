package spool

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

// childEnv, when set, turns the test binary into a child process of the
// kill -9 tests: "spool:DIR" or "replay:DIR" (see spoolChild and
// replayChild).
const childEnv = "DMONITOR_SPOOL_CRASH_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		mode, dir, _ := strings.Cut(v, ":")
		switch mode {
		case "spool":
			os.Exit(spoolChild(dir))
		case "replay":
			os.Exit(replayChild(dir))
		}
		fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

const crashPer = 50 // points per batch in the kill -9 tests

// spoolChild appends batches of crashPer points to a spool in dir whose
// downstream is always unavailable, and prints "acked N" after Append
// returns for batch N, until killed.
func spoolChild(dir string) int {
	s, err := Open(dir, &fakeStore{down: true}, Options{SegmentBytes: 16 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for n := 0; ; n++ {
		if err := s.Append(context.Background(), pts(n*crashPer, crashPer)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Unbuffered: the line leaves the process when Append has
		// returned.
		fmt.Printf("acked %d\n", n)
	}
}

// child starts the test binary as a child in mode on dir and returns its
// stdout lines; the child is killed when the test ends.
func child(t *testing.T, mode, dir string) (*exec.Cmd, <-chan string, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode+":"+dir)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		for range lines { // let the reader finish
		}
	})
	return cmd, lines, stderr
}

// kill9 kills the child with SIGKILL and waits for it.
func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

func TestKill9WhileSpoolingKeepsAcknowledgedPoints(t *testing.T) {
	dir := t.TempDir()
	cmd, lines, stderr := child(t, "spool", dir)
	const want = 300 // batches, over several segments
	acked := -1
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
	// Kill it wherever it is: most likely inside its next Append. Read
	// every acknowledgement it printed before waiting for it: Wait closes
	// the pipe, and lines still in it would be lost, and with them
	// batches that were acknowledged.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for line := range lines {
		if n, err := strconv.Atoi(strings.TrimPrefix(line, "acked ")); err == nil && n == acked+1 {
			acked = n
		}
	}
	cmd.Wait()

	down := &fakeStore{}
	s := openSpool(t, dir, down, fastRetry(Options{SegmentBytes: 16 << 10}))
	// The batch in flight at the kill may or may not be there, whole;
	// every acknowledged one must be.
	spooled := int(s.Stats().Points)
	if spooled != (acked+1)*crashPer && spooled != (acked+2)*crashPer {
		t.Fatalf("%d points spooled after kill -9, want the %d acknowledged (+%d in flight)", spooled, (acked+1)*crashPer, crashPer)
	}
	startRun(t, s)
	waitDelivered(t, s, down, spooled)
	checkValues(t, down.values(), seq(0, spooled))
}

const (
	replayTotal = 20000 // points spooled for the replay child
	replayBatch = 100   // its ReplayBatch: calls of 50 or 100 points
	replayStop  = 57    // the call in which it stops, to be killed
)

// replayChild replays the spool in dir (filled by the parent) into a
// downstream that writes each delivered batch's values to dir/delivered,
// one write(2) per call. Call replayStop is written and then never
// returns: the child prints "stuck" and waits to be killed, between
// delivering a batch and saving its replay position.
func replayChild(dir string) int {
	out, err := os.OpenFile(dir+"/delivered", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	down := &fileStore{f: out}
	s, err := Open(dir, down, Options{ReplayBatch: replayBatch, SegmentBytes: 64 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 1
}

// fileStore is replayChild's downstream.
type fileStore struct {
	f     *os.File
	calls int
}

func (d *fileStore) Append(ctx context.Context, ps []tsdb.Point) error {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%d\n", int(p.Value))
	}
	b.WriteString(".\n") // the end of a call
	if _, err := d.f.WriteString(b.String()); err != nil {
		return err
	}
	if d.calls++; d.calls == replayStop {
		fmt.Println("stuck")
		select {}
	}
	return nil
}

func TestKill9WhileReplayingDeliversAtMostOneBatchTwice(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &fakeStore{down: true}, Options{SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < replayTotal; i += crashPer {
		mustAppend(t, s, pts(i, crashPer))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cmd, lines, stderr := child(t, "replay", dir)
	select {
	case line := <-lines:
		if line != "stuck" {
			t.Fatalf("child said %q: %s", line, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("child did not reach call %d in 60s: %s", replayStop, stderr.String())
	}
	kill9(t, cmd)

	var delivered []int
	lastCall := 0 // where the last call's points start in delivered
	calls := 0
	for _, f := range strings.Fields(string(readFile(t, dir+"/delivered"))) {
		if f == "." {
			if calls++; calls < replayStop {
				lastCall = len(delivered)
			}
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		delivered = append(delivered, v)
	}
	if calls != replayStop {
		t.Fatalf("child made %d calls, want %d", calls, replayStop)
	}
	checkValues(t, delivered, seq(0, len(delivered)))

	down := &fakeStore{}
	s = openSpool(t, dir, down, fastRetry(Options{ReplayBatch: replayBatch}))
	startRun(t, s)
	waitDelivered(t, s, down, replayTotal-lastCall)
	// The batch whose position was not saved comes again, and only it.
	checkValues(t, down.values(), seq(lastCall, replayTotal))
}
