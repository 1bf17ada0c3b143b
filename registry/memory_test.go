package registry

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
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

// TestHandlerReleasesAfterLargeBlobs: the handler counts blob requests:
// a 16 MiB monolithic push and a streamed PATCH (no Content-Length) each
// lead to a release, a manifest GET does not.
func TestHandlerReleasesAfterLargeBlobs(t *testing.T) {
	h := newTestHandler(t, Config{})
	m, n := testReleaser()
	h.memory = m
	blob := bytes.Repeat([]byte("b"), bulkTransfer)
	dg := digest.FromBytes(blob)
	serve := func(req *http.Request) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve(httptest.NewRequest(http.MethodPost, "/v2/big/blobs/uploads/?digest="+dg.String(), bytes.NewReader(blob))); rec.Code != http.StatusCreated {
		t.Fatalf("monolithic push: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, func() bool { return n.Load() == 1 })

	rec := serve(httptest.NewRequest(http.MethodPost, "/v2/big/blobs/uploads/", nil))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("start upload: %d", rec.Code)
	}
	waitFor(t, func() bool { return n.Load() == 1 }) // a small request
	patch := httptest.NewRequest(http.MethodPatch, rec.Header().Get("Location"), io.NopCloser(strings.NewReader("streamed")))
	patch.ContentLength = -1
	if rec := serve(patch); rec.Code != http.StatusAccepted {
		t.Fatalf("streamed patch: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, func() bool { return n.Load() == 2 })

	serve(httptest.NewRequest(http.MethodGet, "/v2/big/manifests/latest", nil))
	time.Sleep(60 * time.Millisecond)
	if got := n.Load(); got != 2 {
		t.Fatalf("%d releases after a manifest request, want 2", got)
	}
}
