package storage

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// PurgeOptions tunes PurgeUploads, after Distribution's
// storage.maintenance.uploadpurging.
type PurgeOptions struct {
	// Age: sessions begun longer ago than this, and that received no
	// byte for as long, are removed. Zero: 168h, Distribution's default.
	Age time.Duration
	// DryRun reports what would be removed and changes nothing.
	DryRun bool
	// Logger receives one line per purge. Nil: none.
	Logger *slog.Logger
	// OnRemove is called for each session removed (or that would be).
	OnRemove func(repository, id string)
}

// PurgeReport is what a purge did.
type PurgeReport struct {
	Sessions int // sessions seen
	Removed  int
	Failed   int
}

// PurgeUploads removes abandoned upload sessions. A session counts as
// abandoned when it began more than opts.Age ago and its data has not
// grown for as long (Distribution looks only at when it began, which
// would cut a slow upload of a large layer that is still arriving).
func (s *Store) PurgeUploads(ctx context.Context, opts PurgeOptions) (PurgeReport, error) {
	age := opts.Age
	if age <= 0 {
		age = 168 * time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	var rep PurgeReport
	repos, err := s.repositories(ctx)
	if err != nil {
		return rep, err
	}
	for _, name := range repos {
		ids, err := s.d.List(ctx, path.Join(repoPath(name), "_uploads"))
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, err
		}
		for _, p := range ids {
			id := path.Base(p)
			if ValidateUploadID(id) != nil {
				continue
			}
			rep.Sessions++
			if !s.abandoned(ctx, name, id, start, age) {
				continue
			}
			if opts.OnRemove != nil {
				opts.OnRemove(name, id)
			}
			if opts.DryRun {
				rep.Removed++
				continue
			}
			s.states.drop(name, id)
			if err := s.d.Delete(ctx, uploadPath(name, id)); err != nil && !errors.Is(err, driver.ErrNotFound) {
				rep.Failed++
				log.WarnContext(ctx, "upload purge: removing a session", "repository", name, "id", id, "err", err)
				continue
			}
			rep.Removed++
		}
	}
	log.InfoContext(ctx, "upload purge", "dryrun", opts.DryRun, "sessions", rep.Sessions, "removed", rep.Removed,
		"failed", rep.Failed, "age", age, "duration", time.Since(start))
	return rep, nil
}

// abandoned reports whether upload id began and last grew before now-age.
// A session without a readable start time is judged by its files' times.
func (s *Store) abandoned(ctx context.Context, name, id string, now time.Time, age time.Duration) bool {
	old := func(p string) bool {
		if p == "" {
			return true
		}
		fi, err := s.d.Stat(ctx, p)
		return errors.Is(err, driver.ErrNotFound) || (err == nil && now.Sub(fi.ModTime) > age)
	}
	if b, err := s.d.GetContent(ctx, uploadStartedPath(name, id)); err == nil {
		if t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b))); err == nil && now.Sub(t) <= age {
			return false
		}
	}
	return old(uploadStartedPath(name, id)) && old(uploadDataPath(name, id)) && old(s.lastHashState(ctx, name, id))
}

// lastHashState returns the path of the state saved after upload id's last
// chunk (its time is when the upload last grew, also on an object store,
// where the unfinished data file is not seen), or "" when there is none.
func (s *Store) lastHashState(ctx context.Context, name, id string) string {
	entries, err := s.d.ListPage(ctx, uploadHashStatesPath(name, id), "", 0)
	if err != nil {
		return ""
	}
	last := int64(-1)
	for _, e := range entries {
		if n, err := strconv.ParseInt(e.Name, 10, 64); err == nil && !e.IsDir && n > last {
			last = n
		}
	}
	if last < 0 {
		return ""
	}
	return uploadHashStatePath(name, id, last)
}

// DeleteRepository removes repository name: its tags, manifests, links,
// referrers index, upload sessions and pull-through records. Repositories nested under it
// ("name/sub") stay. Blobs that no other repository uses are freed by the
// next garbage collection. It returns ErrNameUnknown when there is no such
// repository.
func (s *Store) DeleteRepository(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	found := false
	for _, dir := range []string{"_manifests", "_layers", "_referrers", "_uploads"} {
		err := s.d.Delete(ctx, path.Join(repoPath(name), dir))
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		found = true
	}
	if !found {
		return ErrNameUnknown
	}
	return s.deleteProxyRecords(ctx, name)
}
