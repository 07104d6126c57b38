package embedded

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// spaceCheckInterval is how long an answer of the file system about free
// space is trusted for: others (the engine's compactions, other programs)
// write too. A statfs costs about a microsecond, so once a second is
// nothing, and a second of the writer's own batches is accounted for by
// the budget below anyway.
const spaceCheckInterval = time.Second

// bytesPerPoint over-estimates what one point costs the disk: its share of
// a WAL samples record (a series reference and a time delta as varints and
// an 8-byte value, at most 23 bytes), of its series record when new, and of
// the head chunk the engine writes later (about 2 bytes). Over-estimating
// only asks the file system a little sooner.
const bytesPerPoint = 64

// diskGuard says whether the file system holding dir has room for a batch
// beyond the reserve. It asks the file system (statfs) at most once per
// spaceCheckInterval, and in between subtracts an estimate of each batch
// from the room the last answer left, asking again as soon as that runs
// out, so the hot path is two atomic operations and a clock read.
type diskGuard struct {
	dir     string
	reserve uint64
	epoch   time.Time // monotonic base for deadline

	// budget is how many bytes the store may still write before asking the
	// file system again: the free space above the reserve at the last
	// check minus the estimates of the batches since.
	budget atomic.Int64
	// deadline is when the last answer expires, in nanoseconds after epoch.
	deadline atomic.Int64

	mu   sync.Mutex // serialises checks
	free atomic.Uint64
	err  atomic.Pointer[error] // the last statfs error, nil when it worked
}

func newDiskGuard(dir string, reserve uint64) *diskGuard {
	g := &diskGuard{dir: dir, reserve: reserve, epoch: time.Now()}
	g.deadline.Store(math.MinInt64) // ask at the first batch
	return g
}

// room reports whether n more bytes leave the reserve free.
func (g *diskGuard) room(n int64) bool {
	if g.budget.Add(-n) >= 0 && int64(time.Since(g.epoch)) < g.deadline.Load() {
		return true
	}
	return g.check(n)
}

// check asks the file system and resets the budget, n bytes spent.
func (g *diskGuard) check(n int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	free, err := freeBytes(g.dir)
	if err != nil {
		// Say yes: the engine's own write error, if any, is the better
		// judge, and a store that cannot statfs must not stop writing.
		g.err.Store(&err)
		g.budget.Store(math.MaxInt64 / 2)
	} else {
		g.err.Store(nil)
		g.free.Store(free)
		avail := int64(math.MaxInt64 / 2)
		if free < g.reserve {
			avail = -int64(g.reserve - free)
		} else if d := free - g.reserve; d < uint64(avail) {
			avail = int64(d)
		}
		g.budget.Store(avail - n)
	}
	g.deadline.Store(int64(time.Since(g.epoch) + spaceCheckInterval))
	return g.budget.Load() >= 0
}

// expire makes the next room ask the file system: after a write error, or
// when space may have been freed.
func (g *diskGuard) expire() { g.deadline.Store(math.MinInt64) }

// lastFree is the free space at the last check.
func (g *diskGuard) lastFree() uint64 { return g.free.Load() }
