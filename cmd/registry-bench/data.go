package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
)

// blockSize is the period of the generated data: one random block, with
// the block number written over its first 8 bytes.
const blockSize = 1 << 20

// Blob is deterministic test content: size bytes made from a 1 MiB random
// block (ChaCha8 from seed) repeated with a block counter, so generating it
// costs a memory copy and no blob ever holds more than 1 MiB. Different
// seeds give different blobs (a registry cannot deduplicate them).
type Blob struct {
	Size   int64
	block  []byte
	digest string
}

// newBlob returns the blob of seed and size. Its digest is computed by
// Digest, once.
func newBlob(seed [32]byte, size int64) *Blob {
	b := &Blob{Size: size, block: make([]byte, blockSize)}
	_, _ = rand.NewChaCha8(seed).Read(b.block)
	return b
}

// Reader returns a reader of the blob's bytes from the start.
func (b *Blob) Reader() io.Reader { return &blobReader{b: b} }

// Section returns a reader of size bytes starting at off.
func (b *Blob) Section(off, size int64) io.Reader {
	return &blobReader{b: b, off: off, end: off + size}
}

// Digest returns "sha256:<hex>", hashing the content on the first call.
func (b *Blob) Digest() string {
	if b.digest == "" {
		h := sha256.New()
		buf := make([]byte, blockSize)
		_, _ = io.CopyBuffer(h, b.Reader(), buf)
		b.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	return b.digest
}

type blobReader struct {
	b        *Blob
	off, end int64 // end 0 means b.Size
}

func (r *blobReader) Read(p []byte) (int, error) {
	end := r.end
	if end == 0 {
		end = r.b.Size
	}
	if r.off >= end {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < end {
		pos := r.off % blockSize
		m := copy(p[n:], r.b.block[pos:min(int64(blockSize), pos+end-r.off)])
		if pos < 8 {
			var ctr [8]byte
			binary.LittleEndian.PutUint64(ctr[:], uint64(r.off/blockSize))
			copy(p[n:n+m], ctr[pos:])
		}
		n += m
		r.off += int64(m)
	}
	return n, nil
}
