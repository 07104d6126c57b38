// Package plugin runs Nagios-style check plugins and turns what they print
// into a check.Result.
//
// Parse reads a plugin's stdout by the two conventions dmonitor accepts: a
// first line of exactly OK or FAIL (the original dmonitor's), and otherwise
// the Nagios plugin API, where the exit code is the status and the text
// carries a message, long output and performance data. Parse is pure, so the
// same bytes always give the same Output.
//
// A Runner starts plugins without a shell, each in its own process group,
// with a bounded number running at once. It enforces the check's timeout by
// signalling the whole group (SIGTERM, then SIGKILL after a grace period),
// caps what it keeps of stdout and stderr while still draining both, and
// kills whatever a plugin leaves behind in its group, so a stray background
// child can neither outlive the check nor hold Run open.
//
// The Runner multiplexes a run's stdout, stderr and exit (a pidfd) on one
// epoll instance that Go's own poller waits on, so a run costs no goroutine
// besides the caller's. This needs Linux with pidfd support (5.3 or later);
// on older kernels a plugin's exit is only noticed when its pipes close, and a
// background child holding them makes the run end at its timeout.
package plugin
