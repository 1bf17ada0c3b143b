package registry

import (
	"sync/atomic"
	"testing"
	"time"
)

func testReleaser() (*memoryReleaser, *atomic.Int32) {
	var n atomic.Int32
	return &memoryReleaser{delay: 20 * time.Millisecond, release: func() { n.Add(1) }}, &n
}

// TestMemoryReleasedAfterLargeTransfers: memory is handed back once, when
// the last of overlapping transfers ends, and only after a large one.
func TestMemoryReleasedAfterLargeTransfers(t *testing.T) {
	m, n := testReleaser()
	m.begin()
	m.begin()
	m.end(bulkTransfer) // another transfer still runs
	time.Sleep(60 * time.Millisecond)
	if got := n.Load(); got != 0 {
		t.Fatalf("released %d times while a transfer ran", got)
	}
	m.end(100)
	waitFor(t, func() bool { return n.Load() == 1 })

	m.begin()
	m.end(-1) // a streamed body counts as large
	waitFor(t, func() bool { return n.Load() == 2 })

	m.begin()
	m.end(1 << 10)
	time.Sleep(60 * time.Millisecond)
	if got := n.Load(); got != 2 {
		t.Fatalf("released after a small transfer (%d releases)", got)
	}
}

// TestMemoryReleaseWaitsForNewTransfer: a transfer that starts before the
// release is due postpones it until it ends.
func TestMemoryReleaseWaitsForNewTransfer(t *testing.T) {
	m, n := testReleaser()
	m.begin()
	m.end(bulkTransfer)
	m.begin()
	time.Sleep(60 * time.Millisecond)
	if got := n.Load(); got != 0 {
		t.Fatalf("released %d times while a transfer ran", got)
	}
	m.end(0)
	waitFor(t, func() bool { return n.Load() == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}
