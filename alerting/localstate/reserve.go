package localstate

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DefaultReserve is the disk space set aside for the alert state: room
// for thousands of incidents' worth of writes.
const DefaultReserve = 8 << 20

// reserve is disk space set aside for the alert state: a file of zeros
// beside it, given back to the file system when a write fails for lack of
// space, so that the incidents decided while the disk is full are stored
// all the same and a restart on the full disk still knows them. It is
// taken again once there is room.
type reserve struct {
	path string
	size int64

	mu    sync.Mutex
	held  bool
	tried time.Time // the last attempt to take it
}

// retakeEvery bounds how often a missing reserve is taken again.
const retakeEvery = time.Minute

// take writes the reserve file, unless it is held; on failure nothing is
// left behind.
func (r *reserve) take(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held || r.size <= 0 {
		return nil
	}
	r.tried = now
	if fi, err := os.Stat(r.path); err == nil && fi.Size() == r.size {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 >= r.size {
			r.held = true // kept from the last run, and not sparse
			return nil
		}
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("reserve disk space for the alert state: %w", err)
	}
	// Written, not truncated: a sparse file reserves nothing.
	zeros := make([]byte, 1<<20)
	for left := r.size; left > 0 && err == nil; left -= int64(len(zeros)) {
		_, err = f.Write(zeros[:min(left, int64(len(zeros)))])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(r.path)
		return fmt.Errorf("reserve disk space for the alert state in %s: %w", r.path, err)
	}
	r.held = true
	return nil
}

// retake takes the reserve again if it was given back and has not been
// tried for a while.
func (r *reserve) retake(now time.Time) error {
	r.mu.Lock()
	due := !r.held && now.Sub(r.tried) >= retakeEvery
	r.mu.Unlock()
	if !due {
		return nil
	}
	return r.take(now)
}

// release gives the reserve back; false when it was not held.
func (r *reserve) release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held {
		return false
	}
	r.held = false
	return os.Remove(r.path) == nil
}

// noSpace says whether err is the file system being full.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// update runs fn in a write transaction. When the disk is full, it gives
// the reserve back and tries once more; once there is room again, it
// takes the reserve again.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	err := s.db.Update(fn)
	if noSpace(err) && s.reserve.release() {
		s.log.Error("disk full: the alert state is written into the space reserved for it; free some space",
			"path", s.path, "reserve", s.reserve.size, "err", err)
		err = s.db.Update(fn)
	}
	if err == nil {
		if rerr := s.reserve.retake(s.now()); rerr != nil {
			s.log.Debug("disk space for the alert state not reserved yet", "err", rerr)
		}
	}
	return err
}
