package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/berth-registry/berth/storage"
)

// StorageCheck is Distribution's health.storagedriver check: it reads from
// storage every interval, and after threshold failures in a row readiness
// (/readyz) answers 503 until a read succeeds again. Liveness and pulls are
// not affected: a registry whose storage is away for a moment should leave
// the load balancer's pool, not be restarted. Create it with
// NewStorageCheck and run it with Run.
type StorageCheck struct {
	store     *storage.Store
	interval  time.Duration
	threshold int

	mu       sync.Mutex
	failures int   // consecutive failed checks
	last     error // the last check's failure, nil after a success
}

// NewStorageCheck returns a check of store every interval (zero: 10s) that
// fails readiness after threshold failures in a row (zero: 3).
func NewStorageCheck(store *storage.Store, interval time.Duration, threshold int) *StorageCheck {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if threshold <= 0 {
		threshold = 3
	}
	return &StorageCheck{store: store, interval: interval, threshold: threshold}
}

// Run checks storage now and then every interval until ctx ends.
func (s *StorageCheck) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check reads from storage once, with the interval as its deadline, and
// records the outcome.
func (s *StorageCheck) Check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.interval)
	err := s.store.Check(cctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not storage's failure
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.failures, s.last = 0, nil
		return
	}
	s.failures++
	s.last = err
}

// Err returns nil while fewer than threshold checks in a row have failed,
// else the last failure.
func (s *StorageCheck) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures < s.threshold {
		return nil
	}
	return fmt.Errorf("%d storage checks in a row failed, the last: %w", s.failures, s.last)
}

// DebugHealth answers as Distribution's /debug/health does, for monitoring
// written against it: 200 and {} while storage works, else 503 and an
// object naming each failing check with its error. The errors are
// internal detail: serve it on the debug listener, never the API's.
func (h *Handler) DebugHealth(w http.ResponseWriter, r *http.Request) {
	failing := map[string]string{}
	if err := h.store.Writable(); err != nil {
		failing["storage_writable"] = err.Error()
	}
	if h.check != nil {
		if err := h.check.Err(); err != nil {
			failing["storagedriver"] = err.Error()
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if len(failing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(failing)
}
