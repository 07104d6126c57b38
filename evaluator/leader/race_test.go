//go:build race

package leader

// raceEnabled reports that the race detector is on: sync.Pool then drops
// a quarter of what is put back, so counts of allocations mean nothing.
const raceEnabled = true
