package ui

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
)

// Docker's media types, beside the OCI ones of image-spec.
const (
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerConfig       = "application/vnd.docker.container.image.v1+json"
)

func isIndex(mediaType string) bool {
	return mediaType == v1.MediaTypeImageIndex || mediaType == dockerManifestList
}

func isImageConfig(mediaType string) bool {
	return mediaType == v1.MediaTypeImageConfig || mediaType == dockerConfig
}

// manifestDoc is the union of an image manifest's and an index's fields.
type manifestDoc struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *v1.Descriptor    `json:"config"`
	Layers       []v1.Descriptor   `json:"layers"`
	Manifests    []v1.Descriptor   `json:"manifests"`
	Subject      *v1.Descriptor    `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// configDoc is what the pages show of an image's configuration.
type configDoc struct {
	Created      *time.Time `json:"created"`
	OS           string     `json:"os"`
	Architecture string     `json:"architecture"`
	Variant      string     `json:"variant"`
}

// maxConfigBytes bounds what is read of an image configuration.
const maxConfigBytes = 1 << 20

// summary is a tag's row: what its manifest is.
type summary struct {
	MediaType string
	// Size is what a pull of every platform transfers: the manifest, and
	// the config and layers of each image, each blob counted once.
	Size int64
	// Platforms are an index's os/arch[/variant], or an image's own.
	Platforms []string
	// Created is the image's creation time, for an index its newest
	// image's; zero when unknown.
	Created time.Time
}

// describer reads manifests and configurations, keeping summaries by
// digest: content that never changes.
type describer struct {
	store *storage.Store
	mu    sync.Mutex
	cache map[digest.Digest]summary
}

const maxSummaries = 10000

func newDescriber(store *storage.Store) *describer {
	return &describer{store: store, cache: make(map[digest.Digest]summary)}
}

// manifest reads and parses manifest dg of repository name.
func (d *describer) manifest(ctx context.Context, name string, dg digest.Digest) (*storage.Manifest, *manifestDoc, error) {
	m, err := d.store.GetManifest(ctx, name, dg.String())
	if err != nil {
		return nil, nil, err
	}
	var doc manifestDoc
	if err := json.Unmarshal(m.Payload, &doc); err != nil {
		return nil, nil, err
	}
	return m, &doc, nil
}

// config reads an image configuration; nil when desc is not one or it
// cannot be read.
func (d *describer) config(ctx context.Context, name string, desc *v1.Descriptor) *configDoc {
	if desc == nil || !isImageConfig(desc.MediaType) || desc.Size > maxConfigBytes {
		return nil
	}
	rc, _, err := d.store.OpenBlob(ctx, name, desc.Digest, 0)
	if err != nil {
		return nil
	}
	defer rc.Close()
	var c configDoc
	if json.NewDecoder(io.LimitReader(rc, maxConfigBytes)).Decode(&c) != nil {
		return nil
	}
	return &c
}

// summarize describes manifest dg of repository name.
func (d *describer) summarize(ctx context.Context, name string, dg digest.Digest) (summary, error) {
	d.mu.Lock()
	s, ok := d.cache[dg]
	d.mu.Unlock()
	if ok {
		return s, nil
	}
	m, doc, err := d.manifest(ctx, name, dg)
	if err != nil {
		return s, err
	}
	s.MediaType = m.MediaType
	s.Size = int64(len(m.Payload))
	seen := map[digest.Digest]bool{}
	addImage := func(doc *manifestDoc) *configDoc {
		descs := doc.Layers
		if doc.Config != nil {
			descs = append([]v1.Descriptor{*doc.Config}, descs...)
		}
		for _, l := range descs {
			if !seen[l.Digest] {
				seen[l.Digest] = true
				s.Size += l.Size
			}
		}
		c := d.config(ctx, name, doc.Config)
		if c != nil && c.Created != nil && c.Created.After(s.Created) {
			s.Created = *c.Created
		}
		return c
	}
	if isIndex(m.MediaType) {
		for _, child := range doc.Manifests {
			if child.Platform != nil {
				p := platformString(child.Platform.OS, child.Platform.Architecture, child.Platform.Variant)
				if !slices.Contains(s.Platforms, p) {
					s.Platforms = append(s.Platforms, p)
				}
			}
			s.Size += child.Size
			_, cdoc, err := d.manifest(ctx, name, child.Digest)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return s, err
				}
				continue // a child not in the repository: only its size is known
			}
			addImage(cdoc)
		}
	} else if c := addImage(doc); c != nil && c.OS != "" {
		s.Platforms = []string{platformString(c.OS, c.Architecture, c.Variant)}
	}
	d.mu.Lock()
	if len(d.cache) >= maxSummaries {
		clear(d.cache)
	}
	d.cache[dg] = s
	d.mu.Unlock()
	return s, nil
}

func platformString(os, arch, variant string) string {
	p := os + "/" + arch
	if variant != "" {
		p += "/" + variant
	}
	return p
}
