package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/testutil"
)

// waitFor polls cond every 50ms until it holds, failing the test after
// limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestScheduledGarbageCollection: with storage.gc.enabled the serving
// registry collects on its own, removing a blob nothing references and
// an untagged manifest, and keeping the tagged image whole.
func TestScheduledGarbageCollection(t *testing.T) {
	root := t.TempDir()
	var logBuf testutil.Buffer
	srv := startServerWith(t, root, func(c *Config) {
		c.Storage.GC.Enabled = true
		c.Storage.GC.Interval = 200 * time.Millisecond
		// Longer than the push takes even on a loaded machine; the test
		// back-dates files past it.
		c.Storage.GC.GracePeriod = 10 * time.Second
		c.Storage.GC.DeleteUntagged = true
		c.Storage.Maintenance.UploadPurging.Enabled = false
	}, &logBuf)
	opts := srv.opts(t)
	repo := srv.repo(t, "team/app")
	img, untagged := randomImage(t, 2), randomImage(t, 1)
	if err := remote.Write(repo.Tag("latest"), img, opts...); err != nil {
		t.Fatal(err)
	}
	untaggedDg := imageDigest(t, untagged)
	if err := remote.Write(repo.Digest(untaggedDg.String()), untagged, opts...); err != nil {
		t.Fatal(err)
	}
	orphan, err := random.Layer(1000, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, orphan, opts...); err != nil {
		t.Fatal(err)
	}
	orphanDg, err := orphan.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := untagged.Layers()
	if err != nil {
		t.Fatal(err)
	}
	untaggedLayer, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}

	// Within the grace period scheduled runs keep everything.
	waitFor(t, 10*time.Second, "a scheduled collection", func() bool { return strings.Contains(logBuf.String(), "msg=\"garbage collection\"") })
	checkBlobs(t, root, true, "within the grace period", digest.Digest(orphanDg.String()), digest.Digest(untaggedDg.String()))

	ageStorage(t, root)
	gone := []digest.Digest{digest.Digest(orphanDg.String()), digest.Digest(untaggedDg.String()), digest.Digest(untaggedLayer.String())}
	waitFor(t, 20*time.Second, "the scheduled collection removing the unreferenced blobs", func() bool {
		for _, dg := range gone {
			if blobStored(t, root, dg) {
				return false
			}
		}
		return true
	})
	resp, _ := srv.do(t, http.MethodHead, srv.url("/v2/team/app/blobs/"+orphanDg.String()), nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of the collected blob: %d, want 404", resp.StatusCode)
	}
	checkNotFound(t, repo.Digest(untaggedDg.String()), opts...)
	got, err := remote.Image(repo.Tag("latest"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, got)
	if !strings.Contains(logBuf.String(), "garbage collection removed") {
		t.Errorf("removals not logged:\n%s", logBuf.String())
	}
}

// TestScheduledUploadPurge: with uploadpurging enabled the serving
// registry removes a session that stopped receiving data.
func TestScheduledUploadPurge(t *testing.T) {
	srv := startServerWith(t, t.TempDir(), func(c *Config) {
		c.Storage.Maintenance.UploadPurging = UploadPurgingConfig{Enabled: true, Age: 3 * time.Second, Interval: 200 * time.Millisecond}
	}, nil)
	resp, _ := srv.do(t, http.MethodPost, srv.url("/v2/team/app/blobs/uploads/"), nil, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("POST uploads: %d %q", resp.StatusCode, loc)
	}
	if !strings.HasPrefix(loc, "http") {
		loc = srv.url(loc)
	}
	if resp, _ := srv.do(t, http.MethodGet, loc, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("upload status right after POST: %d, want 204", resp.StatusCode)
	}
	waitFor(t, 15*time.Second, "the scheduled purge removing the session", func() bool {
		resp, _ := srv.do(t, http.MethodGet, loc, nil, nil)
		return resp.StatusCode == http.StatusNotFound
	})
}

// TestMaintenanceStopsWithContext: serve waits for the scheduled tasks,
// which stop when its context ends, even in the middle of an interval.
func TestMaintenanceStopsWithContext(t *testing.T) {
	cfg := defaultConfig()
	cfg.Storage.GC.Enabled = true
	cfg.Storage.GC.Interval = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	s := openTestStore(t, t.TempDir())
	wait := startMaintenance(ctx, cfg, s, slog.New(slog.DiscardHandler))
	var stopped atomic.Bool
	go func() {
		wait()
		stopped.Store(true)
	}()
	time.Sleep(50 * time.Millisecond)
	if stopped.Load() {
		t.Fatal("maintenance stopped before its context ended")
	}
	cancel()
	waitFor(t, 5*time.Second, "maintenance stopping", stopped.Load)
}

// TestRunEvery: the first call is one interval after the start, the next
// one interval after a call returns.
func TestRunEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	calls := make(chan time.Time, 10)
	done := make(chan struct{})
	go func() {
		runEvery(ctx, 100*time.Millisecond, func(context.Context) {
			calls <- time.Now()
			time.Sleep(100 * time.Millisecond)
		})
		close(done)
	}()
	first, second := <-calls, <-calls
	cancel()
	<-done
	if d := first.Sub(start); d < 100*time.Millisecond {
		t.Errorf("first run %v after the start, want at least one interval", d)
	}
	if d := second.Sub(first); d < 200*time.Millisecond {
		t.Errorf("second run %v after the first began, want its duration plus an interval", d)
	}
}
