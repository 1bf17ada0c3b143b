// Package driver defines the byte store that Berth's content model sits on.
//
// The interface is deliberately small and object-store shaped: whole-file
// reads and writes, ranged reads, resumable appends, stat, list, move and
// delete. Nothing relies on renaming a directory, so an S3-compatible store
// can implement it. Paths are slash-separated and absolute ("/docker/…");
// drivers reject paths that are not clean.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"time"
)

// Driver is a byte store. All methods are safe for concurrent use.
type Driver interface {
	// GetContent returns the whole content of the file at path.
	GetContent(ctx context.Context, path string) ([]byte, error)
	// PutContent writes content to path atomically: a reader sees the old
	// content or the new one, never a part, and after a crash the same holds.
	PutContent(ctx context.Context, path string, content []byte) error
	// Reader opens the file at path for reading from offset. An offset at or
	// past the end yields an empty reader.
	Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error)
	// Writer opens a resumable writer for path. With append false any
	// existing content is discarded; with append true writing continues at
	// the end of what earlier writers committed.
	Writer(ctx context.Context, path string, append bool) (FileWriter, error)
	// Stat describes the file or directory at path.
	Stat(ctx context.Context, path string) (FileInfo, error)
	// List returns the full paths of the direct children of the directory
	// at path, in no particular order.
	List(ctx context.Context, path string) ([]string, error)
	// ListPage returns the direct children of the directory at path in key
	// order (see Entry.Key), only those whose key sorts after after, and at
	// most limit of them (limit ≤ 0: all): the first limit, so that an
	// answer shorter than limit tells the caller the directory has no more
	// (storage's listings rely on it). Listings that show a page use it,
	// so that they cost what the page costs: an object store answers it
	// with one request per thousand entries, whatever the directory holds.
	ListPage(ctx context.Context, path, after string, limit int) ([]Entry, error)
	// Move moves the file at src to dst, replacing dst. It is atomic for
	// readers of dst where the store allows (a rename on a filesystem).
	Move(ctx context.Context, src, dst string) error
	// Delete removes the file or the whole tree at path.
	Delete(ctx context.Context, path string) error
}

// FileWriter writes one file. What it writes is durable after Close or
// Commit, and seen by the driver's other methods (Stat, Reader,
// GetContent, Move) only after Commit: an object store holds an unfinished
// file as a multipart upload, which only the next Writer can continue.
type FileWriter interface {
	io.Writer
	// Size is the file's size so far, including earlier appends.
	Size() int64
	// Commit makes everything written durable and visible to readers.
	// The writer may be used further after a Commit, though on an object
	// store that costs a copy of the file: commit once, at the end.
	Commit(ctx context.Context) error
	// Cancel discards the file.
	Cancel(ctx context.Context) error
	// Close releases the writer, keeping what was written durably for a
	// later Writer with append set (fsync on a filesystem).
	Close() error
}

// FileInfo describes a stored file or directory.
type FileInfo struct {
	Path    string
	Size    int64
	ModTime time.Time
	IsDir   bool
}

// Entry is one child in a directory listing.
type Entry struct {
	Name  string // the child's name, without its directory
	IsDir bool
}

// Key is the entry's place in key order: its name, followed by "/" for a
// directory. It is the order of the keys of an object store, where a
// directory is the prefix its files' keys share, and it is what ListPage
// sorts by and compares after with.
func (e Entry) Key() string {
	if e.IsDir {
		return e.Name + "/"
	}
	return e.Name
}

// ErrNotFound is returned (wrapped in a *PathError) when a path does not exist.
var ErrNotFound = errors.New("path not found")

// ErrInvalidPath is returned (wrapped in a *PathError) for a path that is not
// absolute and clean.
var ErrInvalidPath = errors.New("invalid path")

// ErrStorageFull is returned (wrapped, beside the store's own error) when
// a write fails because the store has no space left (a full disk, a quota).
// The write changed nothing; it may succeed once space is freed.
var ErrStorageFull = errors.New("storage is full")

// Writability is implemented by drivers that can tell whether writes
// currently succeed. Writable returns nil unless the last write failed
// for a reason of the store's own (a full disk, an I/O error) and no write
// has succeeded since; reads may still work while it fails.
type Writability interface {
	Writable() error
}

// Redirector is implemented by drivers whose files clients can fetch
// directly: RedirectURL returns a URL, valid for some minutes, that serves
// the file at path without credentials (a presigned URL of an object store).
type Redirector interface {
	RedirectURL(ctx context.Context, path string) (string, error)
}

// FileStater is implemented by drivers on which a file's absence is
// cheaper to learn than the absence of both a file and a directory: on an
// object store, where a directory is only a prefix of other keys, Stat of
// a missing path takes a HEAD and then a listing, StatFile only the HEAD.
// StatFile describes the file at path; it returns ErrNotFound when there
// is no file there, even when a directory is.
type FileStater interface {
	StatFile(ctx context.Context, path string) (FileInfo, error)
}

// PathError records the path an operation failed on.
type PathError struct {
	Op   string
	Path string
	Err  error
}

func (e *PathError) Error() string { return fmt.Sprintf("driver: %s %s: %v", e.Op, e.Path, e.Err) }

// Unwrap returns the cause, so errors.Is(err, ErrNotFound) works.
func (e *PathError) Unwrap() error { return e.Err }

// pathByte says which bytes a path component may hold: letters, digits
// and ._:@+- (a table, not a regular expression: every driver call checks
// its path).
var pathByte = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@+-") {
		t[c] = true
	}
	return t
}()

func validComponent(c string) bool {
	if c == "" || c == "." || c == ".." {
		return false
	}
	for i := 0; i < len(c); i++ {
		if !pathByte[c[i]] {
			return false
		}
	}
	return true
}

// CheckPath reports whether p is a path a driver accepts: absolute, clean,
// and made of components of letters, digits and ._:@+- that are not "." or
// "..". Drivers call it on every path they are given.
func CheckPath(op, p string) error {
	if p == "/" {
		return nil
	}
	if len(p) < 2 || p[0] != '/' || path.Clean(p) != p {
		return &PathError{Op: op, Path: p, Err: ErrInvalidPath}
	}
	for i, start := 1, 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			c := p[start:i]
			if !validComponent(c) {
				return &PathError{Op: op, Path: p, Err: ErrInvalidPath}
			}
			start = i + 1
		}
	}
	return nil
}
