// Package storage is Berth's content model: blobs, upload sessions,
// manifests, tags, referrers and the catalog, on top of a driver.Driver, in
// CNCF Distribution's on-disk layout (see paths.go).
//
// Blobs are content-addressed and written once: bytes stream through a hash
// into an upload file, the digest is verified, and only then the file is
// moved into place. Repositories hold links to blobs, so content is stored
// once however many repositories have it. Upload sessions live in the
// store, so a restarted registry (or another replica) resumes them,
// rehashing what the session holds so far.
package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	_ "crypto/sha256" // digest algorithms the registry computes
	_ "crypto/sha512"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// Store is the content store. Create it with New; it is safe for
// concurrent use.
type Store struct {
	d         driver.Driver
	locks     keyedMutex
	states    hashStates
	manifests manifestCache
}

// New returns a store on d.
func New(d driver.Driver) *Store {
	return &Store{d: d}
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

// exists reports whether p exists; errors other than not-found are returned.
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
// holding a lock per key forever.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedEntry)
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
