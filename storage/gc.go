package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/berth-registry/berth/storage/driver"
)

// GCOptions tunes a garbage collection. The zero value collects
// unreferenced blobs older than the store's grace period, keeps every
// manifest, and applies no retention rule.
type GCOptions struct {
	// DeleteUntagged removes manifests that no tag reaches (directly, as
	// an index's child, or as a referrer of a manifest that is kept) and
	// that are older than the grace period, as Distribution's
	// --delete-untagged does.
	DeleteUntagged bool
	// DryRun reports what would be removed and changes nothing.
	DryRun bool
	// Retention rules; the first rule whose pattern matches a repository
	// applies to it. None: no tag is removed.
	Retention []RetentionRule
	// Logger receives one line per collection and per failure. Nil: none.
	Logger *slog.Logger
	// OnRemove is called for everything removed (or that a dry run would
	// remove), from several goroutines at once. Nil: nothing is called.
	OnRemove func(Removal)
	// Workers is how many repositories or blobs are worked on at once.
	// Zero: 8.
	Workers int
	// Unsafe switches off the protocol that keeps content a request relies
	// on (leases and doomed markers, see lease.go); only the grace period
	// on the content's own age is left. It exists so tests can show what
	// the protocol prevents. Never set it on a registry that serves.
	Unsafe bool
}

// Removal is one thing a collection removed.
type Removal struct {
	// Kind is "blob", "manifest", "tag" or "link" (a repository's link to
	// a blob that is gone).
	Kind       string
	Repository string // empty for a blob
	Digest     digest.Digest
	Tag        string // for a tag
	Size       int64  // bytes freed, for a blob
}

func (r Removal) String() string {
	switch r.Kind {
	case "blob":
		return fmt.Sprintf("blob %s (%d bytes)", r.Digest, r.Size)
	case "tag":
		return fmt.Sprintf("tag %s:%s (was %s)", r.Repository, r.Tag, r.Digest)
	}
	return fmt.Sprintf("%s %s@%s", r.Kind, r.Repository, r.Digest)
}

// GCReport is what a collection found and did.
type GCReport struct {
	Repositories int // repositories walked
	Manifests    int // distinct manifests read
	Blobs        int // blobs in the store before the collection

	BlobsDeleted     int
	BytesFreed       int64
	ManifestsDeleted int // revisions removed from repositories
	TagsDeleted      int
	LinksDeleted     int
	// Kept counts candidates that a request relied on while the
	// collection ran, which it therefore kept.
	Kept int
	// Failed counts removals that failed (logged); the next collection
	// tries again.
	Failed   int
	Duration time.Duration
}

// ErrGCRunning: another collection holds the store's collection lock.
var ErrGCRunning = errors.New("storage: another garbage collection is running on this store")

// repoState is what the mark phase read of one repository.
type repoState struct {
	name      string
	revisions []digest.Digest
	tags      map[string]tagState
	layers    []digest.Digest
	rule      *RetentionRule
	revSet    map[digest.Digest]bool
	revTimes  map[digest.Digest]time.Time       // when each revision link was written
	referrers map[digest.Digest][]digest.Digest // subject → manifests of this repository
	kept      map[digest.Digest]bool            // after the sweep: manifests that stay
}

type tagState struct {
	target  digest.Digest
	modTime time.Time
}

// refs is what a manifest references, read once per digest.
type refs struct {
	blobs    []digest.Digest // config and layers stored here
	children []digest.Digest
	subject  digest.Digest
	foreign  []digest.Digest // layers with urls, not stored here
	missing  bool            // the manifest's content is gone: it references nothing
}

// collection is one run's state.
type collection struct {
	s       *Store
	opts    GCOptions
	start   time.Time // when CollectGarbage was called
	t0      time.Time // when the collection began, the lock taken
	grace   time.Duration
	log     *slog.Logger
	workers int

	mu        sync.Mutex
	manifests map[digest.Digest]*refs
	report    GCReport
	unknown   error // a manifest that could not be parsed: blobs are not swept
}

// CollectGarbage removes what no manifest references: blobs, repositories'
// links to them, and, when asked, untagged manifests and tags that
// retention rules drop. It runs while registries serve the store: see
// lease.go for why content a request relies on is never removed. Only
// one collection runs on a store at a time (ErrGCRunning).
func (s *Store) CollectGarbage(ctx context.Context, opts GCOptions) (GCReport, error) {
	now := time.Now()
	c := &collection{s: s, opts: opts, start: now, t0: now, grace: s.grace, log: opts.Logger,
		workers: opts.Workers, manifests: map[digest.Digest]*refs{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.workers <= 0 {
		c.workers = 8
	}
	err := c.lockAndRun(ctx)
	c.report.Duration = time.Since(c.start)
	r := c.report
	s.gc.collected(r, opts.DryRun, err)
	level := slog.LevelInfo
	switch {
	case errors.Is(err, ErrGCRunning):
		c.log.InfoContext(ctx, "garbage collection skipped: another one is running on this store", "reason", err)
		return r, err
	case err != nil && ctx.Err() != nil:
		level = slog.LevelWarn // stopped by shutdown
	case err != nil:
		level = slog.LevelError
	}
	c.log.Log(ctx, level, "garbage collection", "dryrun", opts.DryRun, "repositories", r.Repositories,
		"manifests", r.Manifests, "blobs", r.Blobs, "blobs_deleted", r.BlobsDeleted, "bytes_freed", r.BytesFreed,
		"manifests_deleted", r.ManifestsDeleted, "tags_deleted", r.TagsDeleted, "links_deleted", r.LinksDeleted,
		"kept", r.Kept, "failed", r.Failed, "duration", r.Duration, "err", err)
	return r, err
}

// lockAndRun takes the collection lock (a dry run changes nothing and
// needs none), clears what a killed collection left, and runs.
func (c *collection) lockAndRun(ctx context.Context) error {
	if !c.opts.DryRun {
		locked, unlock, err := c.s.lockGC(ctx)
		if err != nil {
			return err
		}
		defer unlock()
		ctx = locked
		c.t0 = time.Now()
		if err := c.removeStaleMarkers(ctx); err != nil {
			return err
		}
	}
	return c.run(ctx)
}

func (c *collection) run(ctx context.Context) error {
	names, err := c.s.repositories(ctx)
	if err != nil {
		return err
	}
	c.report.Repositories = len(names)
	repos := make([]*repoState, len(names))
	if err := c.each(ctx, len(names), func(i int) error {
		r, err := c.readRepo(ctx, names[i])
		repos[i] = r
		return err
	}); err != nil {
		return err
	}
	if err := c.readManifests(ctx, repos); err != nil {
		return err
	}
	if c.unknown != nil {
		return fmt.Errorf("storage: nothing collected: %w", c.unknown)
	}
	for _, r := range repos {
		r.revSet = map[digest.Digest]bool{}
		r.referrers = map[digest.Digest][]digest.Digest{}
		for _, m := range r.revisions {
			r.revSet[m] = true
			if sub := c.manifests[m].subject; sub != "" {
				r.referrers[sub] = append(r.referrers[sub], m)
			}
		}
	}
	// Tags and manifests first, repository by repository; then what the
	// surviving manifests reference is reachable, and every other blob is a
	// candidate.
	recorded, err := c.s.proxyRecordRepos(ctx)
	if err != nil {
		return err
	}
	if err := c.each(ctx, len(repos), func(i int) error {
		if err := c.sweepRepo(ctx, repos[i]); err != nil {
			return err
		}
		if !recorded[repos[i].name] {
			return nil
		}
		return c.sweepProxyRecords(ctx, repos[i])
	}); err != nil {
		return err
	}
	if err := c.sweepOrphanRecords(ctx, repos, recorded); err != nil {
		return err
	}
	reachable := map[digest.Digest]bool{}
	for _, r := range repos {
		for m := range r.kept {
			reachable[m] = true
			for _, b := range c.manifests[m].blobs {
				reachable[b] = true
			}
		}
	}
	testHook("marked", "")
	return c.sweepBlobs(ctx, repos, reachable)
}

// testHook lets tests act at given moments of a collection: "marked"
// (reachability known, tags and manifests swept, blobs not yet), "doomed" (a blob's marker
// written, its lease not read yet), "deleting" (the lease read, the blob
// about to be deleted), and "tag doomed", "tag deleting" likewise for a
// tag that retention removes (with the digest it pointed at); and at one
// moment of a request: "tag written" (a push wrote a tag's current link
// and has not yet looked for a marker).
var testHook = func(stage string, dg digest.Digest) {}

// each runs fn(0..n-1) on the collection's workers and returns the first
// error.
func (c *collection) each(ctx context.Context, n int, fn func(i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.workers)
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return fn(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return context.Cause(ctx)
}

// sweepRepo applies retention to a repository's tags, decides which of its
// manifests stay, and removes the others.
func (c *collection) sweepRepo(ctx context.Context, r *repoState) error {
	for _, tag := range r.rule.dropTags(r.tags, c.t0) {
		removed, err := c.removeTag(ctx, r, tag)
		if err != nil {
			return err
		}
		if removed {
			delete(r.tags, tag)
		}
	}
	untaggedAge := time.Duration(-1) // keep every manifest
	if c.opts.DeleteUntagged {
		untaggedAge = c.grace
	}
	if r.rule != nil && r.rule.UntaggedOlderThan > 0 && (untaggedAge < 0 || r.rule.UntaggedOlderThan > untaggedAge) {
		untaggedAge = max(r.rule.UntaggedOlderThan, c.grace)
	}
	r.kept = map[digest.Digest]bool{}
	if untaggedAge < 0 {
		for _, m := range r.revisions {
			r.kept[m] = true
		}
		return nil
	}
	var roots []digest.Digest
	for _, ts := range r.tags {
		roots = append(roots, ts.target)
	}
	c.closure(r, roots)
	// Untagged manifests younger than the age stay, with what they reach;
	// the rest go, each under its doomed marker.
	for _, m := range r.revisions {
		if r.kept[m] {
			continue
		}
		if c.t0.Sub(r.revTimes[m]) < untaggedAge {
			c.closure(r, []digest.Digest{m})
		}
	}
	for _, m := range r.revisions {
		if r.kept[m] {
			continue
		}
		removed, err := c.removeManifest(ctx, r, m, untaggedAge)
		if err != nil {
			return err
		}
		if !removed {
			c.closure(r, []digest.Digest{m})
		}
	}
	return nil
}

// closure marks roots and everything they reach in r as kept: an index's
// children, and manifests whose subject is kept (signatures, SBOMs).
func (c *collection) closure(r *repoState, roots []digest.Digest) {
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		m := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if r.kept[m] || !r.revSet[m] {
			continue
		}
		r.kept[m] = true
		queue = append(queue, c.manifests[m].children...)
		queue = append(queue, r.referrers[m]...)
	}
}

// marker holds a doomed marker; done removes it.
type marker struct {
	c  *collection
	p  string
	at time.Time
}

// doom writes the doomed marker at p (see lease.go). A dry run, or an
// unsafe one, writes nothing.
func (c *collection) doom(ctx context.Context, p string) (*marker, error) {
	m := &marker{c: c, p: p, at: time.Now()}
	if c.opts.DryRun || c.opts.Unsafe {
		return m, nil
	}
	return m, c.s.d.PutContent(ctx, p, []byte(m.at.UTC().Format(time.RFC3339Nano)))
}

// live reports whether the marker still binds requests long enough for one
// more deletion.
func (m *marker) live() bool { return time.Since(m.at) < doomedTTL/2 }

func (m *marker) done(ctx context.Context) {
	if m.c.opts.DryRun || m.c.opts.Unsafe {
		return
	}
	// Removed even when the collection is being cancelled: a marker left
	// behind holds requests on its digest for doomedTTL.
	if err := m.c.s.d.Delete(context.WithoutCancel(ctx), m.p); err != nil && !errors.Is(err, driver.ErrNotFound) {
		m.c.log.Warn("garbage collection: removing a doomed marker", "path", m.p, "err", err)
	}
}

// young reports whether the file at p was written after t0 - age (or
// cannot be told), so what it stands for must stay.
func (c *collection) young(ctx context.Context, p string, age time.Duration) (bool, error) {
	fi, err := c.s.d.Stat(ctx, p)
	if errors.Is(err, driver.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	return c.t0.Sub(fi.ModTime) < age, nil
}

// leased reports whether a request renewed dg's lease within the grace
// period.
func (c *collection) leased(ctx context.Context, dg digest.Digest) (bool, error) {
	young, _, err := c.leasedSince(ctx, dg)
	return young, err
}

// leasedSince is leased, and also reports whether the lease was renewed
// since CollectGarbage was called (a request relied on dg meanwhile; the
// filesystem's timestamps are coarser than the clock, so the lock's
// second is a margin).
func (c *collection) leasedSince(ctx context.Context, dg digest.Digest) (young, since bool, err error) {
	if c.opts.Unsafe {
		return false, false, nil
	}
	fi, err := c.s.d.Stat(ctx, leasePath(dg))
	if errors.Is(err, driver.ErrNotFound) {
		return false, false, nil
	}
	if err != nil {
		return true, false, err
	}
	return c.t0.Sub(fi.ModTime) < c.grace, fi.ModTime.After(c.start), nil
}

func (c *collection) removed(r Removal) {
	c.mu.Lock()
	switch r.Kind {
	case "blob":
		c.report.BlobsDeleted++
		c.report.BytesFreed += r.Size
	case "manifest":
		c.report.ManifestsDeleted++
	case "tag":
		c.report.TagsDeleted++
	case "link":
		c.report.LinksDeleted++
	}
	c.mu.Unlock()
	c.log.Debug("garbage collection: removed", "what", r.String(), "dryrun", c.opts.DryRun)
	if c.opts.OnRemove != nil {
		c.opts.OnRemove(r)
	}
}

func (c *collection) count(field *int) {
	c.mu.Lock()
	*field++
	c.mu.Unlock()
}

func (c *collection) failed(ctx context.Context, what string, err error) {
	c.count(&c.report.Failed)
	c.log.WarnContext(ctx, "garbage collection: "+what, "err", err)
}

// removeTag removes a tag that retention drops, unless it moved since the
// mark (see moveTag).
func (c *collection) removeTag(ctx context.Context, r *repoState, tag string) (bool, error) {
	seen := r.tags[tag]
	rm := Removal{Kind: "tag", Repository: r.name, Tag: tag, Digest: seen.target}
	mk, err := c.doom(ctx, doomedTagPath(r.name, tag))
	if err != nil {
		return false, err
	}
	defer mk.done(ctx)
	testHook("tag doomed", seen.target)
	p := tagCurrentPath(r.name, tag)
	fi, err := c.s.d.Stat(ctx, p)
	if err != nil {
		return false, ignoreNotFound(err)
	}
	dg, err := c.s.readLink(ctx, p)
	if err != nil {
		return false, ignoreNotFound(err)
	}
	if dg != seen.target || !fi.ModTime.Equal(seen.modTime) || !mk.live() {
		c.count(&c.report.Kept)
		return false, nil
	}
	testHook("tag deleting", seen.target)
	if c.opts.DryRun {
		c.removed(rm)
		return true, nil
	}
	if err := c.s.deleteTag(ctx, r.name, tag); err != nil && !errors.Is(err, driver.ErrNotFound) {
		c.failed(ctx, "removing tag "+r.name+":"+tag, err)
		return false, nil
	}
	c.removed(rm)
	return true, nil
}

// removeManifest removes untagged manifest m from repository r unless a
// request relied on it since the mark: a push of it or of an index that
// lists it renews its lease, and a push of it rewrites its revision link.
func (c *collection) removeManifest(ctx context.Context, r *repoState, m digest.Digest, age time.Duration) (bool, error) {
	rm := Removal{Kind: "manifest", Repository: r.name, Digest: m}
	mk, err := c.doom(ctx, doomedPath(m))
	if err != nil {
		return false, err
	}
	defer mk.done(ctx)
	leased, err := c.leased(ctx, m)
	if err != nil {
		return false, err
	}
	youngLink, err := c.young(ctx, revisionLinkPath(r.name, m), age)
	if err != nil {
		return false, err
	}
	if leased || youngLink || !mk.live() {
		c.count(&c.report.Kept)
		return false, nil
	}
	if c.opts.DryRun {
		c.removed(rm)
		return true, nil
	}
	if rf := c.manifests[m]; rf.subject != "" {
		if err := c.s.d.Delete(ctx, referrerLinkPath(r.name, rf.subject, m)); err != nil && !errors.Is(err, driver.ErrNotFound) {
			c.failed(ctx, "removing referrer link of "+r.name+"@"+m.String(), err)
			return false, nil
		}
	}
	if err := c.s.d.Delete(ctx, path.Dir(revisionLinkPath(r.name, m))); err != nil && !errors.Is(err, driver.ErrNotFound) {
		c.failed(ctx, "removing manifest "+r.name+"@"+m.String(), err)
		return false, nil
	}
	c.removed(rm)
	return true, nil
}
