package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// patternReader yields size bytes of a pattern without holding them.
type patternReader struct {
	left int64
	pat  []byte
	off  int
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && p.left > 0 {
		c := copy(b[n:min(len(b), n+int(p.left))], p.pat[p.off:])
		n += c
		p.left -= int64(c)
		p.off = (p.off + c) % len(p.pat)
	}
	return n, nil
}

// benchBlob is the i-th distinct blob of size bytes: its digest (computed
// outside the timer) and a fresh reader of its content.
func benchBlob(b *testing.B, i int, size int64) (digest.Digest, func() io.Reader) {
	b.StopTimer()
	defer b.StartTimer()
	pat := bytes.Repeat([]byte("berth-benchmark-"), 4096)
	seed := []byte(fmt.Sprintf("%016d", i))
	content := func() io.Reader {
		return io.MultiReader(bytes.NewReader(seed), &patternReader{left: size - int64(len(seed)), pat: pat})
	}
	h := sha256.New()
	io.Copy(h, content())
	return digest.NewDigest(digest.SHA256, h), content
}

// BenchmarkPutBlob measures a monolithic blob write through the store:
// hash, write, fsync, rename (64 MiB per op, each op a distinct blob).
func BenchmarkPutBlob(b *testing.B) {
	s, _ := newStore(b)
	const size = 64 << 20
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		i++
		dg, content := benchBlob(b, i, size)
		if _, err := s.PutBlob(ctx, "bench/blob", dg, content()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkedUpload is BenchmarkPutBlob in 16 MiB appends, as a
// client's chunked PATCHes arrive: it should cost the same.
func BenchmarkChunkedUpload(b *testing.B) {
	s, _ := newStore(b)
	const size, chunk = 64 << 20, 16 << 20
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		i++
		dg, content := benchBlob(b, i, size)
		body := content()
		id, err := s.StartUpload(ctx, "bench/chunked")
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += chunk {
			if _, err := s.AppendUpload(ctx, "bench/chunked", id, off, io.LimitReader(body, chunk)); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.CompleteUpload(ctx, "bench/chunked", id, size, nil, dg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkManifestParse(b *testing.B) {
	s, _ := newStore(b)
	payload := image(b, s, "bench/parse", "1", nil)
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, _, err := parseManifest(payload, MediaTypeOCIManifest); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManifestPut is a durable manifest PUT by tag: validation, the
// reference checks, and the fsynced writes.
func BenchmarkManifestPut(b *testing.B) {
	s, _ := newStore(b)
	payload := image(b, s, "bench/put", "1", nil)
	i := 0
	for b.Loop() {
		i++
		if _, err := s.PutManifest(ctx, "bench/put", fmt.Sprintf("t%d", i), MediaTypeOCIManifest, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManifestPutParallel is BenchmarkManifestPut from 8 goroutines
// per core, as a registry under load sees it: their writes share fsyncs.
func BenchmarkManifestPutParallel(b *testing.B) {
	s, _ := newStore(b)
	payload := image(b, s, "bench/put", "1", nil)
	var n atomic.Int64
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tag := fmt.Sprintf("t%d", n.Add(1))
			if _, err := s.PutManifest(ctx, "bench/put", tag, MediaTypeOCIManifest, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkTagLookup(b *testing.B) {
	s, _ := newStore(b)
	payload := image(b, s, "bench/tags", "1", nil)
	if _, err := s.PutManifest(ctx, "bench/tags", "latest", MediaTypeOCIManifest, payload); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.ResolveManifest(ctx, "bench/tags", "latest"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetManifestByTag(b *testing.B) {
	s, _ := newStore(b)
	payload := image(b, s, "bench/get", "1", nil)
	if _, err := s.PutManifest(ctx, "bench/get", "latest", MediaTypeOCIManifest, payload); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.GetManifest(ctx, "bench/get", "latest"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManifestPutNew is BenchmarkManifestPut with a distinct manifest
// each time, as pushes of new images are: its lease is written too.
func BenchmarkManifestPutNew(b *testing.B) {
	s, _ := newStore(b)
	payload := image(b, s, "bench/put", "1", nil)
	i := 0
	for b.Loop() {
		i++
		p := bytes.Replace(payload, []byte(`"schemaVersion":2`), []byte(fmt.Sprintf(`"annotations":{"n":"%d"},"schemaVersion":2`, i)), 1)
		if _, err := s.PutManifest(ctx, "bench/put", fmt.Sprintf("t%d", i), MediaTypeOCIManifest, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutSmallBlob is BenchmarkPutBlob for a 4 KiB blob (a config):
// the fixed cost of placing a blob, its link and its lease.
func BenchmarkPutSmallBlob(b *testing.B) {
	s, _ := newStore(b)
	const size = 4 << 10
	i := 0
	for b.Loop() {
		i++
		dg, content := benchBlob(b, i, size)
		if _, err := s.PutBlob(ctx, "bench/blob", dg, content()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBlobExists compares the answer to a GET (StatBlob) with that to
// a HEAD (CheckBlob, which promises the blob to the client).
func BenchmarkBlobExists(b *testing.B) {
	s, _ := newStore(b)
	dg, content := benchBlob(b, 0, 4<<10)
	if _, err := s.PutBlob(ctx, "bench/blob", dg, content()); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		stat func(context.Context, string, digest.Digest) (int64, error)
	}{{"stat", s.StatBlob}, {"check", s.CheckBlob}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.stat(ctx, "bench/blob", dg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
