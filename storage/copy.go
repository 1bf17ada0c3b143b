package storage

import (
	"hash"
	"io"
	"sync"
)

// An upload moves through three stages at once: one goroutine reads the
// request body (decrypting TLS), one hashes, and the caller writes to
// storage. On two cores this is what keeps a push at the disk's speed
// rather than at the sum of the three costs. Memory per upload is
// pipeBuffers × pipeBufferSize, whatever the blob's size; 256 KiB blocks
// stay in the CPU cache between hashing and writing (measured faster than
// 512 KiB on this machine).
const (
	pipeBufferSize = 256 << 10
	pipeBuffers    = 3
)

var pipeBufferPool = sync.Pool{New: func() any { b := make([]byte, pipeBufferSize); return &b }}

// block is one buffer's worth of the body and how reading it ended.
type block struct {
	buf *[]byte
	n   int
	err error // io.EOF for a clean end
}

// readError marks a failure of the source, as opposed to the destination.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

// copyHashing copies r to w and h until r ends, and returns how many bytes
// were written. h has seen exactly the bytes w accepted. A failure of r is
// returned as a readError, after everything read before it was written.
func copyHashing(r io.Reader, w io.Writer, h hash.Hash) (int64, error) {
	free := make(chan *[]byte, pipeBuffers)
	for range pipeBuffers {
		free <- pipeBufferPool.Get().(*[]byte)
	}
	filled := make(chan block, pipeBuffers)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			var b *[]byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := fill(r, *b)
			select {
			case filled <- block{b, n, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	toHash := make(chan []byte)
	hashed := make(chan struct{})
	go func() {
		for p := range toHash {
			h.Write(p)
			hashed <- struct{}{}
		}
	}()
	defer func() {
		close(toHash)
		close(stop)
		// The buffers go back to the pool once the reader is done with
		// them. Normally it already is; after a write error it may be
		// blocked in r.Read until the server closes the body, which
		// happens only once this handler returns: so do not wait here.
		go func() {
			<-readerDone
			// Neither the reader nor the caller touches the channels now.
			close(free)
			close(filled)
			for b := range free {
				pipeBufferPool.Put(b)
			}
			for blk := range filled {
				pipeBufferPool.Put(blk.buf)
			}
		}()
	}()

	var written int64
	for blk := range filled {
		if p := (*blk.buf)[:blk.n]; len(p) > 0 {
			toHash <- p
			_, werr := w.Write(p)
			<-hashed
			if werr != nil {
				return written, werr
			}
			written += int64(len(p))
		}
		free <- blk.buf
		switch {
		case blk.err == io.EOF:
			return written, nil
		case blk.err != nil:
			return written, readError{blk.err}
		}
	}
	return written, nil
}

// fill reads into buf until it is full or r ends. It returns io.EOF only for
// a clean end, and r's own error (io.ErrUnexpectedEOF for a short HTTP body)
// otherwise, unlike io.ReadFull, which folds the two together.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
