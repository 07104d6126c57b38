// Package lock provides the leader lease: one evaluator at a time holds it
// and makes the decisions of the cluster. Local, here, is the lease of a
// single node; the Redis lease lives in lock/redislease.
package lock

import "context"

// Term is one tenure of leadership.
type Term struct {
	// Epoch is the fencing token of this term: it grows with every
	// acquisition, so state written under an older epoch can be refused.
	Epoch int64
	// Lost is closed when the term ends: the lease could not be renewed, its
	// deadline passed, or it was released.
	Lost <-chan struct{}
}

// Local is the lease of a node that is alone: it is always granted at once
// and never lost, so a single `dmonitor run` is its own leader.
type Local struct{}

// Acquire returns a term that never ends. It fails only if ctx is done.
func (Local) Acquire(ctx context.Context) (Term, error) {
	if err := ctx.Err(); err != nil {
		return Term{}, err
	}
	return Term{Epoch: 1, Lost: make(chan struct{})}, nil
}

// Release does nothing: there is no one to hand the lease to.
func (Local) Release(context.Context) error { return nil }
