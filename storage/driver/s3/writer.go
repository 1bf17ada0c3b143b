package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/berth-registry/berth/storage/driver"
)

// A file being written is kept in the bucket as
//
//   - a multipart upload of key, whose parts are whole chunks, or what a
//     Close had left over when that was at least 5 MiB (every part but the
//     last of a finished upload must be), and
//   - the pending object, key + pendingSuffix: the bytes not yet in a part
//     (less than 5 MiB after a Close), with the upload's id and how many of
//     its parts hold the file in its metadata.
//
// So a client that pushes in chunks of 5 MiB or more never has its bytes
// written to the pending object and read back by the next request: what
// each request leaves over becomes a part.
//
// Close writes the pending object last, so it always describes a state that
// was whole: parts the writer uploaded after it (a Close cut short) are not
// counted and are overwritten by the next writer. A writer on another
// replica continues from exactly what the last Close or Commit kept, so an
// upload begun on one registry finishes on another, and memory is bounded by
// a chunk whatever the file's size: one buffer of exactly a chunk per
// writer, reused by the next writer. Commit completes the upload (or, for
// a file smaller than a chunk, PUTs it) and removes the pending object.
//
// Completing names every part with the ETag this writer saw, so if another
// writer replaced a part meanwhile the store refuses the completion instead
// of assembling bytes nobody hashed. The pending object carries a digest of
// those ETags for the same reason: two writers on one file at once (a chunk
// sent to two replicas) may replace each other's parts before either
// closes, and a writer that resumes from a pending object whose parts are
// no longer those it names refuses to go on rather than continue a file
// that no writer wrote.
//
// Before a writer begins a multipart upload it writes the empty uploads
// marker, key + uploadsSuffix, which stays until a Commit or Cancel has
// aborted every other upload of key. A writer that dies before its first
// Close leaves an upload that no pending object names, and S3 cannot list
// the uploads under a directory (MinIO lists them by whole keys only), so
// the marker is how Delete of the file, or of a directory above it, finds
// that upload to abort it.
const (
	pendingSuffix = "#pending"
	uploadsSuffix = "#uploads"
)

// Metadata keys of the pending object.
const (
	metaUpload   = "Berth-Upload-Id"
	metaParts    = "Berth-Parts"
	metaPartsSum = "Berth-Parts-Sum" // sha256 of the parts' ETags; absent from older pending objects
)

const maxParts = 10000

// isInternal reports whether a listed name is the driver's own object (no
// driver path can contain '#').
func isInternal(name string) bool { return strings.Contains(name, "#") }

// isStateOf reports whether k is the pending object or the uploads marker
// of the file at key.
func isStateOf(k, key string) bool { return k == key+pendingSuffix || k == key+uploadsSuffix }

// writtenFile returns the key of the file whose pending object or uploads
// marker k is.
func writtenFile(k string) (string, bool) {
	if f, ok := strings.CutSuffix(k, pendingSuffix); ok {
		return f, true
	}
	return strings.CutSuffix(k, uploadsSuffix)
}

type writer struct {
	d    *Driver
	ctx  context.Context
	path string
	key  string

	// base bytes are the committed object at key, not yet copied into an
	// upload (a file that was committed, or opened to append after one).
	base     int64
	uploadID string
	parts    []minio.CompletePart
	partSize int64 // bytes in parts
	buf      []byte
	// lent: a request that sent part of buf failed, and its body may
	// still be read by the HTTP transport (a store that answers before it
	// has read the body, as a failed If-Match does), so buf must not go
	// back to the pool for another writer to overwrite.
	lent   bool
	strays []string // other uploads of key, left by writers that died

	object  bool // the object at key holds the file (nothing pending)
	dirty   bool // written since the state in the bucket
	pending bool // the pending object exists
	// seen is the pending object's ETag as this writer last knew it ("":
	// there was none); with seenKnown, Close replaces the pending object
	// only if it is still that one (see persist).
	seen      string
	seenKnown bool
	marked    bool // the uploads marker may exist
	broken    error
	closed    bool
	cancelled bool
	// closedSize is Size once Close has given the buffer back.
	closedSize int64
}

// buffer returns an empty buffer for a writer with room for a chunk, or
// for n bytes when that is more (a pending object left by a replica with a
// larger chunksize).
func (d *Driver) buffer(n int64) []byte {
	if n > d.chunk {
		return make([]byte, 0, n)
	}
	if p, ok := d.bufs.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, d.chunk)
}

// release gives a writer's buffer to the next writer.
func (d *Driver) release(b []byte) {
	if int64(cap(b)) == d.chunk {
		d.bufs.Put(&b)
	}
}

// readBuffer reads the size bytes of body into a writer's buffer.
func (d *Driver) readBuffer(body io.Reader, size int64) ([]byte, error) {
	buf := d.buffer(size)[:size]
	if _, err := io.ReadFull(body, buf); err != nil {
		d.release(buf)
		return nil, err
	}
	return buf, nil
}

func (w *writer) releaseBuffer() {
	if w.buf != nil && !w.lent {
		w.d.release(w.buf)
	}
	w.buf, w.lent = nil, false
}

// Writer implements driver.Driver.
func (d *Driver) Writer(ctx context.Context, p string, appendMode bool) (driver.FileWriter, error) {
	if err := driver.CheckPath("write", p); err != nil {
		return nil, err
	}
	w := &writer{d: d, ctx: ctx, path: p, key: d.key(p)}
	uploads, err := d.uploads(ctx, w.key)
	if err != nil {
		return nil, mapErr("write", p, err)
	}
	for _, u := range uploads {
		w.strays = append(w.strays, u.UploadID)
	}
	w.marked = len(uploads) > 0
	if !appendMode {
		w.dirty = true // the truncation itself is kept by Close
		w.pending = true
		return w, nil
	}
	found, err := w.resume(uploads)
	if err != nil || found {
		return w, err
	}
	info, err := d.core.StatObject(ctx, d.bucket, w.key, minio.StatObjectOptions{})
	if err == nil {
		w.base, w.object = info.Size, true
	} else if err := mapErr("write", p, err); !errors.Is(err, driver.ErrNotFound) {
		return nil, err
	}
	return w, nil
}

// resume loads the state the pending object describes, if there is one and
// its upload is still in progress.
func (w *writer) resume(uploads []minio.ObjectMultipartInfo) (bool, error) {
	body, info, _, err := w.d.core.GetObject(w.ctx, w.d.bucket, w.key+pendingSuffix, minio.GetObjectOptions{})
	if err != nil {
		if err := mapErr("write", w.path, err); !errors.Is(err, driver.ErrNotFound) {
			return false, err
		}
		w.seenKnown = true
		return false, nil
	}
	defer body.Close()
	w.pending, w.seen, w.seenKnown = true, info.ETag, true
	id := meta(info.UserMetadata, metaUpload)
	if id != "" {
		n, err := strconv.Atoi(meta(info.UserMetadata, metaParts))
		if err != nil || n < 0 || n > maxParts {
			return false, fmt.Errorf("s3: pending object of %s has a bad part count", w.path)
		}
		inProgress := false
		for _, u := range uploads {
			inProgress = inProgress || u.UploadID == id
		}
		if !inProgress {
			// Completed by a Commit that stopped before removing the
			// pending object (or aborted): the object is the file.
			return false, nil
		}
		if n > 0 {
			parts, size, err := w.listParts(id, n)
			if err != nil {
				return false, err
			}
			if sum := meta(info.UserMetadata, metaPartsSum); sum != "" && sum != partsSum(parts) {
				return false, &driver.PathError{Op: "write", Path: w.path,
					Err: errors.New("the upload's parts were replaced after its last Close: two writers at once")}
			}
			w.parts, w.partSize = parts, size
		}
	}
	buf, err := w.d.readBuffer(body, info.Size)
	if err != nil {
		return false, mapErr("write", w.path, err)
	}
	w.uploadID, w.buf = id, buf
	return true, nil
}

// listParts returns parts 1…n of upload id and their total size.
func (w *writer) listParts(id string, n int) ([]minio.CompletePart, int64, error) {
	parts := make([]minio.CompletePart, 0, n)
	var size int64
	marker := 0
	for len(parts) < n {
		res, err := w.d.core.ListObjectParts(w.ctx, w.d.bucket, w.key, id, marker, listMax)
		if err != nil {
			return nil, 0, mapErr("write", w.path, err)
		}
		for _, p := range res.ObjectParts {
			if p.PartNumber != len(parts)+1 {
				return nil, 0, fmt.Errorf("s3: upload of %s lacks part %d", w.path, len(parts)+1)
			}
			parts = append(parts, minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag})
			size += p.Size
			if len(parts) == n {
				break
			}
		}
		if !res.IsTruncated {
			break
		}
		marker = res.NextPartNumberMarker
	}
	if len(parts) != n {
		return nil, 0, fmt.Errorf("s3: upload of %s has %d parts, its pending object counts %d", w.path, len(parts), n)
	}
	return parts, size, nil
}

// partsSum is the hex sha256 of the parts' ETags, in order.
func partsSum(parts []minio.CompletePart) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d %s\n", p.PartNumber, strings.Trim(p.ETag, `"`))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// meta reads a user metadata value whatever the case of its key.
func meta(m map[string]string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func (w *writer) Write(b []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.base > 0 {
		if err := w.reopen(); err != nil {
			return 0, w.fail(err)
		}
	}
	w.dirty, w.object = true, false
	n := 0
	for {
		for int64(len(w.buf)) >= w.d.chunk {
			if err := w.uploadPart(w.buf[:w.d.chunk]); err != nil {
				// The writer is broken: its Close keeps nothing, and the
				// bucket holds the state of the last Close.
				return n, w.fail(err)
			}
			w.buf = w.buf[:copy(w.buf, w.buf[w.d.chunk:])]
		}
		if len(b) == 0 {
			return n, nil
		}
		if int64(cap(w.buf)) < w.d.chunk {
			w.buf = append(w.d.buffer(0), w.buf...)
		}
		k := copy(w.buf[len(w.buf):w.d.chunk], b)
		w.buf = w.buf[:len(w.buf)+k]
		b, n = b[k:], n+k
	}
}

func (w *writer) usable() error {
	switch {
	case w.cancelled:
		return &driver.PathError{Op: "write", Path: w.path, Err: errors.New("writer cancelled")}
	case w.closed:
		return &driver.PathError{Op: "write", Path: w.path, Err: errors.New("writer closed")}
	}
	return w.broken
}

func (w *writer) fail(err error) error {
	w.broken = err
	return err
}

// reopen turns the committed object into the start of a new upload: copied
// on the server when it can be a part, read into the buffer when smaller.
func (w *writer) reopen() error {
	size := w.base
	if size < minChunkSize {
		body, info, _, err := w.d.core.GetObject(w.ctx, w.d.bucket, w.key, minio.GetObjectOptions{})
		if err != nil {
			return mapErr("write", w.path, err)
		}
		defer body.Close()
		if info.Size != size {
			return fmt.Errorf("s3: %s changed while being appended to", w.path)
		}
		buf, err := w.d.readBuffer(body, size)
		if err != nil {
			return mapErr("write", w.path, err)
		}
		w.releaseBuffer()
		w.buf, w.base = buf, 0
		return nil
	}
	id, err := w.newUpload()
	if err != nil {
		return err
	}
	parts, err := w.d.copyParts(w.ctx, w.key, w.key, id, 1, size, maxCopyPart)
	if err != nil {
		_ = w.d.core.AbortMultipartUpload(context.WithoutCancel(w.ctx), w.d.bucket, w.key, id)
		return mapErr("write", w.path, err)
	}
	w.uploadID, w.parts, w.partSize, w.base = id, parts, size, 0
	return nil
}

// newUpload begins a multipart upload of the file, the uploads marker
// written first.
func (w *writer) newUpload() (string, error) {
	if !w.marked {
		if err := w.d.putObject(w.ctx, "write", w.path, w.key+uploadsSuffix, nil, nil); err != nil {
			return "", err
		}
		w.marked = true
	}
	id, err := w.d.core.NewMultipartUpload(w.ctx, w.d.bucket, w.key, w.d.put)
	return id, mapErr("write", w.path, err)
}

func (w *writer) uploadPart(data []byte) error {
	if len(w.parts) == maxParts {
		return &driver.PathError{Op: "write", Path: w.path, Err: fmt.Errorf("more than %d parts: raise chunksize", maxParts)}
	}
	if w.uploadID == "" {
		id, err := w.newUpload()
		if err != nil {
			return err
		}
		w.uploadID = id
	}
	n := len(w.parts) + 1
	p, err := w.d.core.PutObjectPart(w.ctx, w.d.bucket, w.key, w.uploadID, n, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{})
	if err != nil {
		w.lent = true
		return mapErr("write", w.path, err)
	}
	w.parts = append(w.parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
	w.partSize += int64(len(data))
	return nil
}

func (w *writer) Size() int64 {
	if w.closed {
		return w.closedSize
	}
	return w.base + w.partSize + int64(len(w.buf))
}

// persist writes the pending object, making the writer's state durable.
func (w *writer) persist() error {
	if !w.dirty {
		return nil
	}
	opts := w.d.put
	opts.UserMetadata = mergeMeta(opts.UserMetadata, map[string]string{
		metaUpload: w.uploadID, metaParts: strconv.Itoa(len(w.parts)), metaPartsSum: partsSum(w.parts)})
	// Conditional: if another writer kept the file since this one opened
	// it (a chunk sent to two replicas at once), this Close fails instead
	// of replacing that writer's state with one the caller's saved hash
	// would then not match.
	if w.seenKnown {
		if w.seen == "" {
			opts.SetMatchETagExcept("*")
		} else {
			opts.SetMatchETag(w.seen)
		}
	}
	info, err := w.d.core.PutObject(w.ctx, w.d.bucket, w.key+pendingSuffix, bytes.NewReader(w.buf), int64(len(w.buf)), "", "", opts)
	if err != nil {
		w.lent = true
		// A pending object that went (another writer committed or
		// cancelled the file) fails the If-Match as not found.
		if code := minio.ToErrorResponse(err).Code; code == "PreconditionFailed" || code == "ConditionalRequestConflict" ||
			(w.seen != "" && code == "NoSuchKey") {
			return &driver.PathError{Op: "write", Path: w.path, Err: ErrConcurrentWriter}
		}
		return mapErr("write", w.path, err)
	}
	w.dirty, w.pending, w.seen, w.seenKnown = false, true, info.ETag, true
	return nil
}

// ErrConcurrentWriter is returned (wrapped) by Close when another writer
// kept the same file after this one opened it; what this one wrote is not
// kept.
var ErrConcurrentWriter = errors.New("another writer kept this file meanwhile")

// Commit implements driver.FileWriter: the file becomes an object.
func (w *writer) Commit(ctx context.Context) error {
	if err := w.usable(); err != nil {
		return err
	}
	if w.object && !w.dirty {
		return nil // already the object
	}
	// Taken first: uploading the buffer as the last part counts it in
	// partSize as well.
	size := w.Size()
	if w.uploadID == "" {
		if err := w.d.putObject(ctx, "commit", w.path, w.key, w.buf, nil); err != nil {
			w.lent = true
			return w.fail(err)
		}
	} else {
		if len(w.buf) > 0 {
			if err := w.uploadPart(w.buf); err != nil {
				return w.fail(err)
			}
		}
		if _, err := w.d.core.CompleteMultipartUpload(ctx, w.d.bucket, w.key, w.uploadID, w.parts, w.d.put); err != nil {
			return w.fail(mapErr("commit", w.path, err))
		}
	}
	w.base, w.uploadID, w.parts, w.partSize = size, "", nil, 0
	w.releaseBuffer()
	w.dirty, w.object = false, true
	return w.cleanup(ctx)
}

// cleanup removes the pending object and the uploads of writers that died.
func (w *writer) cleanup(ctx context.Context) error {
	if w.pending {
		err := w.d.core.RemoveObject(ctx, w.d.bucket, w.key+pendingSuffix, minio.RemoveObjectOptions{})
		if err := mapErr("commit", w.path, err); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
		w.pending, w.seen = false, ""
	}
	for _, id := range w.strays {
		err := w.d.core.AbortMultipartUpload(ctx, w.d.bucket, w.key, id)
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			return mapErr("commit", w.path, err)
		}
	}
	w.strays = nil
	if w.marked {
		// Last: while an upload may be left, the marker names it.
		err := w.d.core.RemoveObject(ctx, w.d.bucket, w.key+uploadsSuffix, minio.RemoveObjectOptions{})
		if err := mapErr("commit", w.path, err); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
		w.marked = false
	}
	return nil
}

// Cancel implements driver.FileWriter: the file, its upload and its
// pending object go.
func (w *writer) Cancel(ctx context.Context) error {
	w.cancelled = true
	w.releaseBuffer()
	if w.uploadID != "" {
		w.strays = append(w.strays, w.uploadID)
	}
	if err := w.cleanup(ctx); err != nil {
		return err
	}
	err := w.d.core.RemoveObject(ctx, w.d.bucket, w.key, minio.RemoveObjectOptions{})
	if err := mapErr("cancel", w.path, err); err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	return nil
}

// Close implements driver.FileWriter: what was written is kept, durably, for
// the next writer. What is left over in the buffer becomes a part when it
// may be one (5 MiB), so that the next writer need not read it back.
func (w *writer) Close() error {
	if w.closed || w.cancelled {
		return nil
	}
	w.closedSize = w.Size()
	w.closed = true
	defer w.releaseBuffer()
	if w.broken != nil {
		return nil // the bucket holds the last whole state; nothing to add
	}
	if w.dirty && int64(len(w.buf)) >= minChunkSize && len(w.parts) < maxParts {
		if err := w.uploadPart(w.buf); err != nil {
			return err
		}
		w.buf = w.buf[:0]
	}
	return w.persist()
}
