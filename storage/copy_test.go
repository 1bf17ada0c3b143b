package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"
)

func TestCopyHashingSizes(t *testing.T) {
	for _, n := range []int{0, 1, pipeBufferSize - 1, pipeBufferSize, pipeBufferSize + 1, 7*pipeBufferSize/2 + 3} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		var dst bytes.Buffer
		h := sha256.New()
		// A reader that returns small, uneven pieces.
		written, err := copyHashing(io.LimitReader(&choppy{r: bytes.NewReader(src)}, int64(n)), &dst, h)
		if err != nil || written != int64(n) || !bytes.Equal(dst.Bytes(), src) {
			t.Fatalf("n=%d: written %d, err %v, equal %v", n, written, err, bytes.Equal(dst.Bytes(), src))
		}
		if sum := sha256.Sum256(src); !bytes.Equal(h.Sum(nil), sum[:]) {
			t.Fatalf("n=%d: hash differs", n)
		}
	}
}

type choppy struct {
	r io.Reader
	i int
}

func (c *choppy) Read(p []byte) (int, error) {
	c.i++
	if max := 1 + c.i%5000; len(p) > max {
		p = p[:max]
	}
	return c.r.Read(p)
}

func TestCopyHashingReadFailure(t *testing.T) {
	src := bytes.Repeat([]byte("ab"), pipeBufferSize) // two buffers' worth
	var dst bytes.Buffer
	h := sha256.New()
	written, err := copyHashing(&shortReader{bytes.NewReader(src)}, &dst, h)
	var re readError
	if !errors.As(err, &re) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want a readError wrapping io.ErrUnexpectedEOF", err)
	}
	if written != int64(len(src)) || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("what arrived before the failure was not all written: %d of %d", written, len(src))
	}
	if sum := sha256.Sum256(src); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatal("hash does not match what was written")
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("disk full")
	}
	w.after -= len(p)
	return len(p), nil
}

// TestCopyHashingWriteFailureDoesNotWaitForTheReader: a write fails while
// the body's reader is blocked (a client that sent part and went quiet);
// the copy must return at once, not when the client gives up.
func TestCopyHashingWriteFailureDoesNotWaitForTheReader(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		pw.Write(bytes.Repeat([]byte("x"), 2*pipeBufferSize))
		// then silence: the reader blocks in Read
	}()
	done := make(chan error, 1)
	go func() {
		_, err := copyHashing(pr, &failingWriter{after: pipeBufferSize}, sha256.New())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || err.Error() != "disk full" {
			t.Fatalf("err = %v, want the write error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("copy blocked on a silent reader after a write error")
	}
	pw.CloseWithError(errors.New("client gone")) // lets the reader goroutine end
}
