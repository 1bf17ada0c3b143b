package storage

import (
	"context"
	"errors"
	"path"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// moveTag points tag at dg. A tag has no lease: its current link stands
// for one. A retention pass that is removing the tag (see lease.go) holds
// a doomed marker while it decides, and reads the link after writing the
// marker; the request writes the link, then reads the marker. So either
// the pass sees the new link and keeps the tag, or the request sees the
// marker and writes the tag again once the pass is done, or the pass was
// done before the request looked: then the link it may have deleted is
// read back, and written again if it is gone.
//
// The tag's index entry is written after the current link (with the read
// back), so that a tag's directory holds its current link for as long as
// it exists (listings rely on that; see deleteTag).
func (s *Store) moveTag(ctx context.Context, name, tag string, dg digest.Digest) error {
	current := tagCurrentPath(name, tag)
	for {
		if err := s.writeLink(ctx, current, dg); err != nil {
			return err
		}
		testHook("tag written", dg)
		waited, err := s.waitDoomed(ctx, doomedTagPath(name, tag))
		if err != nil {
			return err
		}
		if waited {
			continue
		}
		var linked bool
		err = concurrently(
			func() (err error) { linked, err = s.fileExists(ctx, current); return err },
			func() error { return s.writeLink(ctx, tagIndexPath(name, tag, dg), dg) },
		)
		if err != nil || linked {
			return err
		}
	}
}

// deleteTag removes tag from repository name: its index entries first and
// its current link last, so that an interrupted deletion leaves a tag that
// still resolves rather than a directory without a current link, which
// tag listings would show (they read the tags directory alone, as
// Distribution's do). A pull-through cache's fetch record of the tag goes
// last.
func (s *Store) deleteTag(ctx context.Context, name, tag string) error {
	err := s.d.Delete(ctx, path.Join(tagPath(name, tag), "index"))
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	err = s.d.Delete(ctx, tagPath(name, tag))
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	// A pull-through cache's record of the tag goes with it.
	if rerr := s.d.Delete(ctx, proxyFetchedPath(name, tag)); rerr != nil && !errors.Is(rerr, driver.ErrNotFound) {
		return rerr
	}
	return err
}

// Untag removes tag from repository name; the manifest stays.
func (s *Store) Untag(ctx context.Context, name, tag string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if ValidateTag(tag) != nil {
		return ErrManifestUnknown
	}
	return notFound(s.deleteTag(ctx, name, tag), ErrManifestUnknown)
}
