// Package testlock serialises tests of different packages (so of
// different processes, which go test runs at once) that change or depend
// on the same state of the machine, such as whether the dmonitor account
// exists.
package testlock

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Hold waits for the machine-wide lock name and holds it until the test
// ends.
func Hold(t testing.TB, name string) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "dmonitor-test-"+name+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("lock %s: %v", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the flock
}
