package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
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
