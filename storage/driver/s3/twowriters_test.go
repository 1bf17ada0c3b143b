package s3_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/storage/driver/s3"
)

// Two writers on two replicas continue one file at once (a client that
// sends the same chunk of an upload to two replicas, or a retry while the
// first request still streams): the part one of them uploaded can be
// replaced by the other's before the first's Close records it. A later
// writer must then not resume a file that neither wrote, the first's tail
// after the second's part: the store would complete it under the digest
// the first's saved hash state vouches for.
func TestResumeRefusesPartsReplacedByAnotherWriter(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	da, db := newDriver(t, srv, bucket, ""), newDriver(t, srv, bucket, "")
	first := random(t, 6<<20) // one part and 1 MiB pending
	w, err := da.Writer(ctx, "/f", true)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(first)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	wa, err := da.Writer(ctx, "/f", true)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := db.Writer(ctx, "/f", true)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := random(t, 5<<20+10), random(t, 5<<20)
	if _, err := wa.Write(mine); err != nil { // uploads part 2
		t.Fatal(err)
	}
	if _, err := wb.Write(theirs); err != nil { // replaces part 2
		t.Fatal(err)
	}
	if err := wb.Close(); err != nil {
		t.Fatal(err)
	}
	// The first writer closes last: its pending object would count 2
	// parts and hold its tail, but part 2 is the other's. Its Close is
	// refused (the pending object changed since it opened), or, where a
	// store ignored the condition, the parts' digest catches it below.
	if err := wa.Close(); err != nil && !errors.Is(err, s3.ErrConcurrentWriter) {
		t.Fatal(err)
	}

	w, err = da.Writer(ctx, "/f", true)
	if err != nil {
		t.Logf("resuming refused: %v", err)
		return
	}
	if err := w.Commit(ctx); err != nil {
		t.Logf("committing refused: %v", err)
		return
	}
	got, err := da.GetContent(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(first, mine...)) && !bytes.Equal(got, append(first, theirs...)) {
		t.Fatalf("resumed and committed a file neither writer wrote (%d bytes)", len(got))
	}
}
