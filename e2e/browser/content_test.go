package browser

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Artifact types of the referrers the content holds.
const (
	sbomType      = "application/vnd.example.sbom.v1+json"
	signatureType = "application/vnd.example.signature.v1+json"
)

// content is what seed pushed, with the digests the pages must show.
type content struct {
	index     v1.Hash              // team/app:1.0, an index of two platforms
	platforms map[string]v1.Hash   // "linux/amd64", "linux/arm64" → image manifest
	layers    map[string][]v1.Hash // platform → its layers
	configs   map[string]v1.Hash   // platform → its config blob
	sbom      v1.Hash              // a referrer of the arm64 image (artifactType sbomType)
	signature v1.Hash              // a referrer of the index (artifactType signatureType)
	secret    v1.Hash              // team/secret:latest
	base      v1.Hash              // public/base:latest
	tags      map[string][]string  // repository → tags
}

// remoteOptions are go-containerregistry options for the site, as user
// (a password) or with a bearer token (user "").
func (s *site) remoteOptions(t *testing.T, user, token string) []remote.Option {
	t.Helper()
	opts := []remote.Option{remote.WithContext(t.Context()),
		remote.WithTransport(&http.Transport{TLSClientConfig: s.tls.Clone(), ForceAttemptHTTP2: true})}
	switch {
	case user != "":
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: s.passwords[user]}))
	case token != "":
		opts = append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{RegistryToken: token})))
	}
	return opts
}

func (s *site) ref(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// platformImage is a random OCI image of two layers whose config says
// os/arch and a creation time.
func platformImage(t *testing.T, os, arch string, created time.Time) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = os, arch, v1.Time{Time: created}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// pushReferrer pushes an artifact of artifactType whose subject is
// subject (a manifest in repo), and returns its digest.
func (s *site) pushReferrer(t *testing.T, repo, artifactType string, subject v1.Descriptor, body string, opts []remote.Option) v1.Hash {
	t.Helper()
	r, err := name.NewRepository(s.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	cfg := static.NewLayer([]byte("{}"), types.OCIEmptyJSON)
	blob := static.NewLayer([]byte(body), types.MediaType(artifactType+".layer"))
	var descs []v1.Descriptor
	for _, l := range []v1.Layer{cfg, blob} {
		if err := remote.WriteLayer(r, l, opts...); err != nil {
			t.Fatal(err)
		}
		d, err := partial.Descriptor(l)
		if err != nil {
			t.Fatal(err)
		}
		descs = append(descs, *d)
	}
	subject.Platform = nil
	doc, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: artifactType,
		Config: descs[0], Layers: descs[1:], Subject: &subject,
		Annotations: map[string]string{"org.opencontainers.image.created": "2026-11-30T12:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	m := typedManifest{raw: doc, mediaType: types.OCIManifestSchema1}
	dg, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(r.Digest(dg.String()), m, opts...); err != nil {
		t.Fatalf("push the %s referrer: %v", artifactType, err)
	}
	return dg
}

// typedManifest is a manifest given as bytes, with its media type.
type typedManifest struct {
	raw       []byte
	mediaType types.MediaType
}

func (m typedManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m typedManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }
func (m typedManifest) Digest() (v1.Hash, error)            { return partial.Digest(m) }

// seed pushes the content the UI tests look at, with go-containerregistry
// over HTTPS: alice (through the token server, with her password) pushes
// team/app:1.0 (an index for linux/amd64 and linux/arm64), team/app:0.9
// (the amd64 image), a signature of the index, an SBOM of the arm64
// image, and team/secret:latest; a
// publisher's token (no user may push public/*) pushes public/base:latest.
func (s *site) seed(t *testing.T) *content {
	t.Helper()
	c := &content{platforms: map[string]v1.Hash{}, layers: map[string][]v1.Hash{}, configs: map[string]v1.Hash{},
		tags: map[string][]string{"team/app": {"0.9", "1.0"}, "team/secret": {"latest"}, "public/base": {"latest"}}}
	alice := s.remoteOptions(t, "alice", "")
	created := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

	var adds []mutate.IndexAddendum
	var arm64 v1.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		img := platformImage(t, "linux", arch, created)
		p := "linux/" + arch
		dg, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		c.platforms[p] = dg
		if c.configs[p], err = img.ConfigName(); err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			ld, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			c.layers[p] = append(c.layers[p], ld)
		}
		d, err := partial.Descriptor(img)
		if err != nil {
			t.Fatal(err)
		}
		d.Platform = &v1.Platform{OS: "linux", Architecture: arch}
		if arch == "arm64" {
			arm64 = *d
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: *d})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	var err error
	if c.index, err = idx.Digest(); err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(s.ref(t, "team/app:1.0"), idx, alice...); err != nil {
		t.Fatalf("alice pushes team/app:1.0: %v", err)
	}
	idxDesc, err := partial.Descriptor(idx)
	if err != nil {
		t.Fatal(err)
	}
	c.signature = s.pushReferrer(t, "team/app", signatureType, *idxDesc, `{"signature":"not a real one"}`, alice)
	c.sbom = s.pushReferrer(t, "team/app", sbomType, arm64, `{"packages":[]}`, alice)

	// An older tag, the amd64 image alone: the one the delete test removes.
	if err := remote.Write(s.ref(t, "team/app:0.9"), adds[0].Add.(v1.Image), alice...); err != nil {
		t.Fatalf("alice pushes team/app:0.9: %v", err)
	}

	secret := platformImage(t, "linux", "amd64", created)
	if c.secret, err = secret.Digest(); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(s.ref(t, "team/secret:latest"), secret, alice...); err != nil {
		t.Fatalf("alice pushes team/secret: %v", err)
	}
	base := platformImage(t, "linux", "amd64", created)
	if c.base, err = base.Digest(); err != nil {
		t.Fatal(err)
	}
	publisher := s.remoteOptions(t, "", s.mintToken(t, "public/base"))
	if err := remote.Write(s.ref(t, "public/base:latest"), base, publisher...); err != nil {
		t.Fatalf("push public/base: %v", err)
	}
	return c
}

// remoteHead asks the registry for ref's digest, as a client would.
func remoteHead(ref name.Reference, opts []remote.Option) (v1.Hash, error) {
	d, err := remote.Head(ref, opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	return d.Digest, nil
}

// statusOf is the HTTP status of a go-containerregistry error, or 0.
func statusOf(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}
