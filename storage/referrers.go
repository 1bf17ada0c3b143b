package storage

import (
	"context"
	"errors"
	"path"
	"slices"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/driver"
)

// Referrers returns descriptors of the manifests in repository name whose
// subject is subject, filtered to artifactType when it is not empty. An
// unknown subject has no referrers, which is not an error.
func (s *Store) Referrers(ctx context.Context, name string, subject digest.Digest, artifactType string) ([]v1.Descriptor, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	algs, err := s.d.List(ctx, referrersPath(name, subject))
	if errors.Is(err, driver.ErrNotFound) {
		return []v1.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []v1.Descriptor{}
	for _, algDir := range algs {
		hexes, err := s.d.List(ctx, algDir)
		if err != nil {
			continue
		}
		for _, h := range hexes {
			dg := digest.NewDigestFromEncoded(digest.Algorithm(path.Base(algDir)), path.Base(h))
			if dg.Validate() != nil {
				continue
			}
			desc, ok := s.referrerDescriptor(ctx, name, dg)
			if !ok || (artifactType != "" && desc.ArtifactType != artifactType) {
				continue
			}
			out = append(out, desc)
		}
	}
	slices.SortFunc(out, func(a, b v1.Descriptor) int {
		if a.Digest < b.Digest {
			return -1
		}
		if a.Digest > b.Digest {
			return 1
		}
		return 0
	})
	return out, nil
}

// referrerDescriptor describes manifest dg for a referrers list; false when
// it is gone (deleted after the index entry was written).
func (s *Store) referrerDescriptor(ctx context.Context, name string, dg digest.Digest) (v1.Descriptor, bool) {
	m, err := s.GetManifest(ctx, name, dg.String())
	if err != nil {
		return v1.Descriptor{}, false
	}
	doc, _, err := parseManifest(m.Payload, "")
	if err != nil {
		return v1.Descriptor{}, false
	}
	artifactType := doc.ArtifactType
	if artifactType == "" && doc.Config != nil {
		artifactType = doc.Config.MediaType
	}
	return v1.Descriptor{
		MediaType:    m.MediaType,
		Digest:       dg,
		Size:         int64(len(m.Payload)),
		ArtifactType: artifactType,
		Annotations:  doc.Annotations,
	}, true
}
