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

// UploadSize returns how many bytes upload id holds. It waits for a call
// that is appending to the session (see Options.UploadWait), so the size it
// reports is where the next chunk must start, not a moment of an append.
func (s *Store) UploadSize(ctx context.Context, name, id string) (int64, error) {
	unlock, err := s.lockUpload(ctx, name, id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	// A writer, not Stat: on an object store an unfinished file is seen
	// only by the next writer.
	w, err := s.d.Writer(ctx, uploadDataPath(name, id), true)
	if err != nil {
		return 0, err
	}
	defer w.Close()
	return w.Size(), nil
}

// AppendUpload appends what r yields to upload id and returns the upload's
// new size. With start ≥ 0 the chunk must begin where the upload ends (else
// *RangeError); start < 0 appends wherever the upload ends (a streamed PATCH).
// If r fails midway, the bytes received so far stay: the upload's size tells
// the client where to resume.
func (s *Store) AppendUpload(ctx context.Context, name, id string, start int64, r io.Reader) (int64, error) {
	unlock, err := s.lockUpload(ctx, name, id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	size, _, err := s.appendLocked(ctx, name, id, start, r, false)
	return size, err
}

// CompleteUpload appends an optional last chunk (r may be nil), verifies
// that the whole upload hashes to dg, moves it into the blob store, links it
// into repository name and ends the session. On a digest mismatch the
// session stays, unchanged but for the appended chunk.
func (s *Store) CompleteUpload(ctx context.Context, name, id string, start int64, r io.Reader, dg digest.Digest) (int64, error) {
	unlock, err := s.lockUpload(ctx, name, id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if r == nil {
		r = eofReader{}
	}
	// The blob's lease is renewed while the last chunk arrives, so that a
	// collection running now keeps the content the client is told exists
	// (see lease.go); the doomed marker is checked once the upload is
	// verified, before the blob is placed.
	leased := make(chan error, 1)
	go func() { leased <- s.renewLease(ctx, dg) }()
	size, h, err := s.appendLocked(ctx, name, id, start, r, true)
	if lerr := <-leased; err == nil {
		err = lerr
	}
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
	if _, err := s.promise(ctx, dg); err != nil {
		return 0, err
	}
	if err := s.placeBlob(ctx, uploadDataPath(name, id), dg, size); err != nil {
		return 0, err
	}
	if err := s.writeLink(ctx, layerLinkPath(name, dg), dg); err != nil {
		return 0, err
	}
	s.states.drop(name, id)
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
		s.states.drop(name, id)
		_ = s.d.Delete(ctx, uploadPath(name, id))
	}
	return size, err
}

// CancelUpload ends upload id and discards what it received.
func (s *Store) CancelUpload(ctx context.Context, name, id string) error {
	unlock, err := s.lockUpload(ctx, name, id)
	if err != nil {
		return err
	}
	defer unlock()
	s.states.drop(name, id)
	return notFound(s.d.Delete(ctx, uploadPath(name, id)), ErrUploadUnknown)
}

// lockUpload locks upload session id of repository name for one call,
// waiting while another call holds it (see Options.UploadWait; an error
// wrapping ErrUploadBusy when it waited too long). The session's existence
// is checked once the lock is held, since the call it waited for may have
// completed or cancelled it.
func (s *Store) lockUpload(ctx context.Context, name, id string) (unlock func(), err error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := ValidateUploadID(id); err != nil {
		return nil, err
	}
	unlock, err = s.locks.lock(ctx, name+"\x00"+id, s.uploadWait)
	if err != nil {
		return nil, err
	}
	ok, err := s.fileExists(ctx, uploadStartedPath(name, id))
	if err == nil && !ok {
		err = ErrUploadUnknown
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// appendLocked does the work of AppendUpload with the session lock held and
// also returns the running sha256 of the whole upload.
//
// An append is durable when it returns: the writer's Close keeps the chunk
// (fsync on a filesystem, the parts and pending object on S3), and then the
// sha256 state after it is saved beside the upload, so that the next chunk
// continues the hash on any replica without reading the upload back. With
// complete set, the upload is committed instead: made a whole file that
// can be read and moved into the blob store.
func (s *Store) appendLocked(ctx context.Context, name, id string, start int64, r io.Reader, complete bool) (int64, hash.Hash, error) {
	w, err := s.d.Writer(ctx, uploadDataPath(name, id), true)
	if err != nil {
		return 0, nil, err
	}
	defer w.Close()
	before := w.Size()
	if start >= 0 && start != before {
		return 0, nil, &RangeError{Start: start, Size: before}
	}
	h, err := s.hashState(ctx, name, id, before, w)
	if err != nil {
		return 0, nil, err
	}
	_, err = copyHashing(r, w, h)
	after := w.Size()
	var re readError
	if err != nil && !errors.As(err, &re) {
		s.states.drop(name, id) // the file may hold a part of the write
		return 0, nil, err
	}
	if after != before {
		// Kept even after a failed read: the bytes that arrived are in
		// the file, and the size tells the client where to resume.
		if cerr := s.keepAppend(ctx, name, id, w, after, h, complete && err == nil); cerr != nil {
			s.states.drop(name, id)
			return 0, nil, cerr
		}
	}
	if err != nil {
		return 0, nil, fmt.Errorf("%w: reading the request body: %v", ErrUploadInvalid, re.err)
	}
	if complete {
		if err := w.Commit(ctx); err != nil {
			return 0, nil, err
		}
	}
	return after, h, nil
}

// keepAppend makes an append durable and saves the hash state after it
// (unless the upload is about to complete, which needs no saved state).
func (s *Store) keepAppend(ctx context.Context, name, id string, w driver.FileWriter, size int64, h hash.Hash, completing bool) error {
	s.states.put(name, id, size, h)
	if completing {
		return nil
	}
	if err := w.Close(); err != nil {
		return err
	}
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	return s.d.PutContent(ctx, uploadHashStatePath(name, id, size), state)
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// hashState returns the sha256 state after the first size bytes of the
// upload: the one remembered by this process when it matches, else the one
// saved beside the upload for that size (another replica's, or after a
// restart), else a hash of the upload's bytes, read back once w has
// committed them (an upload begun by Distribution, or one whose last
// state was never saved). A saved state is written only after the chunk
// it covers is durable, so it never vouches for bytes a crash lost.
func (s *Store) hashState(ctx context.Context, name, id string, size int64, w driver.FileWriter) (hash.Hash, error) {
	if h := s.states.get(name, id, size); h != nil {
		return h, nil
	}
	h := sha256.New()
	if size == 0 {
		return h, nil
	}
	if b, err := s.d.GetContent(ctx, uploadHashStatePath(name, id, size)); err == nil {
		if h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b) == nil {
			return h, nil
		}
		h.Reset()
	} else if !errors.Is(err, driver.ErrNotFound) {
		return nil, err
	}
	if err := w.Commit(ctx); err != nil {
		return nil, err
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

// hashStates remembers the running hash of each upload in progress, so a
// chunk costs no reread of the ones before it.
type hashStates struct {
	mu sync.Mutex
	m  map[string]hashStateEntry
}

type hashStateEntry struct {
	size  int64
	state []byte
}

// maxHashStates bounds the memory of abandoned uploads; past it the table
// starts over and uploads in progress rehash once.
const maxHashStates = 10000

func (t *hashStates) get(name, id string, size int64) hash.Hash {
	t.mu.Lock()
	e, ok := t.m[name+"\x00"+id]
	t.mu.Unlock()
	if !ok || e.size != size {
		return nil
	}
	h := sha256.New()
	if h.(encoding.BinaryUnmarshaler).UnmarshalBinary(e.state) != nil {
		return nil
	}
	return h
}

func (t *hashStates) put(name, id string, size int64, h hash.Hash) {
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil || len(t.m) >= maxHashStates {
		t.m = make(map[string]hashStateEntry)
	}
	t.m[name+"\x00"+id] = hashStateEntry{size: size, state: state}
}

func (t *hashStates) drop(name, id string) {
	t.mu.Lock()
	delete(t.m, name+"\x00"+id)
	t.mu.Unlock()
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
