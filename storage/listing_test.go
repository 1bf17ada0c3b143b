package storage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

const someDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

// writeFiles writes each driver path (with a small content) straight into
// the filesystem driver's root: faster than the driver's durable writes,
// and listings only read the tree.
func writeFiles(t testing.TB, root string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(someDigest), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// addRepos makes each name a repository: it has a _manifests directory.
func addRepos(t testing.TB, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		writeFiles(t, root, revisionLinkPath(n, someDigest))
	}
}

// addTags tags repository name.
func addTags(t testing.TB, root, name string, tags []string) {
	t.Helper()
	for _, tag := range tags {
		writeFiles(t, root, tagCurrentPath(name, tag))
	}
}

// keyOrder sorts names as the catalog promises: by name followed by "/".
func keyOrder(names []string) []string {
	out := slices.Clone(names)
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(a+"/", b+"/") })
	return out
}

// refCatalog is the catalog page computed the obvious way.
func refCatalog(repos []string, p Page) ([]string, bool) {
	var out []string
	for _, r := range keyOrder(repos) {
		if p.Last == "" || r+"/" > p.Last+"/" {
			out = append(out, r)
		}
	}
	if p.N >= 0 && len(out) > p.N {
		return out[:p.N], true
	}
	return out, false
}

// refTags is the tag page computed the obvious way.
func refTags(tags []string, p Page) ([]string, bool) {
	var out []string
	for _, t := range tags {
		if t > p.Last {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	if p.N >= 0 && len(out) > p.N {
		return out[:p.N], true
	}
	return out, false
}

func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// walkPages follows the pages of n from the start, as a client following
// Link headers does, and returns everything listed.
func walkPages(t *testing.T, n int, list func(Page) ([]string, bool, error)) []string {
	t.Helper()
	var all []string
	p := Page{N: n}
	for range 10000 {
		got, more, err := list(p)
		if err != nil {
			t.Fatalf("page %+v: %v", p, err)
		}
		if len(got) > n {
			t.Fatalf("page %+v has %d entries", p, len(got))
		}
		all = append(all, got...)
		if !more {
			return all
		}
		if len(got) == 0 {
			t.Fatalf("page %+v is empty but says more follow", p)
		}
		p.Last = got[len(got)-1]
	}
	t.Fatalf("pages of %d never end", n)
	return nil
}

func TestCatalogOrder(t *testing.T) {
	s, root := newStore(t)
	repos := []string{"a", "a-b", "a/b", "a/b/c", "a.c/d", "a0", "a_b", "b/app", "c/d/e", "0/x", "9"}
	addRepos(t, root, repos...)
	// Not repositories: only layers, only uploads, a parent with nothing
	// of its own, a stray file.
	writeFiles(t, root,
		layerLinkPath("only/layers", someDigest),
		uploadStartedPath("only/uploads", "u1"),
		repoPath("stray"),
		repoPath("a")+"/file",
	)
	want := []string{"0/x", "9", "a-b", "a.c/d", "a", "a/b", "a/b/c", "a0", "a_b", "b/app", "c/d/e"}
	got, more, err := s.Catalog(ctx, Page{N: -1})
	if err != nil || more || !slices.Equal(got, want) {
		t.Fatalf("Catalog = %v more=%v %v; want %v", got, more, err, want)
	}
	if !slices.Equal(keyOrder(repos), want) {
		t.Fatalf("the reference order %v is not the expected %v", keyOrder(repos), want)
	}
	for _, tc := range []struct {
		page Page
		want []string
		more bool
	}{
		{Page{N: 3}, []string{"0/x", "9", "a-b"}, true},
		{Page{N: 2, Last: "a"}, []string{"a/b", "a/b/c"}, true},                         // nested in last
		{Page{N: 2, Last: "a/b"}, []string{"a/b/c", "a0"}, true},                        // nested in last, deeper
		{Page{N: 1, Last: "a-b"}, []string{"a.c/d"}, true},                              // a sibling before "a"
		{Page{N: 2, Last: "a.c"}, []string{"a.c/d", "a"}, true},                         // last a parent, not a repository
		{Page{N: 5, Last: "a/a"}, []string{"a/b", "a/b/c", "a0", "a_b", "b/app"}, true}, // absent
		{Page{N: 5, Last: "a-"}, []string{"a-b", "a.c/d", "a", "a/b", "a/b/c"}, true},   // absent, sorts before a-b
		{Page{N: 2, Last: "a/b/c/d"}, []string{"a0", "a_b"}, true},
		{Page{N: 2, Last: "b"}, []string{"b/app", "c/d/e"}, false},
		{Page{N: 2, Last: "c/d/e"}, nil, false},
		{Page{N: 0}, nil, true},
		{Page{N: 0, Last: "c/d/e"}, nil, false},
		{Page{N: -1, Last: "a/b/c"}, []string{"a0", "a_b", "b/app", "c/d/e"}, false},
		{Page{N: 3, Last: "~"}, nil, false},
	} {
		got, more, err := s.Catalog(ctx, tc.page)
		if err != nil || !slices.Equal(got, tc.want) || more != tc.more {
			t.Errorf("Catalog(%+v) = %v more=%v %v; want %v more=%v", tc.page, got, more, err, tc.want, tc.more)
		}
	}
	for n := 1; n <= len(want)+2; n++ {
		all := walkPages(t, n, func(p Page) ([]string, bool, error) { return s.Catalog(ctx, p) })
		if !slices.Equal(all, want) {
			t.Errorf("pages of %d: %v; want %v", n, all, want)
		}
	}
}

func TestCatalogEmpty(t *testing.T) {
	s, _ := newStore(t)
	if got, more, err := s.Catalog(ctx, Page{N: 10}); err != nil || more || len(got) != 0 {
		t.Fatalf("Catalog of an empty store = %v more=%v %v", got, more, err)
	}
}

// A repository whose first batch of children (nested repositories with
// names of digits, which sort before "_manifests") does not reach
// _manifests is still listed, before its nested repositories.
func TestCatalogRepositoryWithManyNestedOnes(t *testing.T) {
	s, root := newStore(t)
	var repos []string
	for i := range 150 {
		repos = append(repos, fmt.Sprintf("r/%03d", i), fmt.Sprintf("q/%03d", i))
	}
	repos = append(repos, "r", "s")
	addRepos(t, root, repos...)
	writeFiles(t, root, layerLinkPath("q", someDigest)) // q is not a repository
	for _, p := range []Page{{N: 3}, {N: 3, Last: "q/148"}, {N: 2, Last: "q/149"}, {N: 1, Last: "r"}, {N: 200}, {N: -1}} {
		got, more, err := s.Catalog(ctx, p)
		want, wantMore := refCatalog(repos, p)
		if err != nil || !slices.Equal(got, want) || more != wantMore {
			t.Errorf("Catalog(%+v) = %v more=%v %v; want %v more=%v", p, got, more, err, want, wantMore)
		}
	}
	if got, _, _ := s.Catalog(ctx, Page{N: 2, Last: "q/149"}); !slices.Equal(got, []string{"r", "r/000"}) {
		t.Errorf("after q/149: %v, want r before r/000", got)
	}
}

// randomName builds a name of up to three components from a small
// alphabet, so that prefixes, '-' and '.' collide often.
func randomName(rng *rand.Rand) string {
	comps := []string{"a", "b", "a-b", "a.b", "a-a", "a0", "0", "9", "a--b", "a_b", "ab"}
	parts := make([]string, 1+rng.IntN(3))
	for i := range parts {
		parts[i] = comps[rng.IntN(len(comps))]
	}
	return strings.Join(parts, "/")
}

func TestCatalogRandomAgainstReference(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			s, root := newStore(t)
			seen := map[string]bool{}
			var repos, others []string
			for range 25 {
				name := randomName(rng)
				if seen[name] {
					continue
				}
				seen[name] = true
				if rng.IntN(3) > 0 {
					repos = append(repos, name)
				} else {
					others = append(others, name)
					writeFiles(t, root, layerLinkPath(name, someDigest))
				}
			}
			addRepos(t, root, repos...)
			lasts := append([]string{"", "~", "0", "a-", "a/", "a.b/z"}, repos...)
			lasts = append(lasts, others...)
			for _, r := range repos {
				lasts = append(lasts, r+"-", r+".", r+"/0", r[:len(r)-1])
			}
			for n := 0; n <= len(repos)+1; n++ {
				for _, last := range lasts {
					p := Page{N: n, Last: last}
					got, more, err := s.Catalog(ctx, p)
					want, wantMore := refCatalog(repos, p)
					if err != nil || !slices.Equal(got, want) || more != wantMore {
						t.Fatalf("repos %v: Catalog(%+v) = %v more=%v %v; want %v more=%v", keyOrder(repos), p, got, more, err, want, wantMore)
					}
				}
				if n > 0 {
					if all := walkPages(t, n, func(p Page) ([]string, bool, error) { return s.Catalog(ctx, p) }); !slices.Equal(all, keyOrder(repos)) {
						t.Fatalf("pages of %d: %v; want %v", n, all, keyOrder(repos))
					}
				}
			}
		})
	}
}

func TestTagsPrefixChains(t *testing.T) {
	s, root := newStore(t)
	tags := windowsNames([]string{"v", "v-1", "v.1", "v1", "v1-rc", "v1-rc.1", "v1.0", "v1.0-rc", "v1.0-rc.1", "v1.0.1",
		"v1.0.1-alpine", "v10", "v1_0", "V1", "_x", "v1-", "v1--", "v1.", "1", "1-a", "1.0"})
	addRepos(t, root, "app")
	addTags(t, root, "app", tags)
	want := windowsNames([]string{"1", "1-a", "1.0", "V1", "_x", "v", "v-1", "v.1", "v1", "v1-", "v1--", "v1-rc", "v1-rc.1", "v1.", "v1.0",
		"v1.0-rc", "v1.0-rc.1", "v1.0.1", "v1.0.1-alpine", "v10", "v1_0"})
	got, more, err := s.Tags(ctx, "app", Page{N: -1})
	if err != nil || more || !slices.Equal(got, want) {
		t.Fatalf("Tags = %v more=%v %v; want %v", got, more, err, want)
	}
	lasts := append([]string{"", "0", "v0", "v1-r", "v1.0-rc", "v1.0-", "v1.0.", "z", "~"}, tags...)
	for n := 0; n <= len(tags)+1; n++ {
		for _, last := range lasts {
			p := Page{N: n, Last: last}
			got, more, err := s.Tags(ctx, "app", p)
			want, wantMore := refTags(tags, p)
			if err != nil || !slices.Equal(got, want) || more != wantMore {
				t.Errorf("Tags(%+v) = %v more=%v %v; want %v more=%v", p, got, more, err, want, wantMore)
			}
		}
		if n > 0 {
			if all := walkPages(t, n, func(p Page) ([]string, bool, error) { return s.Tags(ctx, "app", p) }); !slices.Equal(all, want) {
				t.Errorf("pages of %d: %v; want %v", n, all, want)
			}
		}
	}
}

// A long run of tags that sort before their prefix in key order makes the
// listing jump to the prefix.
func TestTagsAcrossBatches(t *testing.T) {
	s, root := newStore(t)
	tags := []string{"a", "b"}
	for i := range 300 {
		tags = append(tags, fmt.Sprintf("a-%04d", i), fmt.Sprintf("0%04d", i))
	}
	addRepos(t, root, "app")
	addTags(t, root, "app", tags)
	for _, p := range []Page{{N: 1}, {N: 2}, {N: 60}, {N: 100}, {N: 1, Last: "00249"}, {N: 3, Last: "00299"}, {N: 2, Last: "a"},
		{N: 2, Last: "a-0298"}, {N: 500}, {N: -1}, {N: 0, Last: "a-0299"}, {N: 0, Last: "b"}} {
		got, more, err := s.Tags(ctx, "app", p)
		want, wantMore := refTags(tags, p)
		if err != nil || !slices.Equal(got, want) || more != wantMore {
			t.Errorf("Tags(%+v) = %v more=%v %v; want %v more=%v", p, got, more, err, want, wantMore)
		}
	}
	sorted, _ := refTags(tags, Page{N: -1})
	for _, n := range []int{1, 7, 99, 100, 101, 350} {
		if all := walkPages(t, n, func(p Page) ([]string, bool, error) { return s.Tags(ctx, "app", p) }); !slices.Equal(all, sorted) {
			t.Errorf("pages of %d: %d tags, want %d (first difference at %d)", n, len(all), len(sorted), firstDifference(all, sorted))
		}
	}
}

// windowsNames drops, on Windows, the names its file system cannot keep
// apart or keep at all: a trailing dot is stripped from a file name, and
// names differing only in case are one file (so only lower case is kept).
// Tags like these are a known limit of the filesystem driver on Windows.
func windowsNames(names []string) []string {
	if runtime.GOOS != "windows" {
		return names
	}
	var out []string
	for _, n := range names {
		if !strings.HasSuffix(n, ".") && !strings.Contains(n, "..") && n == strings.ToLower(n) {
			out = append(out, n)
		}
	}
	return out
}

func TestTagsRandomAgainstReference(t *testing.T) {
	const first, rest = "aAv1_", "aAv1_.-"
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			s, root := newStore(t)
			seen := map[string]bool{}
			var tags []string
			for range 30 {
				b := []byte{first[rng.IntN(len(first))]}
				for range rng.IntN(4) {
					b = append(b, rest[rng.IntN(len(rest))])
				}
				tag := string(b)
				if seen[tag] || len(windowsNames([]string{tag})) == 0 {
					continue
				}
				seen[tag] = true
				tags = append(tags, tag)
			}
			addRepos(t, root, "r")
			addTags(t, root, "r", tags)
			lasts := append([]string{"", "~", "-", "a-", "v.", "A"}, tags...)
			for _, tag := range tags {
				lasts = append(lasts, tag+"-", tag+".", tag+"/", tag[:len(tag)-1])
			}
			for n := -1; n <= len(tags)+1; n++ {
				for _, last := range lasts {
					p := Page{N: n, Last: last}
					got, more, err := s.Tags(ctx, "r", p)
					want, wantMore := refTags(tags, p)
					if err != nil || !slices.Equal(got, want) || more != wantMore {
						t.Fatalf("tags %v: Tags(%+v) = %v more=%v %v; want %v more=%v", tags, p, got, more, err, want, wantMore)
					}
				}
				if n > 0 {
					want, _ := refTags(tags, Page{N: -1})
					if all := walkPages(t, n, func(p Page) ([]string, bool, error) { return s.Tags(ctx, "r", p) }); !slices.Equal(all, want) {
						t.Fatalf("pages of %d: %v; want %v", n, all, want)
					}
				}
			}
		})
	}
}

func TestTagsOfRepositoriesWithoutTags(t *testing.T) {
	s, root := newStore(t)
	addRepos(t, root, "untagged")
	writeFiles(t, root, layerLinkPath("blobs/only", someDigest))
	addRepos(t, root, "parent/child")
	for _, name := range []string{"untagged", "blobs/only"} {
		if got, more, err := s.Tags(ctx, name, Page{N: 10}); err != nil || more || len(got) != 0 {
			t.Errorf("Tags(%s) = %v more=%v %v; want none", name, got, more, err)
		}
	}
	for _, name := range []string{"parent", "absent"} {
		if _, _, err := s.Tags(ctx, name, Page{N: 10}); !errors.Is(err, ErrNameUnknown) {
			t.Errorf("Tags(%s): %v; want ErrNameUnknown", name, err)
		}
	}
}

// countingDriver counts the listing calls a store makes.
type countingDriver struct {
	driver.Driver
	listPage, list, stat atomic.Int64
}

func (c *countingDriver) ListPage(ctx context.Context, p, after string, limit int) ([]driver.Entry, error) {
	c.listPage.Add(1)
	return c.Driver.ListPage(ctx, p, after, limit)
}

func (c *countingDriver) List(ctx context.Context, p string) ([]string, error) {
	c.list.Add(1)
	return c.Driver.List(ctx, p)
}

func (c *countingDriver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	c.stat.Add(1)
	return c.Driver.Stat(ctx, p)
}

func (c *countingDriver) reset() { c.listPage.Store(0); c.list.Store(0); c.stat.Store(0) }

func newCountingStore(t *testing.T) (*Store, *countingDriver, string) {
	t.Helper()
	root := t.TempDir()
	fs, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	cd := &countingDriver{Driver: fs}
	return New(cd), cd, root
}

// A catalog page costs about one listing per repository it returns, and a
// tag page a few listings, whatever the registry holds.
func TestListingCostFollowsThePage(t *testing.T) {
	s, cd, root := newCountingStore(t)
	// Leaves (flatNNNN) and parents (teamNN, and bench before them) side
	// by side, so that reading ahead can go wrong both ways.
	repos := []string{"bench/tags"}
	for i := range 1000 {
		repos = append(repos, fmt.Sprintf("team%02d/app%04d", i%20, i), fmt.Sprintf("flat%04d", i))
	}
	addRepos(t, root, repos...)
	sorted := keyOrder(repos)
	for _, p := range []Page{{N: 100}, {N: 100, Last: "team07/app0567"}, {N: 100, Last: sorted[1000]}, {N: 100, Last: "flat0999"},
		{N: 100, Last: "flat0950"}, {N: 100, Last: "bench/tags"}} {
		cd.reset()
		got, more, err := s.Catalog(ctx, p)
		want, wantMore := refCatalog(repos, p)
		if err != nil || !slices.Equal(got, want) || more != wantMore {
			t.Fatalf("Catalog(%+v) = %d repositories more=%v %v; want %d more=%v", p, len(got), more, err, len(want), wantMore)
		}
		// One listing per repository seen (the page and the one after),
		// plus the directories on the way, and at most maxReadAhead read
		// ahead in vain (after flat0950, the leaves' run makes the walk
		// read ahead teams it will not need).
		if n := cd.listPage.Load(); n > 101+4+maxReadAhead || cd.stat.Load() != 0 || cd.list.Load() != 0 {
			t.Errorf("Catalog(%+v) of %d repositories: %d ListPage, %d Stat, %d List calls", p, len(repos), n, cd.stat.Load(), cd.list.Load())
		}
	}

	var tags []string
	for major := range 50 {
		for minor := range 25 {
			v := fmt.Sprintf("%d.%d", major, minor)
			tags = append(tags, v, v+"-alpine", v+".0", v+".0-alpine")
		}
	}
	addTags(t, root, "team00/app0000", tags)
	all, _ := refTags(tags, Page{N: -1})
	for _, p := range []Page{{N: 100}, {N: 100, Last: all[2500]}, {N: 100, Last: "7.1"}, {N: 100, Last: all[4950]}} {
		cd.reset()
		got, more, err := s.Tags(ctx, "team00/app0000", p)
		want, wantMore := refTags(tags, p)
		if err != nil || !slices.Equal(got, want) || more != wantMore {
			t.Fatalf("Tags(%+v) = %v more=%v %v; want %v more=%v", p, got, more, err, want, wantMore)
		}
		if n, st := cd.listPage.Load(), cd.stat.Load(); n > 3 || st != 0 || cd.list.Load() != 0 {
			t.Errorf("Tags(%+v) of %d tags: %d ListPage, %d Stat, %d List calls", p, len(tags), n, st, cd.list.Load())
		}
	}

	// 300 tags that sort before their prefix "a" in key order: the
	// listing jumps to "a" instead of reading its way there.
	tags = []string{"a"}
	for i := range 300 {
		tags = append(tags, fmt.Sprintf("a-%04d", i))
	}
	addTags(t, root, "jump", tags)
	cd.reset()
	if got, more, err := s.Tags(ctx, "jump", Page{N: 1}); err != nil || !more || !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Tags(jump, n=1) = %v more=%v %v", got, more, err)
	}
	if n, st := cd.listPage.Load(), cd.stat.Load(); n != 2 || st != 0 {
		t.Errorf("Tags(jump, n=1): %d ListPage and %d Stat calls, want 2 and 0", n, st)
	}
}
