package storage

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// TestGCMetrics: runs are counted by result, and a collection's freed
// blobs and bytes are what its report says; a dry run frees nothing.
func TestGCMetrics(t *testing.T) {
	t.Parallel() // no test hook
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	reg := prometheus.NewRegistry()
	s := NewWithOptions(d, Options{GracePeriod: testGrace, Registerer: reg})
	orphan(t, s, "team/app", "one")
	age(t, root)

	if rep, _ := collect(t, s, GCOptions{DryRun: true}); rep.BlobsDeleted == 0 {
		t.Fatal("the dry run found nothing to remove")
	}
	if got := testutil.ToFloat64(s.gc.blobs); got != 0 {
		t.Errorf("blobs deleted after a dry run: %v, want 0", got)
	}
	rep, _ := collect(t, s, GCOptions{})
	if rep.BlobsDeleted != 3 || rep.BytesFreed == 0 {
		t.Fatalf("report %+v: want 3 blobs freed", rep)
	}
	host, _ := os.Hostname()
	lock, _ := json.Marshal(gcLock{ID: "x", Host: host, PID: os.Getpid(), Expires: time.Now().Add(time.Minute)})
	if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(gcLockPath())), lock, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CollectGarbage(ctx, GCOptions{}); !errors.Is(err, ErrGCRunning) {
		t.Fatalf("with the lock held: %v", err)
	}

	for _, c := range []struct {
		name string
		got  prometheus.Collector
		want float64
	}{
		{"success runs", s.gc.success, 2},
		{"skipped runs", s.gc.skipped, 1},
		{"failed runs", s.gc.failure, 0},
		{"blobs deleted", s.gc.blobs, float64(rep.BlobsDeleted)},
		{"bytes freed", s.gc.bytes, float64(rep.BytesFreed)},
	} {
		if got := testutil.ToFloat64(c.got); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if ts := testutil.ToFloat64(s.gc.lastSuccess); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last success at %v", ts)
	}
	// The registry holds them under their names.
	if n, err := testutil.GatherAndCount(reg, "berth_gc_runs_total", "berth_gc_freed_bytes_total", "berth_gc_blobs_deleted_total"); err != nil || n != 5 {
		t.Errorf("gathered %d series (%v), want 3 runs + 2", n, err)
	}
}
