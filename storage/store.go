// Package storage is Berth's content model: blobs, upload sessions,
// manifests, tags, referrers and the catalog, on top of a driver.Driver, in
// CNCF Distribution's on-disk layout (see paths.go).
//
// Blobs are content-addressed and written once: bytes stream through a hash
// into an upload file, the digest is verified, and only then the file is
// moved into place. Repositories hold links to blobs, so content is stored
// once however many repositories have it. Upload sessions live in the
// store, so a restarted registry (or another replica) resumes them.
//
// Any number of registries may serve one store (replicas on one S3
// bucket). What a Store keeps in memory, and why that is safe:
//
//   - the manifest cache holds manifests by digest: content that never
//     changes, and every read still checks the repository's link first,
//     so a deleted manifest is never served from it;
//   - hash states of uploads in progress are kept by size; a state for a
//     size is valid for any later content of the upload (uploads only
//     grow), and the state after each chunk is also saved in the store,
//     which is where another replica finds it;
//   - the per-session lock serialises calls on one upload within a
//     process. Across replicas nothing is locked: clients send an
//     upload's chunks one after another, and each must start where the
//     upload ends (else 416). On S3 a file's completion also names the
//     parts its writer saw, so two writers racing on one session fail
//     rather than assemble bytes nobody hashed; on a filesystem shared by
//     several processes, a client that sent one session's chunks to two
//     of them at once could still mix them;
//   - garbage collection shares no memory with requests at all: leases,
//     doomed markers and the collection's lock are files (see lease.go).
package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	_ "crypto/sha256" // digest algorithms the registry computes
	_ "crypto/sha512"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/storage/driver"
)

// Store is the content store. Create it with New; it is safe for
// concurrent use.
type Store struct {
	d          driver.Driver
	uploadWait time.Duration
	grace      time.Duration
	locks      keyedMutex
	states     hashStates
	manifests  manifestCache
	gc         *gcMetrics
}

// Options tunes a Store. The zero value is what New uses.
type Options struct {
	// UploadWait bounds how long a call on an upload session waits while
	// another call holds the same session (a request whose body is still
	// arriving) before it fails with ErrUploadBusy. Zero: it waits as long
	// as its context allows.
	UploadWait time.Duration
	// GracePeriod is how long new content, and content a request relied
	// on, is safe from garbage collection (see lease.go); registries and
	// collections on one store must use the same value. Zero:
	// DefaultGracePeriod.
	GracePeriod time.Duration
	// Registerer receives the store's metrics (berth_gc_*: collections by
	// result, blobs and bytes freed). Nil: none are registered. Giving one
	// Registerer to two stores panics.
	Registerer prometheus.Registerer
}

// New returns a store on d with the default Options.
func New(d driver.Driver) *Store {
	return NewWithOptions(d, Options{})
}

// NewWithOptions returns a store on d tuned by opts.
func NewWithOptions(d driver.Driver, opts Options) *Store {
	grace := opts.GracePeriod
	if grace <= 0 {
		grace = DefaultGracePeriod
	}
	return &Store{d: d, uploadWait: opts.UploadWait, grace: grace, gc: newGCMetrics(opts.Registerer)}
}

// Writable returns nil when the store's writes work, as far as the driver
// can tell (see driver.Writability), and otherwise why they fail. Drivers
// that cannot tell are always writable. Reads may work while it fails.
func (s *Store) Writable() error {
	if w, ok := s.d.(driver.Writability); ok {
		return w.Writable()
	}
	return nil
}

// readLink reads a link file and parses the digest in it.
func (s *Store) readLink(ctx context.Context, p string) (digest.Digest, error) {
	b, err := s.d.GetContent(ctx, p)
	if err != nil {
		return "", err
	}
	dg, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("storage: corrupt link %s: %w", p, err)
	}
	return dg, nil
}

func (s *Store) writeLink(ctx context.Context, p string, dg digest.Digest) error {
	return s.d.PutContent(ctx, p, []byte(dg.String()))
}

// statFile describes the file at p; a directory there is no file. Lookups
// of storage's own files (links, blob data, leases, markers) use it: on a
// driver.FileStater it is one request to an object store, where Stat of a
// missing path also lists the prefix for a directory.
func (s *Store) statFile(ctx context.Context, p string) (driver.FileInfo, error) {
	if fs, ok := s.d.(driver.FileStater); ok {
		return fs.StatFile(ctx, p)
	}
	fi, err := s.d.Stat(ctx, p)
	if err == nil && fi.IsDir {
		return driver.FileInfo{}, &driver.PathError{Op: "stat", Path: p, Err: driver.ErrNotFound}
	}
	return fi, err
}

// fileExists reports whether there is a file at p; errors other than
// not-found are returned.
func (s *Store) fileExists(ctx context.Context, p string) (bool, error) {
	_, err := s.statFile(ctx, p)
	if errors.Is(err, driver.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// exists reports whether p, a file or a directory, exists; errors other
// than not-found are returned.
func (s *Store) exists(ctx context.Context, p string) (bool, error) {
	_, err := s.d.Stat(ctx, p)
	if errors.Is(err, driver.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// notFound replaces a driver not-found error with sentinel, keeping others.
func notFound(err, sentinel error) error {
	if errors.Is(err, driver.ErrNotFound) {
		return sentinel
	}
	return err
}

// keyedMutex serialises work on one key (an upload session) without
// holding a lock per key forever. Waiting for a key honours a context and a
// bound, so a request never waits behind another one indefinitely.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	held chan struct{} // holds one token while the key is locked
	refs int           // holders and waiters
}

// lock locks key, waiting until it is free, ctx ends, or wait (when
// positive) has passed; in the last two cases it returns an error wrapping
// ErrUploadBusy and the key is not locked.
func (k *keyedMutex) lock(ctx context.Context, key string, wait time.Duration) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedEntry)
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{held: make(chan struct{}, 1)}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	unlock = func() {
		<-e.held
		release()
	}
	select {
	case e.held <- struct{}{}:
		return unlock, nil
	default:
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case e.held <- struct{}{}:
		return unlock, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("%w: %w", ErrUploadBusy, context.Cause(ctx))
	case <-timeout:
		release()
		return nil, fmt.Errorf("%w: still in use after %v", ErrUploadBusy, wait)
	}
}

// Check reads from storage (the repositories directory: one stat, on S3
// one listing request) and returns the error if the read fails. An empty
// registry, with no such directory yet, passes.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.d.Stat(ctx, repositoriesPath())
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	return nil
}
