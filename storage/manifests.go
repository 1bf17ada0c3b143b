package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

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
	// MediaType is the manifest's media type, as it is served.
	MediaType string
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
	return s.putManifest(ctx, name, ref, contentType, payload, true, tags)
}

// PutMirroredManifest is PutManifest without checking the manifest's
// references, for a pull-through cache (package proxy): a mirrored
// manifest is stored when a client asks for it, before any of its blobs,
// which are fetched from the upstream when asked for in turn. Everything
// else (validation, digest, tags, referrers) is PutManifest's.
// Its foreign layers are recorded (see IsForeign), so that the cache
// never fetches them.
func (s *Store) PutMirroredManifest(ctx context.Context, name, ref, contentType string, payload []byte) (PutManifestResult, error) {
	res, err := s.putManifest(ctx, name, ref, contentType, payload, false, nil)
	if err != nil {
		return res, err
	}
	if doc, _, err := parseManifest(payload, contentType); err == nil {
		if err := s.markForeign(ctx, name, doc); err != nil {
			return res, err
		}
	}
	return res, nil
}

// putManifest is PutManifest; checkRefs false skips the check of the
// manifest's references (and their promises).
func (s *Store) putManifest(ctx context.Context, name, ref, contentType string, payload []byte, checkRefs bool, tags []string) (PutManifestResult, error) {
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
	doc, mediaType, err := parseManifest(payload, contentType)
	if err != nil {
		return PutManifestResult{}, err
	}
	// What a manifest PUT relies on must outlive any collection that does
	// not see the manifest (see lease.go). A blob whose data was written
	// less than a quarter of the grace period ago needs nothing more: no
	// collection deletes it, or its links, before the manifest is stored
	// (its data is its lease). The rest is promised, then checked again,
	// and written only after: blobs stored earlier, an index's children
	// (a collection removes a manifest's revision link by the link's age,
	// not its data's), and the manifest itself when its revision link or
	// old content is already there (a push again, or of content a
	// collection may be deleting).
	at := time.Now()
	have := repoContent{s, name}
	var (
		refs       map[digest.Digest]time.Time
		data       driver.FileInfo
		stored     bool
		linked     bool
		old        []digest.Digest
		checkFirst = func() error {
			return concurrently(
				func() (err error) {
					if checkRefs {
						refs, err = checkReferences(ctx, doc, have)
					}
					return err
				},
				func() (err error) {
					data, err = s.statFile(ctx, blobDataPath(dg))
					stored = err == nil
					return ignoreNotFound(err)
				},
				func() (err error) { linked, err = s.fileExists(ctx, revisionLinkPath(name, dg)); return err },
			)
		}
	)
	if err := checkFirst(); err != nil {
		return PutManifestResult{}, err
	}
	for ref, modTime := range refs {
		if !s.young(modTime) {
			old = append(old, ref)
		}
	}
	for _, child := range doc.Manifests {
		if checkRefs {
			old = append(old, child.Digest) // a young manifest may have an old revision link here
		}
	}
	if linked || (stored && !s.young(data.ModTime)) {
		old = append(old, dg)
	}
	if len(old) > 0 {
		if _, err := s.promise(ctx, old...); err != nil {
			return PutManifestResult{}, err
		}
		if err := checkFirst(); err != nil {
			return PutManifestResult{}, err
		}
	}
	if err := s.checkPromise(at); err != nil {
		return PutManifestResult{}, err
	}

	// Everything but the tags is written at once, so the fsyncs share the
	// filesystem's journal commits; the tags move only when all of it is
	// durable, so a tag never points at something missing. A crash in
	// between can leave a revision link whose content did not reach the
	// disk: it reads as MANIFEST_UNKNOWN, and pushing again completes it.
	res := PutManifestResult{Digest: dg, MediaType: mediaType}
	writes := []func() error{
		func() error { return s.writeLink(ctx, revisionLinkPath(name, dg), dg) },
	}
	if !stored {
		writes = append(writes, func() error { return s.d.PutContent(ctx, blobDataPath(dg), payload) })
	}
	if doc.Subject != nil {
		res.Subject = doc.Subject.Digest
		writes = append(writes, func() error { return s.writeLink(ctx, referrerLinkPath(name, res.Subject, dg), dg) })
	}
	if err := concurrently(writes...); err != nil {
		return PutManifestResult{}, err
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
	// blob describes the data of blob dg, or returns an error wrapping
	// ErrBlobUnknown.
	blob(ctx context.Context, dg digest.Digest) (driver.FileInfo, error)
	// manifest describes the data of manifest dg, or returns an error
	// wrapping ErrManifestUnknown.
	manifest(ctx context.Context, dg digest.Digest) (driver.FileInfo, error)
}

// repoContent is the contentLookup of repository name in a store. It reads
// the data before the repository's link: data that is young was placed
// after any collection that deleted an earlier copy had finished, links
// included, so a link read after it is one no such collection removes.
type repoContent struct {
	s    *Store
	name string
}

func (r repoContent) blob(ctx context.Context, dg digest.Digest) (driver.FileInfo, error) {
	return r.lookup(ctx, dg, layerLinkPath(r.name, dg), ErrBlobUnknown)
}

func (r repoContent) manifest(ctx context.Context, dg digest.Digest) (driver.FileInfo, error) {
	return r.lookup(ctx, dg, revisionLinkPath(r.name, dg), ErrManifestUnknown)
}

func (r repoContent) lookup(ctx context.Context, dg digest.Digest, link string, unknown error) (driver.FileInfo, error) {
	fi, err := r.s.statFile(ctx, blobDataPath(dg))
	if err != nil {
		return driver.FileInfo{}, notFound(err, unknown)
	}
	ok, err := r.s.fileExists(ctx, link)
	if err == nil && !ok {
		err = unknown
	}
	return fi, err
}

// checkReferences checks a manifest's descriptors against what the
// repository holds: the config and every layer must be a blob of the
// repository, every child of an index one of its manifests, each of the
// size the descriptor declares (*ManifestBlobUnknownError,
// *SizeMismatchError). Two kinds are not checked: a layer with urls (a
// non-distributable layer, stored elsewhere), and the subject, which the
// spec lets a client push after its referrers (checking it only when
// present would make the outcome depend on the order of pushes). It
// returns when each blob's data was written.
func checkReferences(ctx context.Context, doc *manifestDoc, have contentLookup) (map[digest.Digest]time.Time, error) {
	type ref struct {
		d       v1.Descriptor
		lookup  func(context.Context, digest.Digest) (driver.FileInfo, error)
		unknown error
	}
	var refs []ref
	if doc.Config != nil {
		refs = append(refs, ref{*doc.Config, have.blob, ErrBlobUnknown})
	}
	for _, l := range doc.Layers {
		if len(l.URLs) == 0 {
			refs = append(refs, ref{l, have.blob, ErrBlobUnknown})
		}
	}
	for _, m := range doc.Manifests {
		refs = append(refs, ref{m, have.manifest, ErrManifestUnknown})
	}
	// At once, referencesParallel at a time; the error reported is that of
	// the first descriptor in the manifest's order that fails.
	infos := make([]driver.FileInfo, len(refs))
	errs := make([]error, len(refs))
	var g errgroup.Group
	g.SetLimit(referencesParallel)
	for i, r := range refs {
		g.Go(func() error {
			fi, err := r.lookup(ctx, r.d.Digest)
			switch {
			case errors.Is(err, r.unknown):
				err = &ManifestBlobUnknownError{Digest: r.d.Digest}
			case err == nil && fi.Size != r.d.Size:
				err = &SizeMismatchError{Digest: r.d.Digest, Declared: r.d.Size, Stored: fi.Size}
			}
			infos[i], errs[i] = fi, err
			return nil
		})
	}
	_ = g.Wait()
	modTimes := make(map[digest.Digest]time.Time, len(refs))
	for i, err := range errs {
		if err != nil {
			return nil, err
		}
		if refs[i].unknown == ErrBlobUnknown {
			modTimes[refs[i].d.Digest] = infos[i].ModTime
		}
	}
	return modTimes, nil
}

// referencesParallel is how many of a manifest's references are checked at
// once.
const referencesParallel = 16

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

// DeleteManifest removes manifest dg from repository name, with every tag
// that points at it and its entry in the referrers index.
func (s *Store) DeleteManifest(ctx context.Context, name string, dg digest.Digest) error {
	_, err := s.DeleteManifestAndTags(ctx, name, dg)
	return err
}

// DeleteManifestAndTags is DeleteManifest; it also returns the tags it
// removed (for the registry's tag delete events).
func (s *Store) DeleteManifestAndTags(ctx context.Context, name string, dg digest.Digest) ([]string, error) {
	m, err := s.GetManifest(ctx, name, dg.String())
	if err != nil {
		return nil, err
	}
	tags, err := s.allTags(ctx, name)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, tag := range tags {
		cur, err := s.readLink(ctx, tagCurrentPath(name, tag))
		if err == nil && cur == dg {
			if err := s.deleteTag(ctx, name, tag); err != nil && !errors.Is(err, driver.ErrNotFound) {
				return removed, err
			}
			removed = append(removed, tag)
		}
	}
	if err := s.d.Delete(ctx, revisionLinkPath(name, dg)); err != nil {
		return removed, notFound(err, ErrManifestUnknown)
	}
	if doc, _, err := parseManifest(m.Payload, ""); err == nil && doc.Subject != nil {
		err := s.d.Delete(ctx, referrerLinkPath(name, doc.Subject.Digest, dg))
		if err != nil && !errors.Is(err, driver.ErrNotFound) {
			return removed, err
		}
	}
	return removed, nil
}
