// Package proxy is Berth's pull-through cache: a content source in front
// of storage that fills it from upstream registries.
//
// Each Upstream mirrors the repositories under a prefix of the local name
// space ("hub/library/alpine" is "library/alpine" of the upstream), or,
// with an empty prefix, every repository (Distribution's proxy section,
// what Docker's registry-mirrors expects).
//
// A pull by tag asks the upstream with a HEAD (registries such as Docker
// Hub do not count HEADs against their rate limits), as Distribution's
// proxy does: when the digest is the cached manifest's, that is served;
// otherwise the manifest is fetched and stored. When the upstream fails
// (unreachable, 5xx, 429) the cached copy is served. Upstream.TagCheck
// may let a confirmed tag be served for a while without asking. Manifests
// by digest and blobs are immutable: stored once, served from storage
// after. Concurrent requests for one manifest make one upstream request.
//
// A blob that is not cached is streamed to the first client while it is
// being stored (see Proxy.OpenBlob). Concurrent requests for the same
// blob through any repository of the same upstream wait for that one
// download; a blob already stored (through another repository) is linked
// once the upstream confirms, with a HEAD, that this repository has it.
// Foreign layers of cached manifests are never fetched.
//
// How long cached content is kept (Upstream.TTL) is garbage collection's
// business: Retention turns the TTLs into storage retention rules.
//
// The upstream client is go-containerregistry's remote package (what crane
// and ko use against Docker Hub, mcr.microsoft.com and ghcr.io every day),
// over a transport of Berth's own that answers the upstream's Bearer or
// Basic challenges (see authTransport): remote refuses token realms on
// private addresses, which a mirror of a registry on a LAN has.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

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
	// TTL is how long cached content is kept, as Distribution's proxy
	// ttl: a garbage collection removes tags that were not fetched or
	// changed for longer, then the manifests and blobs only they kept (see
	// Retention). Zero or negative: kept until removed otherwise. The
	// proxy itself does not act on it.
	TTL time.Duration
	// TagCheck is how long a tag the upstream confirmed is served from the
	// cache without asking again. Zero: the upstream is asked (a HEAD) on
	// every pull of a tag, as Distribution's proxy does.
	TagCheck time.Duration
	// CAFile is a PEM file of certificate authorities trusted for this
	// upstream (and its token realm) besides the system's. Empty: the
	// system's only. Ignored when Transport is set.
	CAFile string
	// Transport carries requests to the upstream (and its token realm).
	// Nil: http.DefaultTransport's settings, with CAFile.
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
	reg name.Registry
	// rt carries requests to the upstream, authenticated (an authTransport
	// in a transport.Wrapper, so that remote adds nothing to it).
	rt http.RoundTripper
}

// Proxy serves mirrored repositories from a store, filling it from their
// upstreams. Create it with New; it is safe for concurrent use.
type Proxy struct {
	store     *storage.Store
	log       *slog.Logger
	upstreams []*upstream
	mu        sync.Mutex
	flights   map[blobKey]*flight
	manifests map[string]*manifestFlight
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
	p := &Proxy{store: store, log: log, flights: map[blobKey]*flight{}, manifests: map[string]*manifestFlight{}}
	for i, u := range ups {
		ru := &upstream{Upstream: u}
		if ru.Transport == nil {
			t := http.DefaultTransport.(*http.Transport).Clone()
			if u.CAFile != "" {
				pool, err := LoadCA(u.CAFile)
				if err != nil {
					return nil, fmt.Errorf("proxy: upstream %d: %w", i, err)
				}
				t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			ru.Transport = t
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
		at := newAuthTransport(ru.Transport, parsed.Scheme, reg.RegistryStr(), u.Username, u.Password)
		// A Wrapper is remote's sign to use a transport as it is: no ping,
		// no token flow of its own. FromToken with a challenge that is not
		// Bearer makes one that adds no credentials (anonymous).
		if ru.rt, err = transport.FromToken(reg, authn.Anonymous, at, &transport.Challenge{}, nil); err != nil {
			return nil, fmt.Errorf("proxy: remoteurl %s: %w", u.RemoteURL, err)
		}
		p.upstreams = append(p.upstreams, ru)
	}
	return p, nil
}

// LoadCA returns the system's certificate pool with the certificates of
// PEM file path added; a file without one is an error.
func LoadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// Retention returns the retention rules that expire the cached content of
// ups after their TTL (none for a TTL of zero or less): each removes the
// tags of its upstream's repositories that were last fetched or changed
// more than TTL ago, and untagged manifests stored more than TTL ago (so,
// with them, the blobs only those referenced). A collection applies the
// first rule that matches a repository, so rules placed before these win.
func Retention(ups []Upstream) []storage.RetentionRule {
	var rules []storage.RetentionRule
	for _, u := range ups {
		if u.TTL <= 0 {
			continue
		}
		r := storage.RetentionRule{TagsOlderThan: u.TTL, UntaggedOlderThan: u.TTL}
		if u.Prefix != "" {
			r.Repositories = u.Prefix + "/**"
		}
		if err := r.Compile(); err != nil {
			continue // a valid prefix always compiles
		}
		rules = append(rules, r)
	}
	return rules
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
		if u.TagCheck < 0 {
			return fmt.Errorf("upstream %d: tagcheck %v is negative", i, u.TagCheck)
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

// transport returns the authenticated transport to u (for remoteName: a
// token is fetched for the scope a request needs, see authTransport).
func (u *upstream) transport(_ context.Context, _ string) (http.RoundTripper, error) {
	return u.rt, nil
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
	return errors.Is(err, ErrUpstream) && !errors.Is(err, ErrUpstreamAuth)
}
