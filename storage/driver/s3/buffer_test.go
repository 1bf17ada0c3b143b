package s3

import (
	"context"
	"testing"

	"github.com/berth-registry/berth/internal/miniotest"
)

// A writer holds one buffer of exactly a chunk, whatever it is given:
// memory per upload is a chunk, not a chunk and the slack of a growing
// slice.
func TestWriterBufferIsAChunk(t *testing.T) {
	srv := miniotest.Shared(t)
	secure := false
	d, err := New(context.Background(), Options{
		RegionEndpoint: srv.Endpoint, Bucket: srv.NewBucket(t), ForcePathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Secure: &secure,
		ChunkSize: minChunkSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	fw, err := d.Writer(context.Background(), "/f", false)
	if err != nil {
		t.Fatal(err)
	}
	w := fw.(*writer)
	for _, n := range []int{1, 256 << 10, minChunkSize - 1, 3 * minChunkSize, 7} {
		if _, err := w.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if cap(w.buf) != minChunkSize || len(w.buf) >= minChunkSize {
			t.Fatalf("after a write of %d: buffer len %d cap %d, want cap %d", n, len(w.buf), cap(w.buf), minChunkSize)
		}
	}
	if err := w.Cancel(context.Background()); err != nil {
		t.Fatal(err)
	}
}
