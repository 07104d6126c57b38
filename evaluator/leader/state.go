package leader

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/dmonitor/dmonitor/alerting"
)

// StateKey is the key of the instance of rule on host's check in a
// StateStore.
func StateKey(rule, host, check string) string { return stateKey(instKey{rule, host, check}) }

var _ StateStore = (*MemState)(nil)

// MemState is a StateStore in memory: the state lives as long as the
// process. The daemon always uses one on disk; this one serves an
// evaluator given none, and tests.
type MemState struct {
	mu    sync.Mutex
	epoch int64
	insts map[string]alerting.Instance
}

// NewMemState returns an empty MemState.
func NewMemState() *MemState { return &MemState{insts: make(map[string]alerting.Instance)} }

// TakeOver makes epoch the current one.
func (m *MemState) TakeOver(_ context.Context, epoch int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch = epoch
	return nil
}

// LoadAll returns every instance held.
func (m *MemState) LoadAll(context.Context) (map[string]alerting.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.insts), nil
}

// Save holds inst under key; alerting.ErrFenced unless epoch is current.
func (m *MemState) Save(_ context.Context, epoch int64, key string, inst alerting.Instance) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch != m.epoch {
		return fmt.Errorf("save %q under epoch %d, current %d: %w", key, epoch, m.epoch, alerting.ErrFenced)
	}
	m.insts[key] = inst
	return nil
}

// Delete forgets key; alerting.ErrFenced unless epoch is current.
func (m *MemState) Delete(_ context.Context, epoch int64, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch != m.epoch {
		return fmt.Errorf("delete %q under epoch %d, current %d: %w", key, epoch, m.epoch, alerting.ErrFenced)
	}
	delete(m.insts, key)
	return nil
}
