package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/driver"
)

// MaxManifestSize is the largest manifest accepted (4 MiB, as the OCI spec
// suggests and Distribution enforces).
const MaxManifestSize = 4 << 20

// Manifest media types the registry stores.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest        = v1.MediaTypeImageManifest
	MediaTypeOCIIndex           = v1.MediaTypeImageIndex
)

// isIndex reports whether mediaType is a list of manifests.
func isIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerManifestList
}

func knownManifestType(mediaType string) bool {
	switch mediaType {
	case MediaTypeDockerManifest, MediaTypeDockerManifestList, MediaTypeOCIManifest, MediaTypeOCIIndex:
		return true
	}
	return false
}

// Manifest is a stored manifest. Callers must not modify Payload: the
// store may hand the same Manifest to several readers.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Payload   []byte
}

// manifestDoc is the union of the fields of the four manifest kinds that the
// registry looks at.
type manifestDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *v1.Descriptor    `json:"config,omitempty"`
	Layers        []v1.Descriptor   `json:"layers,omitempty"`
	Manifests     []v1.Descriptor   `json:"manifests,omitempty"`
	Subject       *v1.Descriptor    `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// parseManifest decodes payload and settles its media type. A manifest
// names its type in its mediaType field or, without one (the OCI types make
// it optional, Docker's do not), by its shape: "manifests" without config or
// layers is an OCI index, a config without "manifests" an OCI image
// manifest; any other shape is refused. A Content-Type, when one is sent,
// must be a manifest media type (parameters ignored) and agree with what the
// document says, as CNCF Distribution requires. A stored manifest is read
// back with no Content-Type and settles on the type it was pushed as, so it
// is served with that Content-Type.
func parseManifest(payload []byte, contentType string) (*manifestDoc, string, error) {
	var doc manifestDoc
	if err := json.Unmarshal(payload, &doc); err != nil {
		return nil, "", &ManifestInvalidError{Reason: "not valid JSON: " + err.Error()}
	}
	if doc.SchemaVersion != 2 {
		return nil, "", &ManifestInvalidError{Reason: fmt.Sprintf("schemaVersion %d is not supported", doc.SchemaVersion)}
	}
	header, err := manifestContentType(contentType)
	if err != nil {
		return nil, "", err
	}
	mediaType := doc.MediaType
	switch {
	case mediaType == "":
		if mediaType = doc.shapeType(); mediaType == "" {
			return nil, "", &ManifestInvalidError{Reason: "no mediaType, and the document is neither shaped as an image manifest nor as an index"}
		}
		if header != "" && header != mediaType {
			return nil, "", &ManifestInvalidError{Reason: fmt.Sprintf("Content-Type %s for a document without mediaType, shaped as %s", header, mediaType)}
		}
	case !knownManifestType(mediaType):
		return nil, "", &ManifestInvalidError{Reason: fmt.Sprintf("unsupported manifest media type %q", truncate(mediaType))}
	case header != "" && header != mediaType:
		return nil, "", &ManifestInvalidError{Reason: fmt.Sprintf("Content-Type %s does not match mediaType %s", header, mediaType)}
	}
	if isIndex(mediaType) {
		if doc.Config != nil || doc.Layers != nil {
			return nil, "", &ManifestInvalidError{Reason: "an index has no config or layers"}
		}
	} else if doc.Config == nil {
		return nil, "", &ManifestInvalidError{Reason: "an image manifest needs a config"}
	}
	for _, d := range doc.descriptors() {
		if err := d.Digest.Validate(); err != nil {
			return nil, "", &ManifestInvalidError{Reason: fmt.Sprintf("descriptor digest %q: %v", truncate(d.Digest.String()), err)}
		}
		if d.Size < 0 {
			return nil, "", &ManifestInvalidError{Reason: "descriptor with a negative size"}
		}
	}
	return &doc, mediaType, nil
}

// manifestContentType returns the media type of a manifest push's
// Content-Type header without its parameters, "" when there is none, or an
// error when it names no manifest type the registry stores.
func manifestContentType(contentType string) (string, error) {
	if contentType == "" {
		return "", nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return "", &ManifestInvalidError{Reason: fmt.Sprintf("Content-Type %q: %v", truncate(contentType), err)}
	}
	if !knownManifestType(mt) {
		return "", &ManifestInvalidError{Reason: fmt.Sprintf("Content-Type %s is not a manifest media type", truncate(mt))}
	}
	return mt, nil
}

// shapeType is the OCI media type a document without mediaType has by its
// fields, or "" when they fit neither an index nor an image manifest.
func (m *manifestDoc) shapeType() string {
	switch {
	case m.Manifests != nil && m.Config == nil && m.Layers == nil:
		return MediaTypeOCIIndex
	case m.Config != nil && m.Manifests == nil:
		return MediaTypeOCIManifest
	}
	return ""
}

// references are the digests a manifest needs in its repository: its
// config, its layers but those stored elsewhere (with urls), and an
// index's children. The subject is not one (see checkReferences).
func (m *manifestDoc) references() []digest.Digest {
	var dgs []digest.Digest
	if m.Config != nil {
		dgs = append(dgs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		if len(l.URLs) == 0 {
			dgs = append(dgs, l.Digest)
		}
	}
	for _, c := range m.Manifests {
		dgs = append(dgs, c.Digest)
	}
	return dgs
}

func (m *manifestDoc) descriptors() []v1.Descriptor {
	var ds []v1.Descriptor
	if m.Config != nil {
		ds = append(ds, *m.Config)
	}
	ds = append(ds, m.Layers...)
	ds = append(ds, m.Manifests...)
	if m.Subject != nil {
		ds = append(ds, *m.Subject)
	}
	return ds
}

// PutManifestResult is what a stored manifest is known by.
type PutManifestResult struct {
	Digest digest.Digest
	// Subject is the manifest's subject, empty when it has none.
	Subject digest.Digest
}

// PutManifest validates payload and stores it in repository name under
// reference ref, a tag or the manifest's digest, and under every tag in tags
// as well (the tag parameters of a push by digest). Every blob it references
// and every child manifest of an index must already be in the repository,
// of the size its descriptor declares (see checkReferences).
//
// The manifest's digest uses the algorithm of ref when ref is a digest, so
// a manifest pushed by sha512 digest with tags is known by that digest under
// every tag; sha256 otherwise. All tags are validated before anything is
// written: a refused push changes nothing.
func (s *Store) PutManifest(ctx context.Context, name, ref, contentType string, payload []byte, tags ...string) (PutManifestResult, error) {
	if err := ValidateName(name); err != nil {
		return PutManifestResult{}, err
	}
	if len(payload) > MaxManifestSize {
		return PutManifestResult{}, ErrManifestTooLarge
	}
	alg := digest.SHA256
	var refDigest digest.Digest
	var allTags []string
	if dg, err := digest.Parse(ref); err == nil {
		refDigest, alg = dg, dg.Algorithm()
	} else {
		allTags = []string{ref}
	}
	allTags = uniqueTags(append(allTags, tags...))
	for _, tag := range allTags {
		if err := ValidateTag(tag); err != nil {
			return PutManifestResult{}, err
		}
	}
	if !alg.Available() {
		return PutManifestResult{}, fmt.Errorf("%w: unsupported algorithm %s", ErrDigestInvalid, alg)
	}
	dg := alg.FromBytes(payload)
	if refDigest != "" && refDigest != dg {
		return PutManifestResult{}, &DigestMismatchError{Want: refDigest, Got: dg}
	}
	doc, _, err := parseManifest(payload, contentType)
	if err != nil {
		return PutManifestResult{}, err
	}
	// References are checked, promised (see lease.go), and checked again:
	// the first check refuses a broken manifest without leasing anything,
	// the second is the one the promise makes safe against a collection.
	have := repoContent{s, name}
	if err := checkReferences(ctx, doc, have); err != nil {
		return PutManifestResult{}, err
	}
	promised, err := s.promise(ctx, doc.references()...)
	if err != nil {
		return PutManifestResult{}, err
	}
	if err := checkReferences(ctx, doc, have); err != nil {
		return PutManifestResult{}, err
	}
	if err := s.checkPromise(promised); err != nil {
		return PutManifestResult{}, err
	}

	// Everything but the tags' current links is written at once, so the
	// fsyncs share the filesystem's journal commits; the tags move only
	// when all of it is durable, so a tag never points at something
	// missing. A crash in between can leave a revision link whose content
	// did not reach the disk: it reads as MANIFEST_UNKNOWN, and pushing
	// again completes it.
	//
	// The manifest's own lease is renewed with the rest, and the doomed
	// marker checked after all of it (see lease.go): if a collection was
	// removing this manifest meanwhile, everything is written again once
	// it is done.
	res := PutManifestResult{Digest: dg}
	if doc.Subject != nil {
		res.Subject = doc.Subject.Digest
	}
	writes := []func() error{
		func() error {
			if ok, err := s.fileExists(ctx, blobDataPath(dg)); err != nil || ok {
				return err
			}
			return s.d.PutContent(ctx, blobDataPath(dg), payload)
		},
		func() error { return s.writeLink(ctx, revisionLinkPath(name, dg), dg) },
	}
	if res.Subject != "" {
		writes = append(writes, func() error { return s.writeLink(ctx, referrerLinkPath(name, res.Subject, dg), dg) })
	}
	for _, tag := range allTags {
		writes = append(writes, func() error { return s.writeLink(ctx, tagIndexPath(name, tag, dg), dg) })
	}
	writes = append(writes, func() error { return s.renewLease(ctx, dg) })
	for {
		if err := concurrently(writes...); err != nil {
			return PutManifestResult{}, err
		}
		waited, err := s.waitDoomed(ctx, doomedPath(dg))
		if err != nil {
			return PutManifestResult{}, err
		}
		if !waited {
			break
		}
	}
	if len(allTags) == 0 {
		return res, nil
	}
	var moves []func() error
	for _, tag := range allTags {
		moves = append(moves, func() error { return s.moveTag(ctx, name, tag, dg) })
	}
	if err := concurrently(moves...); err != nil {
		return PutManifestResult{}, err
	}
	return res, nil
}

// moveTag points tag at dg. A retention pass that is removing the tag
// (see lease.go) holds a doomed marker while it decides; the link is
// written first and the marker checked after, so either the pass sees the
// new link and keeps the tag, or the tag is written again once it is done.
func (s *Store) moveTag(ctx context.Context, name, tag string, dg digest.Digest) error {
	for {
		if err := s.writeLink(ctx, tagCurrentPath(name, tag), dg); err != nil {
			return err
		}
		waited, err := s.waitDoomed(ctx, doomedTagPath(name, tag))
		if err != nil || !waited {
			return err
		}
	}
}

// uniqueTags returns tags without repetitions, in their first order.
func uniqueTags(tags []string) []string {
	out := tags[:0:0]
	for _, t := range tags {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// concurrently runs fns (at least one) at once and returns the first error.
func concurrently(fns ...func() error) error {
	errs := make(chan error, len(fns))
	for _, fn := range fns[1:] {
		go func() { errs <- fn() }()
	}
	errs <- fns[0]()
	var first error
	for range fns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// contentLookup says what a repository holds, for checking the references
// of a manifest pushed to it.
type contentLookup interface {
	// blobSize returns the size of blob dg, or an error wrapping
	// ErrBlobUnknown.
	blobSize(ctx context.Context, dg digest.Digest) (int64, error)
	// manifestSize returns the size of manifest dg, or an error wrapping
	// ErrManifestUnknown.
	manifestSize(ctx context.Context, dg digest.Digest) (int64, error)
}

// repoContent is the contentLookup of repository name in a store.
type repoContent struct {
	s    *Store
	name string
}

func (r repoContent) blobSize(ctx context.Context, dg digest.Digest) (int64, error) {
	return r.s.StatBlob(ctx, r.name, dg)
}

func (r repoContent) manifestSize(ctx context.Context, dg digest.Digest) (int64, error) {
	ok, err := r.s.fileExists(ctx, revisionLinkPath(r.name, dg))
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, ErrManifestUnknown
	}
	fi, err := r.s.statFile(ctx, blobDataPath(dg))
	if err != nil {
		return 0, notFound(err, ErrManifestUnknown)
	}
	return fi.Size, nil
}

// checkReferences checks a manifest's descriptors against what the
// repository holds: the config and every layer must be a blob of the
// repository, every child of an index one of its manifests, each of the
// size the descriptor declares (*ManifestBlobUnknownError,
// *SizeMismatchError). Two kinds are not checked: a layer with urls (a
// non-distributable layer, stored elsewhere), and the subject, which the
// spec lets a client push after its referrers (checking it only when
// present would make the outcome depend on the order of pushes).
func checkReferences(ctx context.Context, doc *manifestDoc, have contentLookup) error {
	check := func(d v1.Descriptor, size func(context.Context, digest.Digest) (int64, error), unknown error) error {
		n, err := size(ctx, d.Digest)
		if errors.Is(err, unknown) {
			return &ManifestBlobUnknownError{Digest: d.Digest}
		}
		if err != nil {
			return err
		}
		if n != d.Size {
			return &SizeMismatchError{Digest: d.Digest, Declared: d.Size, Stored: n}
		}
		return nil
	}
	if doc.Config != nil {
		if err := check(*doc.Config, have.blobSize, ErrBlobUnknown); err != nil {
			return err
		}
	}
	for _, l := range doc.Layers {
		if len(l.URLs) > 0 {
			continue
		}
		if err := check(l, have.blobSize, ErrBlobUnknown); err != nil {
			return err
		}
	}
	for _, m := range doc.Manifests {
		if err := check(m, have.manifestSize, ErrManifestUnknown); err != nil {
			return err
		}
	}
	return nil
}

// ResolveManifest returns the digest that ref (a tag or a digest) names in
// repository name.
func (s *Store) ResolveManifest(ctx context.Context, name, ref string) (digest.Digest, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	dg, err := digest.Parse(ref)
	if err != nil {
		if ValidateTag(ref) != nil {
			return "", ErrManifestUnknown
		}
		if dg, err = s.readLink(ctx, tagCurrentPath(name, ref)); err != nil {
			return "", notFound(err, ErrManifestUnknown)
		}
	}
	if ok, err := s.fileExists(ctx, revisionLinkPath(name, dg)); err != nil || !ok {
		if err == nil {
			err = ErrManifestUnknown
		}
		return "", err
	}
	return dg, nil
}

// GetManifest returns the manifest that ref names in repository name.
func (s *Store) GetManifest(ctx context.Context, name, ref string) (*Manifest, error) {
	dg, err := s.ResolveManifest(ctx, name, ref)
	if err != nil {
		return nil, err
	}
	if m := s.manifests.get(dg); m != nil {
		return m, nil
	}
	payload, err := s.d.GetContent(ctx, blobDataPath(dg))
	if err != nil {
		return nil, notFound(err, ErrManifestUnknown)
	}
	_, mediaType, err := parseManifest(payload, "")
	if err != nil {
		return nil, fmt.Errorf("storage: stored manifest %s: %w", dg, err)
	}
	m := &Manifest{Digest: dg, MediaType: mediaType, Payload: payload}
	s.manifests.put(m)
	return m, nil
}

// CheckManifest is GetManifest for a client that may rely on the answer:
// one that asks whether an index's child exists before it pushes the
// index. The manifest it returns is protected from garbage collection for
// at least ¾ of the grace period, as CheckBlob's blobs are (see lease.go).
func (s *Store) CheckManifest(ctx context.Context, name, ref string) (*Manifest, error) {
	m, err := s.GetManifest(ctx, name, ref)
	if err != nil {
		return nil, err
	}
	if _, err := s.promise(ctx, m.Digest); err != nil {
		return nil, err
	}
	// Checked again after the promise, on storage: the cache would vouch
	// for content a collection removed meanwhile.
	if _, err := s.ResolveManifest(ctx, name, m.Digest.String()); err != nil {
		return nil, err
	}
	if ok, err := s.fileExists(ctx, blobDataPath(m.Digest)); err != nil || !ok {
		if err == nil {
			err = ErrManifestUnknown
		}
		return nil, err
	}
	return m, nil
}

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

// DeleteManifest removes manifest dg from repository name, with every tag
// that points at it and its entry in the referrers index.
func (s *Store) DeleteManifest(ctx context.Context, name string, dg digest.Digest) error {
	m, err := s.GetManifest(ctx, name, dg.String())
	if err != nil {
		return err
	}
	tags, err := s.allTags(ctx, name)
	if err != nil {
		return err
	}
	for _, tag := range tags {
		cur, err := s.readLink(ctx, tagCurrentPath(name, tag))
		if err == nil && cur == dg {
			if err := s.d.Delete(ctx, tagPath(name, tag)); err != nil && !errors.Is(err, driver.ErrNotFound) {
				return err
			}
		}
	}
	if err := s.d.Delete(ctx, revisionLinkPath(name, dg)); err != nil {
		return notFound(err, ErrManifestUnknown)
	}
	if doc, _, err := parseManifest(m.Payload, ""); err == nil && doc.Subject != nil {
		err := s.d.Delete(ctx, referrerLinkPath(name, doc.Subject.Digest, dg))
		if err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
	}
	return nil
}

// Untag removes tag from repository name; the manifest stays.
func (s *Store) Untag(ctx context.Context, name, tag string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if ValidateTag(tag) != nil {
		return ErrManifestUnknown
	}
	return notFound(s.d.Delete(ctx, tagPath(name, tag)), ErrManifestUnknown)
}
