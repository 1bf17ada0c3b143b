package storage

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/driver"
)

// Content the fuzzed manifests may reference: a stored config and layer
// and a stored child manifest, by digest and size.
var (
	fuzzConfig = v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromString("{}"), Size: 2}
	fuzzLayer  = v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: digest.FromString("hello"), Size: 5}
	fuzzChild  = v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: digest.FromString("child manifest"), Size: 300}
)

// mapContent is a contentLookup over fixed blobs and manifests.
type mapContent struct{ blobs, manifests map[digest.Digest]int64 }

func (m mapContent) blob(_ context.Context, dg digest.Digest) (driver.FileInfo, error) {
	if n, ok := m.blobs[dg]; ok {
		return driver.FileInfo{Size: n}, nil
	}
	return driver.FileInfo{}, ErrBlobUnknown
}

func (m mapContent) manifest(_ context.Context, dg digest.Digest) (driver.FileInfo, error) {
	if n, ok := m.manifests[dg]; ok {
		return driver.FileInfo{Size: n}, nil
	}
	return driver.FileInfo{}, ErrManifestUnknown
}

// FuzzManifest checks parsing and validation of pushed manifests: a
// refusal is always a *ManifestInvalidError (MANIFEST_INVALID, never a
// 500); an accepted manifest has the media type its Content-Type and its
// mediaType field say, reads back (no Content-Type) as the same type, can
// be pushed again with the Content-Type it is served with, and has valid
// descriptors; its references pass the check exactly when every config,
// layer without urls and index child is stored with the size it declares,
// and a failure names the first descriptor that is not.
func FuzzManifest(f *testing.F) {
	for _, s := range manifestSeeds(f) {
		f.Add(s.payload, s.contentType)
	}
	have := mapContent{
		blobs:     map[digest.Digest]int64{fuzzConfig.Digest: fuzzConfig.Size, fuzzLayer.Digest: fuzzLayer.Size},
		manifests: map[digest.Digest]int64{fuzzChild.Digest: fuzzChild.Size},
	}
	f.Fuzz(func(t *testing.T, payload []byte, contentType string) {
		doc, mediaType, err := parseManifest(payload, contentType)
		if err != nil {
			var invalid *ManifestInvalidError
			if !errors.As(err, &invalid) {
				t.Fatalf("refused with %T %v, want *ManifestInvalidError", err, err)
			}
			return
		}
		if !knownManifestType(mediaType) {
			t.Fatalf("accepted as %q", mediaType)
		}
		if header, _ := manifestContentType(contentType); contentType != "" && header != mediaType {
			t.Fatalf("accepted as %s with Content-Type %q", mediaType, contentType)
		}
		if doc.MediaType != "" && doc.MediaType != mediaType {
			t.Fatalf("accepted as %s with mediaType %q", mediaType, doc.MediaType)
		}
		for _, ct := range []string{"", mediaType} {
			if _, again, err := parseManifest(payload, ct); err != nil || again != mediaType {
				t.Fatalf("accepted as %s with Content-Type %q; with %q it is %q, %v", mediaType, contentType, ct, again, err)
			}
		}
		if isIndex(mediaType) != (doc.Config == nil) || (isIndex(mediaType) && doc.Layers != nil) {
			t.Fatalf("accepted as %s with config %v and layers %v", mediaType, doc.Config, doc.Layers)
		}
		for _, d := range doc.descriptors() {
			if d.Digest.Validate() != nil || d.Size < 0 {
				t.Fatalf("accepted descriptor %+v", d)
			}
		}
		checkFuzzedReferences(t, doc, have)
	})
}

// checkFuzzedReferences compares checkReferences with the rule it
// implements, written out plainly.
func checkFuzzedReferences(t *testing.T, doc *manifestDoc, have mapContent) {
	type checked struct {
		d      v1.Descriptor
		stored map[digest.Digest]int64
	}
	var want []checked
	if doc.Config != nil {
		want = append(want, checked{*doc.Config, have.blobs})
	}
	for _, l := range doc.Layers {
		if len(l.URLs) == 0 {
			want = append(want, checked{l, have.blobs})
		}
	}
	for _, m := range doc.Manifests {
		want = append(want, checked{m, have.manifests})
	}
	_, err := checkReferences(context.Background(), doc, have)
	for _, c := range want {
		size, ok := c.stored[c.d.Digest]
		var unknown *ManifestBlobUnknownError
		var mismatch *SizeMismatchError
		switch {
		case !ok:
			if !errors.As(err, &unknown) || unknown.Digest != c.d.Digest {
				t.Fatalf("%s is not stored: checkReferences = %v", c.d.Digest, err)
			}
			return
		case size != c.d.Size:
			if !errors.As(err, &mismatch) || *mismatch != (SizeMismatchError{Digest: c.d.Digest, Declared: c.d.Size, Stored: size}) {
				t.Fatalf("%s declares %d bytes of %d: checkReferences = %v", c.d.Digest, c.d.Size, size, err)
			}
			return
		}
	}
	if err != nil {
		t.Fatalf("every checked descriptor is stored with its size, yet checkReferences = %v", err)
	}
}

type manifestSeed struct {
	payload     []byte
	contentType string
}

// manifestSeeds are the shapes of the manifest tests, over the fuzz
// content, with the Content-Types clients send and some they should not.
func manifestSeeds(t testing.TB) []manifestSeed {
	j := func(v any) []byte { return mustJSON(t, v) }
	wrongSize := fuzzLayer
	wrongSize.Size = 65536
	foreign := v1.Descriptor{MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		Digest: digest.FromString("elsewhere"), Size: 100, URLs: []string{"https://example.com/layer"}}
	subject := v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: digest.FromString("not pushed yet"), Size: 42}
	image := func(mediaType string, layers ...v1.Descriptor) map[string]any {
		m := map[string]any{"schemaVersion": 2, "config": fuzzConfig, "layers": layers}
		if mediaType != "" {
			m["mediaType"] = mediaType
		}
		return m
	}
	index := func(mediaType string, children ...v1.Descriptor) map[string]any {
		m := map[string]any{"schemaVersion": 2, "manifests": children}
		if mediaType != "" {
			m["mediaType"] = mediaType
		}
		return m
	}
	artifact := image(MediaTypeOCIManifest)
	artifact["artifactType"], artifact["subject"] = "application/vnd.example.sig", subject
	return []manifestSeed{
		{j(image(MediaTypeOCIManifest, fuzzLayer)), MediaTypeOCIManifest},
		{j(image("", fuzzLayer)), MediaTypeOCIManifest},
		{j(image("")), ""},
		{j(image(MediaTypeDockerManifest, fuzzLayer)), MediaTypeDockerManifest + "; charset=utf-8"},
		{j(image(MediaTypeOCIManifest, wrongSize)), MediaTypeOCIManifest},
		{j(image(MediaTypeOCIManifest, foreign)), MediaTypeOCIManifest},
		{j(artifact), MediaTypeOCIManifest},
		{j(index(MediaTypeOCIIndex, fuzzChild)), MediaTypeOCIIndex},
		{j(index("", fuzzChild)), MediaTypeOCIIndex},
		{j(index(MediaTypeDockerManifestList, fuzzChild, fuzzLayer)), MediaTypeDockerManifestList},
		{j(image(MediaTypeOCIManifest)), "text/plain"},
		{j(image("")), MediaTypeDockerManifest},
		{[]byte(`{"schemaVersion":2}`), MediaTypeOCIIndex},
		{j(map[string]any{"schemaVersion": 2, "config": fuzzConfig, "manifests": []v1.Descriptor{fuzzChild}}), MediaTypeOCIManifest},
		{[]byte(`{"schemaVersion":1,"name":"a","tag":"t"}`), "application/json"},
	}
}
