package proxy

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// manifestFlight is a manifest request to an upstream in progress; done
// is closed when it ends, m and err then say how.
type manifestFlight struct {
	done chan struct{}
	m    *storage.Manifest
	err  error
}

// manifestTimeout bounds one manifest exchange with an upstream (token,
// HEAD and GET), which no client's going away cuts short.
const manifestTimeout = time.Minute

// GetManifest returns the manifest ref (a tag or digest) of mirrored
// repository local. By digest: from storage when it is cached, else from
// the upstream, stored first. By tag: the upstream is asked for the tag's
// digest (a HEAD; none while TagCheck has not passed since it last
// confirmed the tag), and the manifest fetched only when it differs from
// the cached one. A tag whose upstream cannot be reached (or answers 5xx
// or 429) is served from the cache. Concurrent calls for one ref share one
// exchange with the upstream. It returns storage.ErrManifestUnknown when
// neither has the manifest.
func (p *Proxy) GetManifest(ctx context.Context, local, ref string) (*storage.Manifest, error) {
	u, remoteName := p.lookup(local)
	if u == nil {
		return p.store.GetManifest(ctx, local, ref)
	}
	_, derr := digest.Parse(ref)
	byDigest := derr == nil
	cached, cerr := p.store.GetManifest(ctx, local, ref)
	if cerr != nil && !errors.Is(cerr, storage.ErrManifestUnknown) {
		return nil, cerr
	}
	if cerr == nil {
		if byDigest {
			return cached, nil
		}
		if u.TagCheck > 0 {
			at, err := p.store.TagFetched(ctx, local, ref)
			if err != nil {
				p.log.Warn("proxy: reading a tag's fetch time", "repository", local, "tag", ref, "err", err)
			}
			if time.Since(at) < u.TagCheck {
				return cached, nil
			}
		}
	}
	m, err := p.shareManifest(ctx, local+"@"+ref, func(ctx context.Context) (*storage.Manifest, error) {
		return p.refreshManifest(ctx, u, local, remoteName, ref, cached)
	})
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, errNotFound):
		return nil, storage.ErrManifestUnknown
	case cached != nil && unavailable(err):
		p.log.Warn("proxy: upstream unavailable, serving the cached manifest", "repository", local, "reference", ref, "err", err)
		return cached, nil
	}
	return nil, err
}

// shareManifest runs fetch once for all the callers that ask for key
// while it runs, detached from any one caller, and returns its result; a
// caller whose ctx ends stops waiting.
func (p *Proxy) shareManifest(ctx context.Context, key string, fetch func(context.Context) (*storage.Manifest, error)) (*storage.Manifest, error) {
	p.mu.Lock()
	f, busy := p.manifests[key]
	if !busy {
		f = &manifestFlight{done: make(chan struct{})}
		p.manifests[key] = f
	}
	p.mu.Unlock()
	if !busy {
		go func() {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), manifestTimeout)
			defer cancel()
			f.m, f.err = fetch(fctx)
			p.mu.Lock()
			delete(p.manifests, key)
			p.mu.Unlock()
			close(f.done)
		}()
	}
	select {
	case <-f.done:
		return f.m, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// refreshManifest asks u for ref of remoteName. For a tag of which cached
// is the stored manifest, a HEAD first: when the upstream's digest is the
// same, cached is returned (and, with TagCheck, the confirmation is
// recorded); else, or for a ref not cached, the manifest is fetched and
// stored.
func (p *Proxy) refreshManifest(ctx context.Context, u *upstream, local, remoteName, ref string, cached *storage.Manifest) (*storage.Manifest, error) {
	t, err := u.transport(ctx, remoteName)
	if err != nil {
		return nil, err
	}
	repo := u.reg.Repo(remoteName)
	var r name.Reference = repo.Tag(ref)
	_, derr := digest.Parse(ref)
	if derr == nil {
		r = repo.Digest(ref)
	}
	at := time.Now()
	if cached != nil && derr != nil {
		desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(t))
		switch {
		case err == nil && desc.Digest.String() == cached.Digest.String():
			if u.TagCheck > 0 {
				if err := p.store.SetTagFetched(ctx, local, ref, at); err != nil {
					p.log.Warn("proxy: recording a tag's confirmation", "repository", local, "tag", ref, "err", err)
				}
			}
			return cached, nil
		case err != nil && answered(err):
			return nil, upstreamErr(err)
		}
		// A new digest, or a HEAD the upstream does not answer as it
		// should (no digest): the GET tells.
	}
	desc, err := remote.Get(r, remote.WithContext(ctx), remote.WithTransport(t))
	if err != nil {
		return nil, upstreamErr(err)
	}
	// remote.Get checks a manifest fetched by digest against it; storage
	// checks again (PutMirroredManifest under ref).
	res, err := p.store.PutMirroredManifest(ctx, local, ref, string(desc.MediaType), desc.Manifest)
	if err != nil {
		return nil, err
	}
	if derr != nil {
		if err := p.store.SetTagFetched(ctx, local, ref, at); err != nil {
			return nil, err
		}
	}
	return &storage.Manifest{Digest: res.Digest, MediaType: res.MediaType, Payload: desc.Manifest}, nil
}

// answered reports whether a HEAD's error is the upstream's definite
// answer for the manifest (404, 429, 5xx) or its not answering at all (the
// network), which a GET would only repeat.
func answered(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		var nerr net.Error
		return errors.As(err, &nerr)
	}
	return terr.StatusCode == 404 || terr.StatusCode == 429 || terr.StatusCode >= 500
}
