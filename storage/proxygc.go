package storage

import (
	"context"
	"errors"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// sweepProxyRecords removes the pull-through records of repository r (see
// proxy.go) that outlived what they describe: fetch records of tags that
// are gone and foreign-layer records that no manifest kept in r lists.
// Records younger than the grace period stay: a cache may be storing the
// tag or manifest they go with right now.
func (c *collection) sweepProxyRecords(ctx context.Context, r *repoState) error {
	fetched, err := c.s.listIfAny(ctx, proxyFetchedDir(r.name))
	if err != nil {
		return err
	}
	for _, e := range fetched {
		tag, ok := strings.CutPrefix(path.Base(e), "@")
		if !ok {
			continue // a nested repository's directory
		}
		if _, live := r.tags[tag]; live {
			continue
		}
		if err := c.removeRecord(ctx, e); err != nil {
			return err
		}
	}
	algs, err := c.s.listIfAny(ctx, proxyForeignDir(r.name))
	if err != nil {
		return err
	}
	var foreign map[digest.Digest]bool
	for _, a := range algs {
		alg, ok := strings.CutPrefix(path.Base(a), "@")
		if !ok {
			continue
		}
		if foreign == nil {
			foreign = map[digest.Digest]bool{}
			for m := range r.kept {
				for _, dg := range c.manifests[m].foreign {
					foreign[dg] = true
				}
			}
		}
		records, err := c.s.listIfAny(ctx, a)
		if err != nil {
			return err
		}
		for _, e := range records {
			if foreign[digest.NewDigestFromEncoded(digest.Algorithm(alg), path.Base(e))] {
				continue
			}
			if err := c.removeRecord(ctx, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeRecord removes the record at p unless it is younger than the grace
// period; a dry run removes nothing.
func (c *collection) removeRecord(ctx context.Context, p string) error {
	young, err := c.young(ctx, p, c.grace)
	if err != nil || young {
		return err
	}
	c.log.Debug("garbage collection: removed a pull-through record", "path", p, "dryrun", c.opts.DryRun)
	if c.opts.DryRun {
		return nil
	}
	if err := c.s.d.Delete(ctx, p); err != nil && !errors.Is(err, driver.ErrNotFound) {
		c.failed(ctx, "removing pull-through record "+p, err)
	}
	return nil
}

// proxyRecordRepos walks the pull-through record trees once and returns
// the repositories that have records, so that a collection lists records
// only where there are some: its cost follows the cache, not the registry.
// A directory holding an entry whose name begins with "@" (a tag's fetch
// record, or a foreign-layer record's algorithm) is a repository's.
func (s *Store) proxyRecordRepos(ctx context.Context) (map[string]bool, error) {
	repos := map[string]bool{}
	var walk func(dir, name string) error
	walk = func(dir, name string) error {
		entries, err := s.listIfAny(ctx, dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			base := path.Base(e)
			if strings.HasPrefix(base, "@") {
				repos[name] = true
				continue
			}
			if err := walk(e, path.Join(name, base)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, tree := range []string{berthPath("proxy", "fetched"), berthPath("proxy", "foreign")} {
		if err := walk(tree, ""); err != nil {
			return nil, err
		}
	}
	delete(repos, "")
	return repos, nil
}

// sweepOrphanRecords removes the records of repositories that are gone
// (past the grace period, as every record).
func (c *collection) sweepOrphanRecords(ctx context.Context, repos []*repoState, recorded map[string]bool) error {
	live := make(map[string]bool, len(repos))
	for _, r := range repos {
		live[r.name] = true
	}
	for name := range recorded {
		if live[name] {
			continue
		}
		if err := c.sweepProxyRecords(ctx, &repoState{name: name, tags: map[string]tagState{}}); err != nil {
			return err
		}
	}
	return nil
}
