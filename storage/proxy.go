package storage

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// A pull-through cache (package proxy) keeps two kinds of record of its
// own beside Distribution's tree, which Distribution ignores:
//
//	_berth/proxy/
//	  fetched/<name>/@<tag>               when the upstream last confirmed the tag
//	  foreign/<name>/@<algorithm>/<hex>   a foreign layer of a cached manifest
//
// "@" cannot begin a repository name component, so neither collides with
// a nested repository's directory. A record goes with what it describes:
// a fetch record when its tag is removed (deleteTag), both when the
// repository is deleted, and a collection removes those whose tag or
// manifest is gone (see sweepProxyRecords).

func proxyFetchedDir(name string) string { return berthPath("proxy", "fetched", name) }

func proxyFetchedPath(name, tag string) string {
	return path.Join(proxyFetchedDir(name), "@"+tag)
}

func proxyForeignDir(name string) string { return berthPath("proxy", "foreign", name) }

func proxyForeignPath(name string, dg digest.Digest) string {
	return path.Join(proxyForeignDir(name), "@"+dg.Algorithm().String(), dg.Encoded())
}

// SetTagFetched records that the upstream of a pull-through cache
// confirmed tag of repository name at t (see package proxy).
func (s *Store) SetTagFetched(ctx context.Context, name, tag string, t time.Time) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ValidateTag(tag); err != nil {
		return err
	}
	return s.d.PutContent(ctx, proxyFetchedPath(name, tag), []byte(t.UTC().Format(time.RFC3339Nano)))
}

// TagFetched returns when tag of repository name was last confirmed by an
// upstream (see SetTagFetched), or the zero time when it never was or the
// record cannot be read: a cache then asks the upstream.
func (s *Store) TagFetched(ctx context.Context, name, tag string) (time.Time, error) {
	if err := ValidateName(name); err != nil {
		return time.Time{}, err
	}
	if err := ValidateTag(tag); err != nil {
		return time.Time{}, err
	}
	b, err := s.d.GetContent(ctx, proxyFetchedPath(name, tag))
	if errors.Is(err, driver.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("storage: fetch record of %s:%s: %w", name, tag, err)
	}
	return t, nil
}

// IsForeign reports whether dg is a foreign layer (a descriptor with urls,
// whose content is not distributed by registries) of a manifest that
// PutMirroredManifest stored in repository name.
func (s *Store) IsForeign(ctx context.Context, name string, dg digest.Digest) (bool, error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	if dg.Validate() != nil {
		return false, ErrDigestInvalid
	}
	return s.fileExists(ctx, proxyForeignPath(name, dg))
}

// HasBlob reports whether blob dg is stored, in any repository.
func (s *Store) HasBlob(ctx context.Context, dg digest.Digest) (bool, error) {
	if dg.Validate() != nil {
		return false, ErrDigestInvalid
	}
	return s.fileExists(ctx, blobDataPath(dg))
}

// markForeign records the foreign layers of a mirrored manifest (see
// IsForeign).
func (s *Store) markForeign(ctx context.Context, name string, doc *manifestDoc) error {
	for _, l := range doc.Layers {
		if len(l.URLs) == 0 || l.Digest.Validate() != nil {
			continue
		}
		if err := s.d.PutContent(ctx, proxyForeignPath(name, l.Digest), nil); err != nil {
			return err
		}
	}
	return nil
}

// deleteProxyRecords removes every pull-through record of repository name
// (not those of repositories nested in it).
func (s *Store) deleteProxyRecords(ctx context.Context, name string) error {
	for _, dir := range []string{proxyFetchedDir(name), proxyForeignDir(name)} {
		entries, err := s.d.List(ctx, dir)
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(path.Base(e), "@") {
				if err := s.d.Delete(ctx, e); err != nil && !errors.Is(err, driver.ErrNotFound) {
					return err
				}
			}
		}
	}
	return nil
}
