package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// copyBufferSize is the unit an upload is read, hashed and written in:
// memory per upload is one buffer, whatever the blob's size.
const copyBufferSize = 1 << 20

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

var uploadIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidateUploadID checks that an upload session id is one this registry
// (or Distribution, which uses UUIDs) could have issued.
func ValidateUploadID(id string) error {
	if !uploadIDRE.MatchString(id) {
		return ErrUploadUnknown
	}
	return nil
}

func newUploadID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// StartUpload opens an upload session in repository name and returns its id.
func (s *Store) StartUpload(ctx context.Context, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	id := newUploadID()
	started := time.Now().UTC().Format(time.RFC3339)
	if err := s.d.PutContent(ctx, uploadStartedPath(name, id), []byte(started)); err != nil {
		return "", err
	}
	return id, nil
}

// UploadSize returns how many bytes upload id holds.
func (s *Store) UploadSize(ctx context.Context, name, id string) (int64, error) {
	if err := s.checkUpload(ctx, name, id); err != nil {
		return 0, err
	}
	fi, err := s.d.Stat(ctx, uploadDataPath(name, id))
	if errors.Is(err, driver.ErrNotFound) {
		return 0, nil
	}
	return fi.Size, err
}

// AppendUpload appends what r yields to upload id and returns the upload's
// new size. With start ≥ 0 the chunk must begin where the upload ends (else
// *RangeError); start < 0 appends wherever the upload ends (a streamed PATCH).
// If r fails midway, the bytes received so far stay: the upload's size tells
// the client where to resume.
func (s *Store) AppendUpload(ctx context.Context, name, id string, start int64, r io.Reader) (int64, error) {
	if err := s.checkUpload(ctx, name, id); err != nil {
		return 0, err
	}
	unlock := s.locks.lock(name + "\x00" + id)
	defer unlock()
	size, _, err := s.appendLocked(ctx, name, id, start, r)
	return size, err
}

// CompleteUpload appends an optional last chunk (r may be nil), verifies
// that the whole upload hashes to dg, moves it into the blob store, links it
// into repository name and ends the session. On a digest mismatch the
// session stays, unchanged but for the appended chunk.
func (s *Store) CompleteUpload(ctx context.Context, name, id string, start int64, r io.Reader, dg digest.Digest) (int64, error) {
	if err := s.checkUpload(ctx, name, id); err != nil {
		return 0, err
	}
	unlock := s.locks.lock(name + "\x00" + id)
	defer unlock()
	if r == nil {
		r = eofReader{}
	}
	size, h, err := s.appendLocked(ctx, name, id, start, r)
	if err != nil {
		return 0, err
	}
	got := digest.NewDigest(digest.SHA256, h)
	if dg.Algorithm() != digest.SHA256 {
		if got, err = s.rehash(ctx, uploadDataPath(name, id), size, dg.Algorithm()); err != nil {
			return 0, err
		}
	}
	if got != dg {
		return 0, &DigestMismatchError{Want: dg, Got: got}
	}
	if err := s.placeBlob(ctx, uploadDataPath(name, id), dg, size); err != nil {
		return 0, err
	}
	if err := s.writeLink(ctx, layerLinkPath(name, dg), dg); err != nil {
		return 0, err
	}
	if err := s.d.Delete(ctx, uploadPath(name, id)); err != nil && !errors.Is(err, driver.ErrNotFound) {
		return 0, err
	}
	return size, nil
}

// PutBlob stores a whole blob in one call (a monolithic upload).
func (s *Store) PutBlob(ctx context.Context, name string, dg digest.Digest, r io.Reader) (int64, error) {
	id, err := s.StartUpload(ctx, name)
	if err != nil {
		return 0, err
	}
	size, err := s.CompleteUpload(ctx, name, id, 0, r, dg)
	if err != nil {
		_ = s.d.Delete(ctx, uploadPath(name, id))
	}
	return size, err
}

// CancelUpload ends upload id and discards what it received.
func (s *Store) CancelUpload(ctx context.Context, name, id string) error {
	if err := s.checkUpload(ctx, name, id); err != nil {
		return err
	}
	unlock := s.locks.lock(name + "\x00" + id)
	defer unlock()
	return notFound(s.d.Delete(ctx, uploadPath(name, id)), ErrUploadUnknown)
}

func (s *Store) checkUpload(ctx context.Context, name, id string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ValidateUploadID(id); err != nil {
		return err
	}
	ok, err := s.exists(ctx, uploadStartedPath(name, id))
	if err == nil && !ok {
		err = ErrUploadUnknown
	}
	return err
}

// appendLocked does the work of AppendUpload with the session lock held and
// also returns the running sha256 of the whole upload.
func (s *Store) appendLocked(ctx context.Context, name, id string, start int64, r io.Reader) (int64, hash.Hash, error) {
	w, err := s.d.Writer(ctx, uploadDataPath(name, id), true)
	if err != nil {
		return 0, nil, err
	}
	defer w.Close()
	before := w.Size()
	if start >= 0 && start != before {
		return 0, nil, &RangeError{Start: start, Size: before}
	}
	h, err := s.loadHashState(ctx, name, id, before)
	if err != nil {
		return 0, nil, err
	}
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for {
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		n, rerr := fill(r, buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				return 0, nil, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// Keep what arrived: commit it so the reported size is honest.
			_ = w.Commit(ctx)
			return 0, nil, fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, rerr)
		}
	}
	if err := w.Commit(ctx); err != nil {
		return 0, nil, err
	}
	after := w.Size()
	if after != before {
		if err := s.saveHashState(ctx, name, id, before, after, h); err != nil {
			return 0, nil, err
		}
	}
	return after, h, nil
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

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// loadHashState returns the sha256 state after the first size bytes of the
// upload: the saved state when there is one, else a rehash of the data (an
// upload written by another registry, or one cut off before its state was
// saved).
func (s *Store) loadHashState(ctx context.Context, name, id string, size int64) (hash.Hash, error) {
	h := sha256.New()
	if size == 0 {
		return h, nil
	}
	if b, err := s.d.GetContent(ctx, hashStatePath(name, id, size)); err == nil {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err == nil {
			return h, nil
		}
		h.Reset()
	}
	rd, err := s.d.Reader(ctx, uploadDataPath(name, id), 0)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	if _, err := io.CopyN(h, rd, size); err != nil {
		return nil, fmt.Errorf("storage: rehashing upload %s: %w", id, err)
	}
	return h, nil
}

// saveHashState records the state after `after` bytes and drops the one
// for `before`.
func (s *Store) saveHashState(ctx context.Context, name, id string, before, after int64, h hash.Hash) error {
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	if err := s.d.PutContent(ctx, hashStatePath(name, id, after), state); err != nil {
		return err
	}
	if before > 0 {
		if err := s.d.Delete(ctx, hashStatePath(name, id, before)); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
	}
	return nil
}

// rehash computes the digest of the first size bytes of p with alg.
func (s *Store) rehash(ctx context.Context, p string, size int64, alg digest.Algorithm) (digest.Digest, error) {
	if !alg.Available() {
		return "", fmt.Errorf("%w: unsupported algorithm %s", ErrDigestInvalid, alg)
	}
	rd, err := s.d.Reader(ctx, p, 0)
	if err != nil {
		return "", err
	}
	defer rd.Close()
	dgr := alg.Digester()
	if _, err := io.CopyN(dgr.Hash(), rd, size); err != nil {
		return "", err
	}
	return dgr.Digest(), nil
}
