package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBlobDeterministicAndDigest(t *testing.T) {
	size := int64(3*blockSize + 12345)
	a, b := newBlob([32]byte{1}, size), newBlob([32]byte{1}, size)
	da, db := readAll(t, a.Reader()), readAll(t, b.Reader())
	if int64(len(da)) != size || !bytes.Equal(da, db) {
		t.Fatal("the same seed gave different bytes")
	}
	sum := sha256.Sum256(da)
	if want := "sha256:" + hex.EncodeToString(sum[:]); a.Digest() != want {
		t.Fatalf("Digest() = %s, want %s", a.Digest(), want)
	}
	if bytes.Equal(da[:blockSize], da[blockSize:2*blockSize]) {
		t.Fatal("consecutive blocks are identical: the counter is missing")
	}
	if c := newBlob([32]byte{2}, size); c.Digest() == a.Digest() {
		t.Fatal("different seeds gave the same blob")
	}
}

func TestBlobSectionsMatchReader(t *testing.T) {
	size := int64(2*blockSize + 100)
	bl := newBlob([32]byte{7}, size)
	whole := readAll(t, bl.Reader())
	for _, chunk := range []int64{1, 5, 4096, blockSize - 3, blockSize, 3 * blockSize} {
		var got []byte
		for off := int64(0); off < size; off += chunk {
			got = append(got, readAll(t, bl.Section(off, min(chunk, size-off)))...)
		}
		if !bytes.Equal(got, whole) {
			t.Fatalf("chunks of %d bytes differ from the whole blob", chunk)
		}
	}
}

// A reader that is asked for a few bytes at a time still writes the
// counter correctly.
func TestBlobSmallReads(t *testing.T) {
	bl := newBlob([32]byte{9}, blockSize+20)
	whole := readAll(t, bl.Reader())
	r := bl.Reader()
	var got []byte
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
	}
	if !bytes.Equal(got, whole) {
		t.Fatal("3-byte reads differ from the whole blob")
	}
}
