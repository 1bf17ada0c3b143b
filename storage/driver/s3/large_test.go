package s3_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/miniotest"
)

// TestLargeFile writes a file larger than S3's 5 GiB single-request limit
// through writers that each take a part of it and Close (as PATCHes on
// different replicas would), commits it, moves it (a multipart copy, the
// only way past 5 GiB) and reads it back, checking every byte by hash, and
// that the writer's memory stayed near one chunk. It moves ~11 GiB through
// MinIO's disk, so it runs only when asked:
//
//	BERTH_S3_LARGE=1 go test -run TestLargeFile -timeout 30m ./storage/driver/s3
//
// (BERTH_S3_LARGE_MIB sets the size, default 5,632 MiB.)
func TestLargeFile(t *testing.T) {
	if os.Getenv("BERTH_S3_LARGE") != "1" {
		t.Skip("set BERTH_S3_LARGE=1 to write a 5.5 GiB file to MinIO")
	}
	size := int64(5632) << 20
	if v := os.Getenv("BERTH_S3_LARGE_MIB"); v != "" {
		mib, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		size = mib << 20
	}
	srv := miniotest.Shared(t)
	d := newDriver(t, srv, srv.NewBucket(t), "")
	const chunk = 5 << 20 // newDriver's chunksize

	// Sample the heap while writing: it must stay near a chunk, whatever
	// the file's size.
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	rng := rand.NewChaCha8([32]byte{1})
	want := sha256.New()
	buf := make([]byte, 1<<20)
	start := time.Now()
	const sessions = 3
	for s := range sessions {
		w, err := d.Writer(ctx, "/large/data", s > 0)
		if err != nil {
			t.Fatal(err)
		}
		end := size * int64(s+1) / sessions
		for w.Size() < end {
			b := buf[:min(int64(len(buf)), end-w.Size())]
			_, _ = rng.Read(b)
			want.Write(b)
			if _, err := w.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	w, err := d.Writer(ctx, "/large/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != size {
		t.Fatalf("resumed at %d, want %d", w.Size(), size)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	close(stop)
	wg.Wait()
	wrote := time.Since(start)
	t.Logf("wrote %d MiB in %s (%.0f MiB/s); peak heap in use %d MiB with %d MiB chunks",
		size>>20, wrote.Round(time.Second), float64(size>>20)/wrote.Seconds(), peak>>20, chunk>>20)
	if peak > 8*chunk+32<<20 {
		t.Errorf("peak heap %d MiB: a writer should hold about a chunk (%d MiB)", peak>>20, chunk>>20)
	}

	start = time.Now()
	if err := d.Move(ctx, "/large/data", "/blob/data"); err != nil {
		t.Fatal(err)
	}
	t.Logf("moved in %s", time.Since(start).Round(time.Second))
	fi, err := d.Stat(ctx, "/blob/data")
	if err != nil || fi.Size != size {
		t.Fatalf("Stat after move = %+v, %v", fi, err)
	}
	rd, err := d.Reader(ctx, "/blob/data", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := sha256.New()
	n, err := io.Copy(got, rd)
	if err != nil || n != size {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the moved file's bytes differ from what was written")
	}
	if err := d.Delete(ctx, "/blob"); err != nil {
		t.Fatal(err)
	}
}
