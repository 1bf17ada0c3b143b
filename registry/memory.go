package registry

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// bulkTransfer is how many bytes a blob request must move to count as a
// large transfer; a request body of unknown length (a streamed PATCH)
// counts as one.
const bulkTransfer = 16 << 20

// releaseDelay is how long the registry waits, after the last large
// transfer of a burst ends, before it hands memory back.
const releaseDelay = 250 * time.Millisecond

// memoryReleaser hands memory back to the system when a burst of large
// blob transfers is over. A transfer's buffers (the upload pipeline's, TLS
// records, HTTP/2 frames) are pooled and garbage collected, but Go lowers
// its heap goal only at a collection, and an idle server collects only
// every two minutes: until then it keeps the footprint of its busiest
// moment. Two collections (the first moves pooled buffers aside, the
// second frees them) and a scavenge return it to the idle size at once,
// for a few milliseconds of CPU after transfers that took seconds.
type memoryReleaser struct {
	active    atomic.Int64 // blob requests in flight
	large     atomic.Bool  // a large transfer ended since the last release
	scheduled atomic.Bool
	delay     time.Duration
	release   func() // runtime.GC then debug.FreeOSMemory; tests replace it
}

func newMemoryReleaser() *memoryReleaser {
	return &memoryReleaser{delay: releaseDelay, release: func() {
		runtime.GC()
		debug.FreeOSMemory()
	}}
}

// begin notes a blob request starting.
func (m *memoryReleaser) begin() { m.active.Add(1) }

// end notes a blob request ending after moving n bytes (n < 0: unknown,
// a streamed body) and, when it was the last one in flight after a large
// transfer, schedules the release.
func (m *memoryReleaser) end(n int64) {
	if n < 0 || n >= bulkTransfer {
		m.large.Store(true)
	}
	if m.active.Add(-1) != 0 || !m.large.Load() || !m.scheduled.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(m.delay, func() {
		m.scheduled.Store(false)
		// A transfer that started meanwhile schedules again when it ends.
		if m.active.Load() == 0 && m.large.Swap(false) {
			m.release()
		}
	})
}
