package storage

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/berth-registry/berth/storage/driver"
)

// Listings cost what their page costs, not what the registry holds: they
// read directories with driver.ListPage, in key order, from where the page
// starts, in batches, and stop once they know the page and whether more
// follow. On an object store a batch is one request; on a filesystem it is
// one read of the directory, without a stat per entry.

// Page selects part of a sorted listing: entries after Last, at most N of
// them (N < 0: all).
type Page struct {
	N    int
	Last string
}

// listBatch is how many children one ListPage call asks for when a page
// of n is wanted: the page and the entry after it, which tells whether
// more follow; at least 100, since a call costs about as much for a few
// entries as for many; at most 1,000, what an object store returns in one
// response. n < 0 (everything) reads whole directories (0).
func listBatch(n int) int {
	if n < 0 {
		return 0
	}
	return min(max(n+1, 100), 1000)
}

// tagBatch is how many entries a tag page's first ListPage asks for: the
// page, the tag after it, and a quarter more, so that the tags that come
// after the page's last in key order but may belong to the page (its
// prefixes: "1.2.0" and "1.2" after "1.2.0-alpine") usually come in the
// same call; at least 100. The tags directory is flat, so unlike the
// catalog's batches this one is not capped: every entry read is a
// candidate, and one call costs an object store a request per 1,000
// entries, as several calls would. n < 0 (everything) reads the whole
// directory (0).
func tagBatch(n int) int {
	if n < 0 {
		return 0
	}
	return max(n+1+(n+1)/4, 100)
}

// startAt returns the after argument of a ListPage that starts at the
// directory name: the listing then begins with the key name+"/".
//
// The keys that sort between name and name+"/" are name followed by a
// byte below '/' ('+', '-' or '.', in the alphabet driver.CheckPath
// allows) and more bytes of that alphabet, all below '~'. So name+".~"
// sorts after every one of them and before name+"/". Callers still compare
// what they get: the bound saves reading the siblings "name-…" and
// "name.…", which can be many, and correctness does not depend on it.
func startAt(name string) string { return name + ".~" }

// children reads the children of one directory lazily, in key order, a
// batch at a time.
type children struct {
	d     driver.Driver
	dir   string
	after string // the key after which the next batch starts
	limit int    // entries per batch (≤ 0: all)
	buf   []driver.Entry
	done  bool // everything after after has been read into buf
}

// fill reads the next batch into buf, replacing what buf held. A batch
// shorter than the limit is the directory's last: ListPage returns every
// child after after up to limit, so only the end makes it short.
func (c *children) fill(ctx context.Context) error {
	es, err := c.d.ListPage(ctx, c.dir, c.after, c.limit)
	if err != nil {
		return err
	}
	c.take(es)
	return nil
}

// take puts a batch read from after into buf, as fill does.
func (c *children) take(es []driver.Entry) {
	c.buf = es
	if c.limit <= 0 || len(es) < c.limit {
		c.done = true
	}
	if len(es) > 0 {
		c.after = es[len(es)-1].Key()
	}
}

// hasDir reports whether the directory has a child directory name. It
// reads the first batch into buf if buf is empty, and, when the batch ends
// before name's place, probes for it with one more ListPage call.
func (c *children) hasDir(ctx context.Context, name string) (bool, error) {
	if len(c.buf) == 0 && !c.done {
		if err := c.fill(ctx); err != nil {
			return false, err
		}
	}
	key := name + "/"
	for _, e := range c.buf {
		if e.Key() == key {
			return true, nil
		}
	}
	if c.done || (len(c.buf) > 0 && c.buf[len(c.buf)-1].Key() > key) {
		return false, nil
	}
	es, err := c.d.ListPage(ctx, c.dir, startAt(name), 1)
	if err != nil {
		return false, err
	}
	return len(es) == 1 && es[0].Key() == key, nil
}

// Tags lists the tags of repository name in ASCII order (Go's string
// order), as the OCI Distribution spec requires.
//
// The tags directory is read in key order, where a tag sorts as its name
// and "/": the two orders differ only where a tag is a prefix of another
// that continues with '-' or '.' (plain "v1" < "v1-rc", key "v1-rc/" <
// "v1/"). Reading starts after page.Last and stops once no unread tag can
// be among the page's (see tagPage). A tag is its directory: nothing more
// is read per tag, since a tag's directory exists only while its current
// link does (see moveTag and deleteTag), but for a moment while it is
// first written.
func (s *Store) Tags(ctx context.Context, name string, page Page) ([]string, bool, error) {
	if err := ValidateName(name); err != nil {
		return nil, false, err
	}
	tags, more, err := s.tagPage(ctx, name, page)
	if errors.Is(err, driver.ErrNotFound) {
		// No tags directory: the repository has no tags, or is not one.
		if ok, err := s.repositoryExists(ctx, name); err != nil || !ok {
			if err == nil {
				err = ErrNameUnknown
			}
			return nil, false, err
		}
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return tags, more, nil
}

// tagPage returns the page of tags of repository name and whether more
// follow, or an error wrapping driver.ErrNotFound when the repository has
// no tags directory.
//
// It reads the tags directory in key order starting after page.Last:
// every tag t > Last in plain order has key t+"/" > Last (Last is a
// prefix of t, or they differ at a byte where t's is greater), so the
// listing is a superset, and the entries ≤ Last in plain order are
// dropped. Reading goes on until the want = N+1 smallest tags in plain
// order (the page and the one that says more follow) are known, or the
// directory is read to its end.
//
// When are unread tags irrelevant? Let K be the last key read and M the
// greatest of the want smallest tags read. An unread tag Z (key Z+"/" >
// K ≥ M+"/") belongs to the page only if Z < M in plain order. Plain and
// key order of two tags differ only when one is a proper prefix of the
// other and the longer continues, right after it, with a byte below '/':
// so Z is a proper prefix of M and M[len(Z)] < '/'. There are few such Z,
// and reading can stop once none is unread. Reading does not crawl towards
// them through the directory: it jumps to the one whose key is smallest
// (the longest), since no tag between K and it can enter the page. A tag
// that enters pushes M out; the new M is a smaller tag, whose such
// prefixes are prefixes of the old M too, so the jumps only move forward.
func (s *Store) tagPage(ctx context.Context, name string, page Page) ([]string, bool, error) {
	want := page.N + 1
	if page.N < 0 {
		want = -1
	}
	c := children{d: s.d, dir: tagsPath(name), after: page.Last, limit: tagBatch(page.N)}
	var tags []string // read, after Last; sorted
	read := func() error {
		if err := c.fill(ctx); err != nil {
			return err
		}
		for _, e := range c.buf {
			if e.IsDir && e.Name > page.Last {
				tags = append(tags, e.Name)
			}
		}
		c.buf = nil
		slices.Sort(tags)
		if want >= 0 && len(tags) > want {
			tags = tags[:want] // the rest cannot be in the page
		}
		return nil
	}
	if err := read(); err != nil {
		return nil, false, err
	}
	for !c.done {
		if want >= 0 && len(tags) >= want {
			y, ok := unreadPrefix(tags[want-1], page.Last, c.after)
			if !ok {
				break
			}
			// A jump needs the few prefixes of the page's last tag; one
			// response of an object store holds 1,000 entries.
			c.after, c.limit = max(c.after, startAt(y)), min(c.limit, 1000)
		}
		if err := read(); err != nil {
			return nil, false, err
		}
	}
	if want >= 0 && len(tags) >= want {
		return tags[:page.N], true, nil
	}
	return tags, false, nil
}

// unreadPrefix returns the longest proper prefix y of tag m that could
// still precede m in plain order although it is not read yet: m
// continues after y with a byte below '/', y sorts after last, and y's key
// after the last key read.
func unreadPrefix(m, last, readTo string) (string, bool) {
	for i := len(m) - 1; i > 0; i-- {
		if y := m[:i]; m[i] < '/' && y > last && y+"/" > readTo {
			return y, true
		}
	}
	return "", false
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

// allTags returns the name of every tag directory of repository name, in
// no particular order, including tags whose current link never landed:
// its callers read each tag's link anyway, and skip the tags without one.
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
		tags = append(tags, path.Base(e))
	}
	return tags, nil
}

// Catalog lists the repositories that hold manifests (a _manifests
// directory), in key order: sorted by name followed by "/", which is the
// order of an object store's listing of the repositories tree. It differs
// from plain string order only where a name is a prefix of another that
// continues with '-' or '.': plain order is "a" < "a-b" < "a.c/d" < "a/b"
// < "a0", key order "a-b/" < "a.c/d/" < "a/" < "a/b/" < "a0/". A
// repository comes right before the repositories nested in it. Page.Last is compared the same way, so following the pages
// yields every repository once.
//
// The tree is walked depth first, each directory's children read lazily
// in batches, and the walk stops once N+1 repositories are known. With
// Last, each directory on the way to Last is read from Last's component in
// it, so the subtrees before Last are never read. The first listings of
// the next few subdirectories are read ahead, concurrently: after a run of
// leaf directories, as many as the run is long, at most maxReadAhead, and
// fewer than the repositories the page still needs.
func (s *Store) Catalog(ctx context.Context, page Page) ([]string, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := catalogWalk{d: s.d, want: page.N + 1, limit: listBatch(page.N)}
	defer func() {
		cancel() // the reads ahead that the page did not need
		w.ahead.Wait()
	}()
	if page.N < 0 {
		w.want = -1
	}
	from := ""
	if page.Last != "" {
		from = page.Last + "/"
	}
	if _, err := w.visit(ctx, catalogDir{path: repositoriesPath(), rest: from}); err != nil {
		return nil, false, err
	}
	if page.N >= 0 && len(w.repos) > page.N {
		return w.repos[:page.N], true, nil
	}
	return w.repos, false, nil
}

// maxReadAhead is how many subdirectories' first listings a catalog walk
// reads ahead in each directory it walks.
const maxReadAhead = 16

// catalogWalk is one catalog page's walk of the repositories tree.
type catalogWalk struct {
	d     driver.Driver
	want  int // repositories to find (< 0: all)
	limit int // ListPage batch
	repos []string
	ahead sync.WaitGroup // reads ahead in flight
}

func (w *catalogWalk) full() bool { return w.want >= 0 && len(w.repos) >= w.want }

// catalogDir is a directory of the repositories tree that the walk visits.
type catalogDir struct {
	path   string
	prefix string // its repository's key: "" for the tree's root, "a/b/" below
	// rest is what is left of the page's start key (Last+"/") below this
	// directory when the start lies inside it: the children before rest's
	// first component are skipped, that one is visited with the
	// remainder, and the ones after it wholly.
	rest string
	// self says whether the directory itself sorts after the start, and
	// so is listed if it is a repository.
	self  bool
	first *listing // its first batch of children, read ahead; nil: not
}

// after is where the directory's listing starts.
func (d catalogDir) after() string {
	if d.rest == "" {
		return ""
	}
	comp, _, _ := strings.Cut(d.rest, "/")
	return startAt(comp)
}

// listing is a ListPage call made ahead of its use.
type listing struct {
	done chan struct{}
	es   []driver.Entry
	err  error
}

// readAhead starts reading d's first batch of children.
func (w *catalogWalk) readAhead(ctx context.Context, d *catalogDir) {
	l := &listing{done: make(chan struct{})}
	d.first = l
	w.ahead.Add(1)
	go func() {
		defer w.ahead.Done()
		defer close(l.done)
		l.es, l.err = w.d.ListPage(ctx, d.path, d.after(), w.limit)
	}()
}

// visit walks directory d, and reports whether it is a leaf: a directory
// without subdirectories (when the walk went through all of it).
func (w *catalogWalk) visit(ctx context.Context, d catalogDir) (leaf bool, err error) {
	c := children{d: w.d, dir: d.path, limit: w.limit, after: d.after()}
	if d.first != nil {
		select {
		case <-d.first.done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if d.first.err != nil {
			return false, skipGone(d.first.err)
		}
		c.take(d.first.es)
	}
	var comp, rest string
	inside := d.rest != ""
	if inside {
		comp, rest, _ = strings.Cut(d.rest, "/")
	}
	if d.self {
		ok, err := c.hasDir(ctx, "_manifests")
		if err != nil {
			return false, skipGone(err)
		}
		if ok {
			w.repos = append(w.repos, strings.TrimSuffix(d.prefix, "/"))
			if w.full() {
				return false, nil
			}
		}
	}
	leaf = true
	leaves := 0 // subdirectories just visited that were leaves, in a row
	for {
		if len(c.buf) == 0 {
			if c.done {
				return leaf, nil
			}
			if err := c.fill(ctx); err != nil {
				return false, skipGone(err)
			}
			continue
		}
		var subs []catalogDir
		for _, e := range c.buf {
			// Other children are a repository's own: _manifests, _layers,
			// _uploads, _referrers (a name's components start with a
			// letter or digit).
			if !e.IsDir || strings.HasPrefix(e.Name, "_") {
				continue
			}
			leaf = false
			sub := catalogDir{path: path.Join(d.path, e.Name), prefix: d.prefix + e.Name + "/", self: true}
			if inside {
				switch k := e.Key(); {
				case k < comp+"/":
					continue
				case k == comp+"/":
					sub.rest, sub.self = rest, false
				}
			}
			subs = append(subs, sub)
		}
		c.buf = nil
		ahead := 0 // subs[:ahead] are visited or being read ahead
		for i := range subs {
			// Read ahead as many subdirectories as the leaves just
			// visited in a row, at most maxReadAhead, and fewer than the
			// repositories the page still needs: the siblings of leaves
			// are mostly leaves, which hold one repository each, so
			// what is read ahead is mostly used.
			window := 1 + min(maxReadAhead, leaves)
			if w.want >= 0 {
				window = min(window, w.want-len(w.repos))
			}
			for ; ahead < len(subs) && ahead < i+window; ahead++ {
				if ahead > i {
					w.readAhead(ctx, &subs[ahead])
				}
			}
			subLeaf, err := w.visit(ctx, subs[i])
			if err != nil {
				return false, err
			}
			if w.full() {
				return false, nil
			}
			if subLeaf {
				leaves++
			} else {
				leaves = 0
			}
		}
	}
}

// skipGone treats a directory that vanished while the walk was in it (a
// repository being deleted) as empty.
func skipGone(err error) error {
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	return err
}
