package storage

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// StatBlob returns the size of blob dg if repository name has it.
func (s *Store) StatBlob(ctx context.Context, name string, dg digest.Digest) (int64, error) {
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	if ok, err := s.fileExists(ctx, layerLinkPath(name, dg)); err != nil || !ok {
		if err == nil {
			err = ErrBlobUnknown
		}
		return 0, err
	}
	fi, err := s.statFile(ctx, blobDataPath(dg))
	if err != nil {
		return 0, notFound(err, ErrBlobUnknown)
	}
	return fi.Size, nil
}

// CheckBlob is StatBlob for a client that may rely on the answer: a blob
// it reports is protected from garbage collection for at least ¾ of the
// grace period, long enough for the manifest PUT that uses it (see
// lease.go).
func (s *Store) CheckBlob(ctx context.Context, name string, dg digest.Digest) (int64, error) {
	if _, err := s.StatBlob(ctx, name, dg); err != nil {
		return 0, err
	}
	if _, err := s.promise(ctx, dg); err != nil {
		return 0, err
	}
	return s.StatBlob(ctx, name, dg)
}

// OpenBlob opens blob dg of repository name for reading from offset, and
// returns its total size.
func (s *Store) OpenBlob(ctx context.Context, name string, dg digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	size, err := s.StatBlob(ctx, name, dg)
	if err != nil {
		return nil, 0, err
	}
	r, err := s.d.Reader(ctx, blobDataPath(dg), offset)
	if err != nil {
		return nil, 0, notFound(err, ErrBlobUnknown)
	}
	return r, size, nil
}

// BlobURL returns a URL that serves blob dg without credentials for some
// minutes, or "" when the driver gives none (see driver.Redirector). The
// caller has checked that the repository has the blob.
func (s *Store) BlobURL(ctx context.Context, dg digest.Digest) (string, error) {
	r, ok := s.d.(driver.Redirector)
	if !ok {
		return "", nil
	}
	u, err := r.RedirectURL(ctx, blobDataPath(dg))
	return u, notFound(err, ErrBlobUnknown)
}

// DeleteBlob removes blob dg from repository name. The content stays until
// garbage collection, since other repositories may link it.
func (s *Store) DeleteBlob(ctx context.Context, name string, dg digest.Digest) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	err := s.d.Delete(ctx, layerLinkPath(name, dg))
	return notFound(err, ErrBlobUnknown)
}

// MountBlob links blob dg into repository name without copying it. With
// from set, the blob must be in repository from; with from empty, any stored
// copy will do. It returns the blob's size, or ErrBlobUnknown. Like
// CheckBlob, a mounted blob is protected from collection for a while.
func (s *Store) MountBlob(ctx context.Context, name, from string, dg digest.Digest) (int64, error) {
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	// The blob must exist before it is leased (a lease for content that
	// does not exist is litter), and again after (see lease.go).
	if from != "" {
		if _, err := s.StatBlob(ctx, from, dg); err != nil {
			return 0, err
		}
	} else if ok, err := s.fileExists(ctx, blobDataPath(dg)); err != nil || !ok {
		if err == nil {
			err = ErrBlobUnknown
		}
		return 0, err
	}
	if _, err := s.promise(ctx, dg); err != nil {
		return 0, err
	}
	fi, err := s.statFile(ctx, blobDataPath(dg))
	if err != nil {
		return 0, notFound(err, ErrBlobUnknown)
	}
	return fi.Size, s.writeLink(ctx, layerLinkPath(name, dg), dg)
}

// placeBlob moves a verified upload file into the blob store. Content is
// write-once: when the blob is already there the upload file is dropped
// instead, which also makes concurrent uploads of one blob safe.
func (s *Store) placeBlob(ctx context.Context, src string, dg digest.Digest, size int64) error {
	dst := blobDataPath(dg)
	if fi, err := s.statFile(ctx, dst); err == nil && fi.Size == size {
		return s.d.Delete(ctx, src)
	}
	err := s.d.Move(ctx, src, dst)
	if err != nil {
		// Lost a race with another upload of the same content (on Windows
		// a rename onto a file being read fails): fine if it is there now.
		if fi, serr := s.statFile(ctx, dst); serr == nil && fi.Size == size {
			return nil
		}
		if errors.Is(err, driver.ErrNotFound) {
			return ErrUploadUnknown
		}
	}
	return err
}
