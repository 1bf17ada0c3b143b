package storage

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/driver"
)

// putBlob stores content in repository name and returns its descriptor.
func putBlob(t testing.TB, s *Store, name, mediaType string, content []byte) v1.Descriptor {
	t.Helper()
	dg := digest.FromBytes(content)
	if _, err := s.PutBlob(ctx, name, dg, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: mediaType, Digest: dg, Size: int64(len(content))}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// image builds and stores config and layer blobs, and returns a manifest
// payload referring to them.
func image(t testing.TB, s *Store, name, seed string, extra func(m map[string]any)) []byte {
	t.Helper()
	cfg := putBlob(t, s, name, v1.MediaTypeImageConfig, []byte(`{"seed":"`+seed+`"}`))
	layer := putBlob(t, s, name, v1.MediaTypeImageLayerGzip, []byte("layer "+seed))
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeOCIManifest,
		"config":        cfg,
		"layers":        []v1.Descriptor{layer},
	}
	if extra != nil {
		extra(m)
	}
	return mustJSON(t, m)
}

func TestManifestRoundTrip(t *testing.T) {
	s, root := newStore(t)
	payload := image(t, s, "a", "1", nil)
	res, err := s.PutManifest(ctx, "a", "v1", MediaTypeOCIManifest, payload)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != digest.FromBytes(payload) {
		t.Fatalf("digest %s", res.Digest)
	}
	for _, ref := range []string{"v1", res.Digest.String()} {
		m, err := s.GetManifest(ctx, "a", ref)
		if err != nil || m.Digest != res.Digest || m.MediaType != MediaTypeOCIManifest || !bytes.Equal(m.Payload, payload) {
			t.Fatalf("GetManifest(%s) = %+v, %v", ref, m, err)
		}
	}
	// Distribution's layout for manifests and tags.
	hex := res.Digest.Encoded()
	base := filepath.Join(root, "docker/registry/v2/repositories/a/_manifests")
	for _, p := range []string{
		filepath.Join(base, "revisions/sha256", hex, "link"),
		filepath.Join(base, "tags/v1/current/link"),
		filepath.Join(base, "tags/v1/index/sha256", hex, "link"),
	} {
		if b, err := os.ReadFile(p); err != nil || string(b) != res.Digest.String() {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	// Unknown references.
	for _, ref := range []string{"v2", digest.FromString("x").String(), ".bad", "UPPER-ok"} {
		if _, err := s.GetManifest(ctx, "a", ref); !errors.Is(err, ErrManifestUnknown) {
			t.Errorf("GetManifest(%q) = %v, want ErrManifestUnknown", ref, err)
		}
	}
}

func TestManifestRefusals(t *testing.T) {
	s, _ := newStore(t)
	cfg := putBlob(t, s, "a", v1.MediaTypeImageConfig, []byte("{}"))
	missing := v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: digest.FromString("missing"), Size: 7}
	good := image(t, s, "a", "ok", nil)
	if _, err := s.PutManifest(ctx, "a", "child", MediaTypeOCIManifest, good); err != nil {
		t.Fatal(err)
	}
	manifest := func(layers ...v1.Descriptor) []byte {
		return mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "config": cfg, "layers": layers})
	}
	tests := []struct {
		name        string
		ref         string
		contentType string
		payload     []byte
		check       func(error) bool
	}{
		{"not JSON", "t", MediaTypeOCIManifest, []byte("blablabla"), isInvalid},
		{"schema 1", "t", "", []byte(`{"schemaVersion":1,"name":"a","tag":"t"}`), isInvalid},
		{"no config", "t", MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","layers":[]}`), isInvalid},
		{"unknown media type", "t", "application/json", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.example+json"}`), isInvalid},
		{"header and body disagree", "t", MediaTypeDockerManifest, manifest(), isInvalid},
		{"bad descriptor digest", "t", MediaTypeOCIManifest, bytes.Replace(manifest(), []byte(cfg.Digest.Encoded()), []byte("nothex"), 1), isInvalid},
		{"missing layer", "t", MediaTypeOCIManifest, manifest(missing), isBlobUnknown(missing.Digest)},
		{"missing config", "t", MediaTypeOCIManifest, mustJSON(t, map[string]any{"schemaVersion": 2, "config": missing, "layers": []any{}}), isBlobUnknown(missing.Digest)},
		{"index with missing child", "t", MediaTypeOCIIndex, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex, "manifests": []v1.Descriptor{{MediaType: MediaTypeOCIManifest, Digest: missing.Digest, Size: 1}}}), isBlobUnknown(missing.Digest)},
		{"layer of another size", "t", MediaTypeOCIManifest, manifest(v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: cfg.Digest, Size: cfg.Size + 1}), isSizeMismatch(cfg.Digest, cfg.Size+1, cfg.Size)},
		{"config of another size", "t", MediaTypeOCIManifest, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "config": v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cfg.Digest, Size: 0}, "layers": []any{}}), isSizeMismatch(cfg.Digest, 0, cfg.Size)},
		{"index child of another size", "t", MediaTypeOCIIndex, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex, "manifests": []v1.Descriptor{{MediaType: MediaTypeOCIManifest, Digest: digest.FromBytes(good), Size: 5}}}), isSizeMismatch(digest.FromBytes(good), 5, int64(len(good)))},
		{"index with layers", "t", MediaTypeOCIIndex, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex, "manifests": []any{}, "layers": []any{}}), isInvalid},
		{"digest reference mismatch", digest.FromString("other").String(), MediaTypeOCIManifest, manifest(), func(err error) bool {
			var mm *DigestMismatchError
			return errors.As(err, &mm)
		}},
		{"invalid tag", "-tag", MediaTypeOCIManifest, manifest(), is(ErrTagInvalid)},
		{"tag too long", strings.Repeat("t", 129), MediaTypeOCIManifest, manifest(), is(ErrTagInvalid)},
		{"too large", "t", MediaTypeOCIManifest, append(manifest(), bytes.Repeat([]byte(" "), MaxManifestSize)...), is(ErrManifestTooLarge)},
		{"invalid name", "t", MediaTypeOCIManifest, manifest(), nil},
	}
	for _, tc := range tests {
		name := "a"
		if tc.check == nil {
			name, tc.check = "A/../b", is(ErrNameInvalid)
		}
		_, err := s.PutManifest(ctx, name, tc.ref, tc.contentType, tc.payload)
		if !tc.check(err) {
			t.Errorf("%s: PutManifest error %v", tc.name, err)
		}
	}
	// Nothing refused was tagged.
	tags, _, _ := s.Tags(ctx, "a", Page{N: -1})
	if !slices.Equal(tags, []string{"child"}) {
		t.Fatalf("tags after refusals: %v", tags)
	}
}

func isInvalid(err error) bool {
	var mi *ManifestInvalidError
	return errors.As(err, &mi)
}

func isBlobUnknown(dg digest.Digest) func(error) bool {
	return func(err error) bool {
		var bu *ManifestBlobUnknownError
		return errors.As(err, &bu) && bu.Digest == dg
	}
}

func isSizeMismatch(dg digest.Digest, declared, stored int64) func(error) bool {
	return func(err error) bool {
		var sm *SizeMismatchError
		return errors.As(err, &sm) && *sm == SizeMismatchError{Digest: dg, Declared: declared, Stored: stored}
	}
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

func TestMediaTypeInference(t *testing.T) {
	s, _ := newStore(t)
	noType := image(t, s, "a", "1", func(m map[string]any) { delete(m, "mediaType") })
	if _, err := s.PutManifest(ctx, "a", "x", "", noType); err != nil {
		t.Fatal(err)
	}
	m, _ := s.GetManifest(ctx, "a", "x")
	if m.MediaType != MediaTypeOCIManifest {
		t.Fatalf("inferred %s", m.MediaType)
	}
	docker := image(t, s, "a", "2", func(m map[string]any) { m["mediaType"] = MediaTypeDockerManifest })
	if _, err := s.PutManifest(ctx, "a", "d", MediaTypeDockerManifest+"; charset=utf-8", docker); err != nil {
		t.Fatal(err)
	}
	m, _ = s.GetManifest(ctx, "a", "d")
	if m.MediaType != MediaTypeDockerManifest {
		t.Fatalf("docker manifest served as %s", m.MediaType)
	}
}

func TestIndexAndForeignLayers(t *testing.T) {
	s, _ := newStore(t)
	var children []v1.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		p := image(t, s, "a", arch, nil)
		res, err := s.PutManifest(ctx, "a", "arch-"+arch, MediaTypeOCIManifest, p)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: res.Digest, Size: int64(len(p)),
			Platform: &v1.Platform{OS: "linux", Architecture: arch}})
	}
	idx := mustJSON(t, v1.Index{Versioned: versioned(), MediaType: MediaTypeOCIIndex, Manifests: children})
	if _, err := s.PutManifest(ctx, "a", "multi", MediaTypeOCIIndex, idx); err != nil {
		t.Fatal(err)
	}
	// The same index in another repository lacks its children.
	if _, err := s.PutManifest(ctx, "b", "multi", MediaTypeOCIIndex, idx); !isBlobUnknown(children[0].Digest)(err) {
		t.Fatalf("index accepted without its children: %v", err)
	}
	// A non-distributable layer with URLs need not be stored.
	foreign := image(t, s, "a", "w", func(m map[string]any) {
		m["layers"] = []v1.Descriptor{{MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
			Digest: digest.FromString("windows base"), Size: 100, URLs: []string{"https://example.com/layer"}}}
	})
	if _, err := s.PutManifest(ctx, "a", "windows", MediaTypeOCIManifest, foreign); err != nil {
		t.Fatalf("foreign layer refused: %v", err)
	}
	// Nor a stored one whose descriptor has urls, whatever size it declares.
	stored := putBlob(t, s, "a", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", []byte("stored foreign layer"))
	stored.Size, stored.URLs = 3, []string{"https://example.com/layer"}
	foreign = image(t, s, "a", "w2", func(m map[string]any) { m["layers"] = []v1.Descriptor{stored} })
	if _, err := s.PutManifest(ctx, "a", "windows2", MediaTypeOCIManifest, foreign); err != nil {
		t.Fatalf("foreign layer with another size refused: %v", err)
	}
	// A subject need not exist, nor match what exists: referrers may come
	// first.
	for i, subject := range []v1.Descriptor{
		{MediaType: MediaTypeOCIManifest, Digest: digest.FromString("not pushed yet"), Size: 42},
		{MediaType: MediaTypeOCIManifest, Digest: children[0].Digest, Size: children[0].Size + 1},
	} {
		p := image(t, s, "a", fmt.Sprint("referrer", i), func(m map[string]any) { m["subject"] = subject })
		if res, err := s.PutManifest(ctx, "a", fmt.Sprint("referrer", i), MediaTypeOCIManifest, p); err != nil || res.Subject != subject.Digest {
			t.Fatalf("referrer of %v: %+v, %v", subject, res, err)
		}
	}
}

func TestDeleteManifestAndTags(t *testing.T) {
	s, _ := newStore(t)
	p1 := image(t, s, "a", "1", nil)
	p2 := image(t, s, "a", "2", nil)
	r1, _ := s.PutManifest(ctx, "a", "one", "", p1)
	if _, err := s.PutManifest(ctx, "a", "also-one", "", p1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(ctx, "a", "two", "", p2); err != nil {
		t.Fatal(err)
	}
	if err := s.Untag(ctx, "a", "also-one"); err != nil {
		t.Fatal(err)
	}
	if err := s.Untag(ctx, "a", "also-one"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("second untag: %v", err)
	}
	if _, err := s.GetManifest(ctx, "a", r1.Digest.String()); err != nil {
		t.Fatalf("untag removed the manifest: %v", err)
	}
	if err := s.DeleteManifest(ctx, "a", r1.Digest); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"one", r1.Digest.String()} {
		if _, err := s.GetManifest(ctx, "a", ref); !errors.Is(err, ErrManifestUnknown) {
			t.Errorf("%s after delete: %v", ref, err)
		}
	}
	if tags, _, _ := s.Tags(ctx, "a", Page{N: -1}); !slices.Equal(tags, []string{"two"}) {
		t.Fatalf("tags after delete: %v", tags)
	}
	if err := s.DeleteManifest(ctx, "a", r1.Digest); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("second delete: %v", err)
	}
	// Deleting a blob unlinks it from this repository only.
	cfg := digest.FromBytes([]byte(`{"seed":"2"}`))
	if _, err := s.MountBlob(ctx, "b", "a", cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlob(ctx, "a", cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatBlob(ctx, "a", cfg); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("deleted blob: %v", err)
	}
	if _, err := s.StatBlob(ctx, "b", cfg); err != nil {
		t.Fatalf("deleting from a also removed it from b: %v", err)
	}
}

func TestTagsAndCatalogPages(t *testing.T) {
	s, _ := newStore(t)
	if _, _, err := s.Tags(ctx, "nothing/here", Page{N: -1}); !errors.Is(err, ErrNameUnknown) {
		t.Fatalf("tags of an unknown repository: %v", err)
	}
	repos := []string{"b/app", "a", "c/d/e", "a/sub"}
	for i, r := range repos {
		p := image(t, s, r, r, nil)
		for _, tag := range []string{"v3", "latest", "v1", "v2"}[:i+1] {
			if _, err := s.PutManifest(ctx, r, tag, "", p); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A repository with only an upload is not in the catalog.
	if _, err := s.StartUpload(ctx, "only/uploads"); err != nil {
		t.Fatal(err)
	}
	all, more, err := s.Catalog(ctx, Page{N: -1})
	if want := []string{"a", "a/sub", "b/app", "c/d/e"}; err != nil || more || !slices.Equal(all, want) {
		t.Fatalf("Catalog = %v, %v, %v; want %v", all, more, err, want)
	}
	got, more, _ := s.Catalog(ctx, Page{N: 2, Last: "a"})
	if !slices.Equal(got, []string{"a/sub", "b/app"}) || !more {
		t.Fatalf("Catalog page = %v more=%v", got, more)
	}
	tags, _, _ := s.Tags(ctx, "a/sub", Page{N: -1})
	if !slices.Equal(tags, []string{"latest", "v1", "v2", "v3"}) {
		t.Fatalf("tags not sorted: %v", tags)
	}
	for _, tc := range []struct {
		page Page
		want []string
		more bool
	}{
		{Page{N: 2}, []string{"latest", "v1"}, true},
		{Page{N: 2, Last: "v1"}, []string{"v2", "v3"}, false},
		{Page{N: 10, Last: "v0"}, []string{"v1", "v2", "v3"}, false},
		{Page{N: 0}, []string{}, true},
		{Page{N: -1, Last: "v3"}, []string{}, false},
	} {
		got, more, err := s.Tags(ctx, "a/sub", tc.page)
		if err != nil || !slices.Equal(got, tc.want) || more != tc.more {
			t.Errorf("Tags(%+v) = %v more=%v %v; want %v more=%v", tc.page, got, more, err, tc.want, tc.more)
		}
	}
}

func TestReferrers(t *testing.T) {
	s, _ := newStore(t)
	subjectPayload := image(t, s, "a", "subject", nil)
	subject, _ := s.PutManifest(ctx, "a", "v1", "", subjectPayload)
	empty := putBlob(t, s, "a", "application/vnd.oci.empty.v1+json", []byte("{}"))
	sd := v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: subject.Digest, Size: int64(len(subjectPayload))}
	sig := mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "artifactType": "application/vnd.example.sig",
		"config": empty, "layers": []any{}, "subject": sd, "annotations": map[string]string{"k": "v"}})
	sbomCfg := putBlob(t, s, "a", "application/vnd.example.sbom", []byte(`{"sbom":1}`))
	sbom := mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "config": sbomCfg, "layers": []any{}, "subject": sd})
	rs, err := s.PutManifest(ctx, "a", digest.FromBytes(sig).String(), "", sig)
	if err != nil || rs.Subject != subject.Digest {
		t.Fatalf("PutManifest(sig) = %+v, %v", rs, err)
	}
	rb, err := s.PutManifest(ctx, "a", digest.FromBytes(sbom).String(), "", sbom)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.Referrers(ctx, "a", subject.Digest, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("Referrers = %v, %v", all, err)
	}
	byDigest := map[digest.Digest]v1.Descriptor{all[0].Digest: all[0], all[1].Digest: all[1]}
	if d := byDigest[rs.Digest]; d.ArtifactType != "application/vnd.example.sig" || d.Annotations["k"] != "v" || d.Size != int64(len(sig)) || d.MediaType != MediaTypeOCIManifest {
		t.Errorf("signature descriptor %+v", d)
	}
	if d := byDigest[rb.Digest]; d.ArtifactType != "application/vnd.example.sbom" {
		t.Errorf("artifactType from config.mediaType: %+v", d)
	}
	only, _ := s.Referrers(ctx, "a", subject.Digest, "application/vnd.example.sbom")
	if len(only) != 1 || only[0].Digest != rb.Digest {
		t.Fatalf("filtered = %v", only)
	}
	none, err := s.Referrers(ctx, "a", digest.FromString("no subject"), "")
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("unknown subject: %v, %v", none, err)
	}
	if err := s.DeleteManifest(ctx, "a", rs.Digest); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.Referrers(ctx, "a", subject.Digest, ""); len(left) != 1 || left[0].Digest != rb.Digest {
		t.Fatalf("after delete: %v", left)
	}
}

func versioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

// TestManifestCrashBeforeContent: a crash can leave a revision link whose
// content never reached the disk (they are written together); it reads as
// unknown, no tag points at it, and pushing again completes it.
func TestManifestCrashBeforeContent(t *testing.T) {
	s, root := newStore(t)
	payload := image(t, s, "a", "1", nil)
	dg := digest.FromBytes(payload)
	link := filepath.Join(root, "docker/registry/v2/repositories/a/_manifests/revisions/sha256", dg.Encoded(), "link")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(link, []byte(dg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifest(ctx, "a", dg.String()); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("revision link without content: %v, want ErrManifestUnknown", err)
	}
	if _, err := s.PutManifest(ctx, "a", "v1", MediaTypeOCIManifest, payload); err != nil {
		t.Fatal(err)
	}
	m, err := s.GetManifest(ctx, "a", "v1")
	if err != nil || !bytes.Equal(m.Payload, payload) {
		t.Fatalf("after pushing again: %v", err)
	}
}

// TestManifestContentType: a push's Content-Type must be a manifest type and
// agree with the document (its mediaType, or its shape when it has none),
// and a stored manifest is served as the type it was pushed as.
func TestManifestContentType(t *testing.T) {
	s, _ := newStore(t)
	withType := image(t, s, "a", "typed", nil)
	noType := image(t, s, "a", "untyped", func(m map[string]any) { delete(m, "mediaType") })
	docker := image(t, s, "a", "docker", func(m map[string]any) { m["mediaType"] = MediaTypeDockerManifest })
	child, err := s.PutManifest(ctx, "a", "child", MediaTypeOCIManifest, withType)
	if err != nil {
		t.Fatal(err)
	}
	children := []v1.Descriptor{{MediaType: MediaTypeOCIManifest, Digest: child.Digest, Size: int64(len(withType))}}
	index := mustJSON(t, map[string]any{"schemaVersion": 2, "manifests": children})
	both := image(t, s, "a", "both", func(m map[string]any) { delete(m, "mediaType"); m["manifests"] = children })
	tests := []struct {
		name        string
		contentType string
		payload     []byte
		want        string // the media type it is stored and served as; "" = refused
	}{
		{"OCI manifest", MediaTypeOCIManifest, withType, MediaTypeOCIManifest},
		{"parameters are ignored", MediaTypeOCIManifest + "; charset=utf-8", withType, MediaTypeOCIManifest},
		{"no Content-Type", "", withType, MediaTypeOCIManifest},
		{"text/plain", "text/plain", withType, ""},
		{"application/json", "application/json", withType, ""},
		{"octet-stream", "application/octet-stream", withType, ""},
		{"unparsable Content-Type", "/;;", withType, ""},
		{"another manifest type", MediaTypeDockerManifest, withType, ""},
		{"Docker schema 2", MediaTypeDockerManifest, docker, MediaTypeDockerManifest},
		{"Docker schema 2 without Content-Type", "", docker, MediaTypeDockerManifest},
		{"no mediaType, sent as an OCI manifest", MediaTypeOCIManifest, noType, MediaTypeOCIManifest},
		{"no mediaType, no Content-Type", "", noType, MediaTypeOCIManifest},
		{"no mediaType, sent as text/plain", "text/plain", noType, ""},
		{"no mediaType, sent as a Docker manifest", MediaTypeDockerManifest, noType, ""},
		{"no mediaType, sent as an index", MediaTypeOCIIndex, noType, ""},
		{"index without mediaType", MediaTypeOCIIndex, index, MediaTypeOCIIndex},
		{"index without mediaType sent as a manifest", MediaTypeOCIManifest, index, ""},
		{"nothing but a schema version, sent as an index", MediaTypeOCIIndex, []byte(`{"schemaVersion":2}`), ""},
		{"config and manifests without mediaType", MediaTypeOCIManifest, both, ""},
	}
	for i, tc := range tests {
		tag := fmt.Sprintf("t%d", i)
		_, err := s.PutManifest(ctx, "a", tag, tc.contentType, tc.payload)
		if tc.want == "" {
			if !isInvalid(err) {
				t.Errorf("%s: PutManifest = %v, want ManifestInvalidError", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: PutManifest: %v", tc.name, err)
			continue
		}
		m, err := s.GetManifest(ctx, "a", tag)
		if err != nil || m.MediaType != tc.want {
			t.Errorf("%s: served as %v, %v; want %s", tc.name, m, err, tc.want)
		}
	}
}

// TestManifestExtraTags: the tags of a push by digest all point at the
// manifest by that digest, whatever its algorithm; one invalid tag refuses
// the whole push.
func TestManifestExtraTags(t *testing.T) {
	s, root := newStore(t)
	payload := image(t, s, "a", "1", nil)
	sum := sha512.Sum512(payload)
	dg := digest.NewDigestFromBytes(digest.SHA512, sum[:])
	for _, tags := range [][]string{{"ok", "-bad"}, {""}, {strings.Repeat("t", 129)}} {
		if _, err := s.PutManifest(ctx, "a", dg.String(), MediaTypeOCIManifest, payload, tags...); !errors.Is(err, ErrTagInvalid) {
			t.Fatalf("tags %q: %v, want ErrTagInvalid", tags, err)
		}
	}
	if _, err := s.GetManifest(ctx, "a", dg.String()); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("a refused push stored the manifest: %v", err)
	}
	if tags, _, err := s.Tags(ctx, "a", Page{N: -1}); err != nil || len(tags) != 0 {
		t.Fatalf("a refused push created tags: %v, %v", tags, err)
	}
	res, err := s.PutManifest(ctx, "a", dg.String(), MediaTypeOCIManifest, payload, "v1", "latest", "v1")
	if err != nil || res.Digest != dg {
		t.Fatalf("PutManifest = %+v, %v", res, err)
	}
	for _, ref := range []string{"v1", "latest", dg.String()} {
		m, err := s.GetManifest(ctx, "a", ref)
		if err != nil || m.Digest != dg || !bytes.Equal(m.Payload, payload) {
			t.Fatalf("GetManifest(%s) = %+v, %v; want %s", ref, m, err, dg)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "docker/registry/v2/repositories/a/_manifests/tags/v1/index/sha512", dg.Encoded(), "link")); err != nil || string(b) != dg.String() {
		t.Fatalf("tag index link: %q, %v", b, err)
	}
	// A push by tag may name more tags; they all move.
	other := image(t, s, "a", "2", nil)
	if _, err := s.PutManifest(ctx, "a", "v2", MediaTypeOCIManifest, other, "latest"); err != nil {
		t.Fatal(err)
	}
	tags, _, _ := s.Tags(ctx, "a", Page{N: -1})
	if !slices.Equal(tags, []string{"latest", "v1", "v2"}) {
		t.Fatalf("tags %v", tags)
	}
	if m, _ := s.GetManifest(ctx, "a", "latest"); m.Digest != digest.FromBytes(other) {
		t.Fatalf("latest did not move: %s", m.Digest)
	}
}

// deletesThenFails passes its first n Delete calls to the driver and fails
// the rest with err.
type deletesThenFails struct {
	driver.Driver
	n   *atomic.Int32
	err error
}

func (d deletesThenFails) Delete(ctx context.Context, p string) error {
	if d.n.Add(-1) < 0 {
		return d.err
	}
	return d.Driver.Delete(ctx, p)
}

// A tag deletion that fails half way leaves a tag that still resolves, not
// a directory without a current link: listings read the directory alone.
func TestInterruptedUntagLeavesAWholeTag(t *testing.T) {
	s, _ := newStore(t)
	res, err := s.PutManifest(ctx, "a", "v1", MediaTypeOCIManifest, image(t, s, "a", "1", nil))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("the store failed")
	healthy := s.d
	n := new(atomic.Int32)
	n.Store(1)
	s.d = deletesThenFails{Driver: healthy, n: n, err: boom}
	if err := s.Untag(ctx, "a", "v1"); !errors.Is(err, boom) {
		t.Fatalf("Untag on a failing store: %v", err)
	}
	s.d = healthy
	if tags, _, err := s.Tags(ctx, "a", Page{N: -1}); err != nil || !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("Tags after the failed deletion = %v, %v; want [v1]", tags, err)
	}
	if m := mustGet(t, s, "a", "v1"); m.Digest != res.Digest {
		t.Fatalf("v1 resolves to %s, want %s", m.Digest, res.Digest)
	}
	if err := s.Untag(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	if tags, _, err := s.Tags(ctx, "a", Page{N: -1}); err != nil || len(tags) != 0 {
		t.Fatalf("Tags after Untag = %v, %v", tags, err)
	}
	if _, err := s.GetManifest(ctx, "a", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("GetManifest(v1) after Untag: %v", err)
	}
}
