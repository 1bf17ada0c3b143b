// Package proxy is Berth's pull-through cache: a content source in front
// of storage that fills it from upstream registries.
//
// Each Upstream mirrors the repositories under a prefix of the local name
// space ("hub/library/alpine" is "library/alpine" of the upstream), or,
// with an empty prefix, every repository (Distribution's proxy section,
// what Docker's registry-mirrors expects). Manifests by tag are fetched
// again once their TTL has passed since the last fetch (the time is kept
// in storage, see storage.SetTagFetched); when the upstream then fails
// (unreachable, 5xx, 429) the cached copy is served. Manifests by digest
// and blobs are immutable: stored once, served from storage after.
//
// A blob that is not cached is streamed to the first client while it is
// being stored (see Proxy.OpenBlob); concurrent requests for the same blob
// of the same repository wait for that fetch and are then served from
// storage, so the upstream sees one download.
//
// The upstream client is go-containerregistry's remote and transport
// packages: they implement the registry token flow (the Bearer challenge,
// a token from the realm with Basic credentials or anonymously, refreshed
// on 401) and Basic auth as Docker Hub, mcr.microsoft.com and ghcr.io
// expect, are what crane and ko use against those registries every day,
// and are already a dependency of Berth's tests. Writing that client here
// would be more code with less exposure.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// DefaultTTL is the TTL configurations default to: Distribution's default
// proxy ttl (168h).
const DefaultTTL = 168 * time.Hour

// Upstream is one registry that is mirrored.
type Upstream struct {
	// Prefix is the first components of the local repositories this
	// upstream mirrors, without a trailing "/" ("hub", "mirrors/mcr"); it
	// is removed from a name before the upstream is asked. Empty: every
	// repository (then it must be the only upstream).
	Prefix string
	// RemoteURL is the upstream registry, http or https, with no path
	// ("https://registry-1.docker.io").
	RemoteURL string
	// Username and Password authenticate to the upstream (Basic, or for
	// its token flow). Empty: anonymous.
	Username, Password string
	// TTL is how long a manifest fetched by tag is served from the cache
	// before the upstream is asked again. Zero: the upstream is asked on
	// every pull of a tag, as Distribution's proxy does (the cached copy
	// still stands in while the upstream fails).
	TTL time.Duration
	// Transport carries requests to the upstream (and its token realm).
	// Nil: http.DefaultTransport.
	Transport http.RoundTripper
}

// ErrUpstream wraps a failure to get content from an upstream that is not
// an answer that the content does not exist: unreachable, 5xx, refused
// credentials. The registry answers it with 502.
var ErrUpstream = errors.New("upstream registry failed")

// ErrMirrored is returned for a write to a mirrored repository.
var ErrMirrored = errors.New("the repository is a pull-through cache of an upstream registry: pushes and deletes are refused")

// upstream is an Upstream resolved.
type upstream struct {
	Upstream
	reg  name.Registry
	auth authn.Authenticator
	// transports holds one authenticated transport per remote repository
	// (a token is scoped to one): remote name → http.RoundTripper.
	transports sync.Map
}

// Proxy serves mirrored repositories from a store, filling it from their
// upstreams. Create it with New; it is safe for concurrent use.
type Proxy struct {
	store     *storage.Store
	log       *slog.Logger
	upstreams []*upstream
	mu        sync.Mutex
	flights   map[string]*flight
}

// flight is a blob download in progress; done is closed when it ends,
// err then says how.
type flight struct {
	done chan struct{}
	err  error
}

// New returns a proxy of store for ups, which must be valid (see
// Validate). Logger nil discards.
func New(store *storage.Store, ups []Upstream, log *slog.Logger) (*Proxy, error) {
	if err := Validate(ups); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{store: store, log: log, flights: map[string]*flight{}}
	for _, u := range ups {
		ru := &upstream{Upstream: u}
		if ru.Transport == nil {
			ru.Transport = http.DefaultTransport
		}
		parsed, _ := url.Parse(u.RemoteURL)
		var opts []name.Option
		if parsed.Scheme == "http" {
			opts = append(opts, name.Insecure)
		}
		reg, err := name.NewRegistry(parsed.Host, opts...)
		if err != nil {
			return nil, fmt.Errorf("proxy: remoteurl %s: %w", u.RemoteURL, err)
		}
		ru.reg = reg
		ru.auth = authn.Anonymous
		if u.Username != "" || u.Password != "" {
			ru.auth = &authn.Basic{Username: u.Username, Password: u.Password}
		}
		p.upstreams = append(p.upstreams, ru)
	}
	return p, nil
}

// Validate checks upstreams: remote URLs http(s) with a host and no path,
// prefixes valid repository names, none equal to or inside another, and
// an empty prefix only alone.
func Validate(ups []Upstream) error {
	for i, u := range ups {
		parsed, err := url.Parse(u.RemoteURL)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" ||
			strings.Trim(parsed.Path, "/") != "" || parsed.RawQuery != "" || parsed.User != nil {
			shown := "(unparsable)"
			if err == nil {
				shown = parsed.Redacted() // credentials never reach a log
			}
			return fmt.Errorf("upstream %d: remoteurl %s: want http(s)://host[:port] with no path, query or credentials", i, shown)
		}
		if u.TTL < 0 {
			return fmt.Errorf("upstream %d: ttl %v is negative", i, u.TTL)
		}
		if u.Prefix == "" {
			if len(ups) > 1 {
				return fmt.Errorf("upstream %d: an empty prefix mirrors every repository, so it must be the only upstream", i)
			}
			continue
		}
		if err := storage.ValidateName(u.Prefix); err != nil {
			return fmt.Errorf("upstream %d: prefix %q is not a valid repository name", i, u.Prefix)
		}
		for j, o := range ups[:i] {
			if u.Prefix == o.Prefix || strings.HasPrefix(u.Prefix, o.Prefix+"/") || strings.HasPrefix(o.Prefix, u.Prefix+"/") {
				return fmt.Errorf("upstreams %d and %d: prefixes %q and %q overlap", j, i, o.Prefix, u.Prefix)
			}
		}
	}
	return nil
}

// lookup returns the upstream that mirrors local repository name and the
// name it has there, or nil.
func (p *Proxy) lookup(local string) (*upstream, string) {
	if p == nil || local == "" {
		return nil, ""
	}
	for _, u := range p.upstreams {
		if u.Prefix == "" {
			return u, local
		}
		if rest, ok := strings.CutPrefix(local, u.Prefix+"/"); ok && rest != "" {
			return u, rest
		}
	}
	return nil, ""
}

// Mirrors reports whether local repository name is a pull-through cache.
// A nil Proxy mirrors nothing.
func (p *Proxy) Mirrors(local string) bool {
	u, _ := p.lookup(local)
	return u != nil
}

// transport returns the authenticated transport for remote repository
// remoteName, made on first use (a ping and, for a token upstream, a
// token).
func (u *upstream) transport(ctx context.Context, remoteName string) (http.RoundTripper, error) {
	if t, ok := u.transports.Load(remoteName); ok {
		return t.(http.RoundTripper), nil
	}
	repo := u.reg.Repo(remoteName)
	t, err := transport.NewWithContext(ctx, u.reg, u.auth, u.Transport, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, upstreamErr(err)
	}
	actual, _ := u.transports.LoadOrStore(remoteName, t)
	return actual.(http.RoundTripper), nil
}

// upstreamErr classifies an error of the upstream client: a 404 is the
// content's absence (storage's not-found errors are for the caller to
// pick), anything else wraps ErrUpstream.
func upstreamErr(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return errNotFound
	}
	return fmt.Errorf("%w: %w", ErrUpstream, err)
}

// errNotFound: the upstream answered 404.
var errNotFound = errors.New("not found upstream")

// unavailable reports whether err means the upstream could not answer
// (unreachable, 5xx, 429), so a cached copy may stand in, rather than that
// it answered no.
func unavailable(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode >= 500 || terr.StatusCode == http.StatusTooManyRequests
	}
	return errors.Is(err, ErrUpstream)
}

// GetManifest returns the manifest ref (a tag or digest) of mirrored
// repository local: from storage when it is cached (and, for a tag,
// fetched less than the TTL ago), else from the upstream, stored first.
// A tag whose upstream cannot be reached is served from the cache however
// old. It returns storage.ErrManifestUnknown when neither has it.
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
	if byDigest {
		if cerr == nil {
			return cached, nil
		}
	} else if cerr == nil {
		at, err := p.store.TagFetched(ctx, local, ref)
		if err != nil {
			p.log.Warn("proxy: reading a tag's fetch time", "repository", local, "tag", ref, "err", err)
		}
		if time.Since(at) < u.TTL {
			return cached, nil
		}
	}
	m, err := p.fetchManifest(ctx, u, local, remoteName, ref)
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

// fetchManifest gets ref of remoteName from u and stores it in local (a
// tag with its fetch time).
func (p *Proxy) fetchManifest(ctx context.Context, u *upstream, local, remoteName, ref string) (*storage.Manifest, error) {
	t, err := u.transport(ctx, remoteName)
	if err != nil {
		return nil, err
	}
	repo := u.reg.Repo(remoteName)
	var r name.Reference
	if _, err := digest.Parse(ref); err == nil {
		r = repo.Digest(ref)
	} else {
		r = repo.Tag(ref)
	}
	at := time.Now()
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
	if _, err := digest.Parse(ref); err != nil {
		if err := p.store.SetTagFetched(ctx, local, ref, at); err != nil {
			return nil, err
		}
	}
	return &storage.Manifest{Digest: res.Digest, MediaType: res.MediaType, Payload: desc.Manifest}, nil
}
