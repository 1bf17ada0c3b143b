package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// proxyFetchedPath records when a pull-through cache last fetched tag of
// repository name from its upstream (see package proxy). "@" cannot begin
// a repository name component, so the record never collides with a nested
// repository's directory.
func proxyFetchedPath(name, tag string) string {
	return berthPath("proxy", "fetched", name, "@"+tag)
}

// SetTagFetched records that tag of repository name was fetched from an
// upstream at t (a pull-through cache's ttl counts from it). The record
// lives beside Distribution's tree, so Distribution ignores it.
func (s *Store) SetTagFetched(ctx context.Context, name, tag string, t time.Time) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ValidateTag(tag); err != nil {
		return err
	}
	return s.d.PutContent(ctx, proxyFetchedPath(name, tag), []byte(t.UTC().Format(time.RFC3339Nano)))
}

// TagFetched returns when tag of repository name was last fetched from an
// upstream (see SetTagFetched), or the zero time when it never was or the
// record cannot be read: a cache then fetches again.
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
