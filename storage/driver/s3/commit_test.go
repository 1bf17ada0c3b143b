package s3_test

import (
	"bytes"
	"testing"

	"github.com/berth-registry/berth/internal/miniotest"
)

// A writer stays usable after Commit (driver.FileWriter says so; the store
// commits an upload to rehash it when its saved hash state is missing, and
// then appends the next chunk). Committed with whole parts and a tail in
// its buffer, it must count the tail once: its size is the object's, and
// what it appends next lands after the object's last byte.
func TestWriterWritesOnAfterCommit(t *testing.T) {
	srv := miniotest.Shared(t)
	d := newDriver(t, srv, srv.NewBucket(t), "")
	for _, resumed := range []bool{false, true} {
		first, more := random(t, 6<<20+3), random(t, 2<<20)
		w, err := d.Writer(ctx, "/f", false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(first); err != nil {
			t.Fatal(err)
		}
		if resumed { // as another replica would find it
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w, err = d.Writer(ctx, "/f", true); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if w.Size() != int64(len(first)) {
			t.Fatalf("resumed %v: Size after Commit = %d, want %d", resumed, w.Size(), len(first))
		}
		if _, err := w.Write(more); err != nil {
			t.Fatalf("resumed %v: writing after Commit: %v", resumed, err)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatalf("resumed %v: second Commit: %v", resumed, err)
		}
		w.Close()
		got, err := d.GetContent(ctx, "/f")
		if err != nil || !bytes.Equal(got, append(first, more...)) {
			t.Fatalf("resumed %v: file has %d bytes (%v), want %d", resumed, len(got), err, len(first)+len(more))
		}
	}
}
