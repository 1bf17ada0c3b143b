package storage

import (
	"sync"

	"github.com/opencontainers/go-digest"
)

// manifestCache keeps recently read manifests by digest. Content is
// immutable, and every read still checks that the repository links the
// digest, so an entry can never serve a deleted manifest.
type manifestCache struct {
	mu    sync.Mutex
	m     map[digest.Digest]*Manifest
	bytes int
}

// maxCachedManifestBytes bounds the cache; past it, it starts over.
const maxCachedManifestBytes = 8 << 20

func (c *manifestCache) get(dg digest.Digest) *Manifest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[dg]
}

func (c *manifestCache) put(m *Manifest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.bytes+len(m.Payload) > maxCachedManifestBytes {
		c.m, c.bytes = make(map[digest.Digest]*Manifest), 0
	}
	if _, ok := c.m[m.Digest]; !ok {
		c.m[m.Digest] = m
		c.bytes += len(m.Payload)
	}
}
