package storage

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"

	"github.com/berth-registry/berth/storage/driver"
)

// Page selects part of a sorted listing: entries after Last, at most N of
// them (N < 0: all).
type Page struct {
	N    int
	Last string
}

// apply cuts a sorted list to the page and reports whether more follow.
func (p Page) apply(all []string) ([]string, bool) {
	if p.Last != "" {
		i, found := slices.BinarySearch(all, p.Last)
		if found {
			i++
		}
		all = all[i:]
	}
	if p.N >= 0 && len(all) > p.N {
		return all[:p.N], true
	}
	return all, false
}

// Tags lists the tags of repository name in lexical order.
func (s *Store) Tags(ctx context.Context, name string, page Page) ([]string, bool, error) {
	if err := ValidateName(name); err != nil {
		return nil, false, err
	}
	tags, err := s.allTags(ctx, name)
	if err != nil {
		return nil, false, err
	}
	if tags == nil {
		if ok, err := s.repositoryExists(ctx, name); err != nil || !ok {
			if err == nil {
				err = ErrNameUnknown
			}
			return nil, false, err
		}
	}
	tags, more := page.apply(tags)
	return tags, more, nil
}

// repositoryExists reports whether repository name has any content of its
// own (a directory of a nested repository, "name/sub", does not count).
func (s *Store) repositoryExists(ctx context.Context, name string) (bool, error) {
	for _, dir := range []string{"_manifests", "_layers", "_uploads"} {
		if ok, err := s.exists(ctx, path.Join(repoPath(name), dir)); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (s *Store) allTags(ctx context.Context, name string) ([]string, error) {
	entries, err := s.d.List(ctx, tagsPath(name))
	if errors.Is(err, driver.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	tags := make([]string, 0, len(entries))
	for _, e := range entries {
		// A tag whose current link never landed (a crash while tagging)
		// does not exist.
		tag := path.Base(e)
		if ok, err := s.fileExists(ctx, tagCurrentPath(name, tag)); err != nil {
			return nil, err
		} else if ok {
			tags = append(tags, tag)
		}
	}
	slices.Sort(tags)
	return tags, nil
}

// Catalog lists the repositories that hold manifests, in lexical order.
func (s *Store) Catalog(ctx context.Context, page Page) ([]string, bool, error) {
	var repos []string
	base := repositoriesPath()
	var walk func(dir string) error
	walk = func(dir string) error {
		entries, err := s.d.List(ctx, dir)
		if err != nil {
			if errors.Is(err, driver.ErrNotFound) {
				return nil
			}
			return err
		}
		for _, e := range entries {
			elem := path.Base(e)
			if elem == "_manifests" {
				repos = append(repos, strings.TrimPrefix(dir, base+"/"))
				continue
			}
			if strings.HasPrefix(elem, "_") {
				continue
			}
			if fi, err := s.d.Stat(ctx, e); err == nil && fi.IsDir {
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(base); err != nil {
		return nil, false, err
	}
	slices.Sort(repos)
	repos, more := page.apply(repos)
	return repos, more, nil
}
