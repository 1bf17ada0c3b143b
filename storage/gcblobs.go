package storage

import (
	"context"
	"errors"
	"path"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// sweepBlobs removes blobs that nothing reachable references, with the
// repositories' links to them.
func (c *collection) sweepBlobs(ctx context.Context, repos []*repoState, reachable map[digest.Digest]bool) error {
	links := map[digest.Digest][]string{} // unreachable digest → repositories linking it
	for _, r := range repos {
		for _, l := range r.layers {
			if !reachable[l] {
				links[l] = append(links[l], r.name)
			}
		}
	}
	blobs, err := c.s.listBlobs(ctx)
	if err != nil {
		return err
	}
	c.report.Blobs = len(blobs)
	var candidates []digest.Digest
	for _, b := range blobs {
		if !reachable[b] {
			candidates = append(candidates, b)
			if _, ok := links[b]; !ok {
				links[b] = nil
			}
		}
	}
	// Links to content that is gone (or never arrived) are candidates too.
	for dg := range links {
		if _, isBlob := slices.BinarySearch(blobs, dg); !isBlob {
			candidates = append(candidates, dg)
		}
	}
	if err := c.each(ctx, len(candidates), func(i int) error {
		dg := candidates[i]
		return c.removeBlob(ctx, dg, links[dg])
	}); err != nil {
		return err
	}
	return c.removeStrayLeases(ctx, blobs, links)
}

// removeStrayLeases removes the leases of digests that have neither
// content nor links, once they are older than the grace period: left by a
// crash between a lease and its content, or by an upload that did not
// match its digest. Such a lease protects nothing; a request renewing it
// now is placing new content, which its own age protects.
func (c *collection) removeStrayLeases(ctx context.Context, blobs []digest.Digest, links map[digest.Digest][]string) error {
	if c.opts.DryRun {
		return nil
	}
	leases, err := c.s.listDigests(ctx, berthPath("leases"), true)
	if err != nil {
		return err
	}
	for _, dg := range leases {
		if _, isBlob := slices.BinarySearch(blobs, dg); isBlob {
			continue
		}
		if _, linked := links[dg]; linked {
			continue
		}
		if young, err := c.young(ctx, leasePath(dg), c.grace); err != nil || young {
			continue
		}
		if err := c.s.d.Delete(ctx, leasePath(dg)); err != nil && !errors.Is(err, driver.ErrNotFound) {
			c.failed(ctx, "removing lease of "+dg.String(), err)
		}
	}
	return nil
}

// listBlobs lists every digest under blobs/, sorted.
func (s *Store) listBlobs(ctx context.Context) ([]digest.Digest, error) {
	return s.listDigests(ctx, path.Join(root, "blobs"), true)
}

// removeBlob removes blob dg, its lease and the links repos hold to it,
// unless it is younger than the grace period or a request relied on it
// (see lease.go).
func (c *collection) removeBlob(ctx context.Context, dg digest.Digest, repos []string) error {
	data := blobDataPath(dg)
	fi, err := c.s.d.Stat(ctx, data)
	exists := err == nil
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	if exists && c.t0.Sub(fi.ModTime) < c.grace {
		return nil // new content, not referenced yet
	}
	if leased, since, err := c.leasedSince(ctx, dg); err != nil || leased {
		if since {
			c.count(&c.report.Kept)
		}
		return err
	}
	if c.opts.DryRun {
		if exists {
			c.removed(Removal{Kind: "blob", Digest: dg, Size: fi.Size})
		}
		for _, r := range repos {
			c.removed(Removal{Kind: "link", Repository: r, Digest: dg})
		}
		return nil
	}
	mk, err := c.doom(ctx, doomedPath(dg))
	if err != nil {
		return err
	}
	defer mk.done(ctx)
	testHook("doomed", dg)
	leased, err := c.leased(ctx, dg)
	if err != nil {
		return err
	}
	if exists {
		// Placed again since it was first looked at?
		if fi2, err := c.s.d.Stat(ctx, data); err == nil && c.t0.Sub(fi2.ModTime) < c.grace {
			leased = true
		}
	}
	if leased || !mk.live() {
		c.count(&c.report.Kept)
		return nil
	}
	testHook("deleting", dg)
	if exists {
		if err := c.s.d.Delete(ctx, path.Dir(data)); err != nil && !errors.Is(err, driver.ErrNotFound) {
			// On Windows without POSIX deletes, a blob being downloaded
			// cannot be removed; the next collection tries again.
			c.failed(ctx, "removing blob "+dg.String(), err)
			return nil
		}
		c.removed(Removal{Kind: "blob", Digest: dg, Size: fi.Size})
	}
	for _, r := range repos {
		if !mk.live() {
			break
		}
		if err := c.s.d.Delete(ctx, path.Dir(layerLinkPath(r, dg))); err != nil {
			if !errors.Is(err, driver.ErrNotFound) {
				c.failed(ctx, "removing link "+r+"@"+dg.String(), err)
			}
			continue
		}
		c.removed(Removal{Kind: "link", Repository: r, Digest: dg})
	}
	if err := c.s.d.Delete(ctx, leasePath(dg)); err != nil && !errors.Is(err, driver.ErrNotFound) {
		c.failed(ctx, "removing lease of "+dg.String(), err)
	}
	return nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	return err
}

// removeStaleMarkers removes doomed markers a killed collection left.
// Requests already ignore them (they are older than doomedTTL, since the
// lock a collection holds outlives it by more).
func (c *collection) removeStaleMarkers(ctx context.Context) error {
	var walk func(dir string) error
	walk = func(dir string) error {
		entries, err := c.s.d.List(ctx, dir)
		if errors.Is(err, driver.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, e := range entries {
			fi, err := c.s.d.Stat(ctx, e)
			if err != nil {
				continue
			}
			if fi.IsDir {
				if err := walk(e); err != nil {
					return err
				}
				continue
			}
			if time.Since(fi.ModTime) > doomedTTL {
				if err := c.s.d.Delete(ctx, e); err != nil && !errors.Is(err, driver.ErrNotFound) {
					return err
				}
			}
		}
		return nil
	}
	return walk(berthPath("doomed"))
}
