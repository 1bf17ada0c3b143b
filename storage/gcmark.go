package storage

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// repositories lists every repository directory (any with _manifests,
// _layers or _uploads), in lexical order.
func (s *Store) repositories(ctx context.Context) ([]string, error) {
	var repos []string
	base := repositoriesPath()
	var walk func(dir string) error
	walk = func(dir string) error {
		entries, err := s.d.List(ctx, dir)
		if errors.Is(err, driver.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		isRepo := false
		for _, e := range entries {
			elem := path.Base(e)
			switch {
			case elem == "_manifests" || elem == "_layers" || elem == "_uploads":
				isRepo = true
			case strings.HasPrefix(elem, "_"):
			case ValidateName(elem) == nil:
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		if isRepo {
			repos = append(repos, strings.TrimPrefix(dir, base+"/"))
		}
		return nil
	}
	if err := walk(base); err != nil {
		return nil, err
	}
	slices.Sort(repos)
	return repos, nil
}

// listDigests lists the digests of the directories <dir>/<alg>/<hex>, or,
// sharded, <dir>/<alg>/<hex[:2]>/<hex> (blobs, leases), sorted.
func (s *Store) listDigests(ctx context.Context, dir string, sharded bool) ([]digest.Digest, error) {
	algs, err := s.listIfAny(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, a := range algs {
		alg := digest.Algorithm(path.Base(a))
		parents := []string{a}
		if sharded {
			if parents, err = s.listIfAny(ctx, a); err != nil {
				return nil, err
			}
		}
		for _, p := range parents {
			hexes, err := s.listIfAny(ctx, p)
			if err != nil {
				return nil, err
			}
			for _, h := range hexes {
				if dg := digest.NewDigestFromEncoded(alg, path.Base(h)); dg.Validate() == nil {
					out = append(out, dg)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// listIfAny is List, with a directory that does not exist listed as empty.
func (s *Store) listIfAny(ctx context.Context, dir string) ([]string, error) {
	entries, err := s.d.List(ctx, dir)
	if errors.Is(err, driver.ErrNotFound) {
		return nil, nil
	}
	return entries, err
}

func (c *collection) readRepo(ctx context.Context, name string) (*repoState, error) {
	r := &repoState{name: name, tags: map[string]tagState{}, rule: matchRule(c.opts.Retention, name)}
	revisions, err := c.s.listDigests(ctx, path.Join(repoPath(name), "_manifests", "revisions"), false)
	if err != nil {
		return nil, err
	}
	r.revTimes = map[digest.Digest]time.Time{}
	for _, m := range revisions {
		// A directory without its link is a deleted manifest.
		fi, err := c.s.d.Stat(ctx, revisionLinkPath(name, m))
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		r.revisions = append(r.revisions, m)
		r.revTimes[m] = fi.ModTime
	}
	if r.layers, err = c.s.listDigests(ctx, path.Join(repoPath(name), "_layers"), false); err != nil {
		return nil, err
	}
	entries, err := c.s.d.List(ctx, tagsPath(name))
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return nil, err
	}
	for _, e := range entries {
		tag := path.Base(e)
		p := tagCurrentPath(name, tag)
		dg, err := c.s.readLink(ctx, p)
		if errors.Is(err, driver.ErrNotFound) {
			continue // a tag whose link never landed does not exist
		}
		if err != nil {
			return nil, err
		}
		ts := tagState{target: dg}
		if r.rule.needsTagTimes() {
			fi, err := c.s.d.Stat(ctx, p)
			if err != nil {
				return nil, err
			}
			ts.modTime = fi.ModTime
		}
		r.tags[tag] = ts
	}
	return r, nil
}

// readManifests reads and parses every manifest any repository holds, once
// per digest.
func (c *collection) readManifests(ctx context.Context, repos []*repoState) error {
	var all []digest.Digest
	for _, r := range repos {
		for _, m := range r.revisions {
			if _, ok := c.manifests[m]; !ok {
				c.manifests[m] = nil
				all = append(all, m)
			}
		}
	}
	c.report.Manifests = len(all)
	found := make([]*refs, len(all))
	err := c.each(ctx, len(all), func(i int) error {
		payload, err := c.s.d.GetContent(ctx, blobDataPath(all[i]))
		if errors.Is(err, driver.ErrNotFound) {
			found[i] = &refs{missing: true}
			return nil
		}
		if err != nil {
			return err
		}
		doc, _, err := parseManifest(payload, "")
		if err != nil {
			c.mu.Lock()
			c.unknown = fmt.Errorf("manifest %s cannot be read, so what it references is unknown: %w", all[i], err)
			c.mu.Unlock()
			found[i] = &refs{}
			return nil
		}
		rf := &refs{children: doc.childDigests()}
		if doc.Config != nil {
			rf.blobs = append(rf.blobs, doc.Config.Digest)
		}
		for _, l := range doc.Layers {
			if len(l.URLs) == 0 {
				rf.blobs = append(rf.blobs, l.Digest)
			} else {
				rf.foreign = append(rf.foreign, l.Digest)
			}
		}
		if doc.Subject != nil {
			rf.subject = doc.Subject.Digest
		}
		found[i] = rf
		return nil
	})
	for i, m := range all {
		c.manifests[m] = found[i]
	}
	return err
}

func (m *manifestDoc) childDigests() []digest.Digest {
	var out []digest.Digest
	for _, c := range m.Manifests {
		out = append(out, c.Digest)
	}
	return out
}
