// Package await is the tests' one way to wait for what they cannot be told
// of: a real process, a server, a clock. It polls a condition until it
// holds, with a deadline that only ends a test that hangs.
package await

import (
	"testing"
	"time"
)

// Limit is how long Until waits for its condition: far longer than
// anything awaited takes on a loaded machine.
const Limit = 30 * time.Second

// Until polls cond until it holds, and fails the test, naming what it
// waited for, if it does not within Limit. It polls every millisecond at
// first and backs off to every 20ms, so a quick event is seen at once and
// a slow one does not keep a core busy.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Limit)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", Limit, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}
