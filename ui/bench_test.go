package ui_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
	"github.com/berth-registry/berth/ui"
)

// TestTokenBatching: a user who may pull 5 repositories among 1,000 costs
// a few token requests for the whole listing (many scopes per request),
// and none more while the session's answers are fresh.
func TestTokenBatching(t *testing.T) {
	e := newEnv(t, modeToken)
	names := repoNames(1000)
	for i := range 5 {
		names = append(names, "team/app"+string(rune('a'+i)))
	}
	start := time.Now()
	seed(t, e.dir, e.store, names)
	t.Logf("seeded in %v", time.Since(start))
	alice := e.browser()
	before := e.tokenRequests.Load()
	start = time.Now()
	// Signing in is one request, and leads to the listing.
	p := alice.login("alice", passwords["alice"])
	t.Logf("signed in and listed in %v", time.Since(start))
	got := parse(t, p.body).values("data-repository")
	if !slices.Equal(got, []string{"team/appa", "team/appb", "team/appc", "team/appd", "team/appe"}) {
		t.Fatalf("alice sees %v", got)
	}
	asked := e.tokenRequests.Load() - before - 1
	// 1,005 names read in catalog batches of 51, 204 and 750, each asked
	// about in requests of at most 200 names: 7 requests.
	if asked > 7 {
		t.Errorf("%d token requests for one listing", asked)
	}
	before = e.tokenRequests.Load()
	alice.get("/ui/")
	alice.get("/ui/?q=app")
	if again := e.tokenRequests.Load() - before; again != 0 {
		t.Errorf("%d token requests for listings within the cache's lifetime", again)
	}
	t.Logf("first listing: %d token requests", asked)

	// A search that matches every name, by a visitor who may pull them
	// all, asks about one token request's worth, not about all 1,000.
	admin := e.browser()
	admin.login("admin", passwords["admin"])
	before = e.tokenRequests.Load()
	p = admin.get("/ui/?q=repo")
	if got := parse(t, p.body).values("data-repository"); len(got) != 50 || got[0] != "ns0/repo00000" {
		t.Fatalf("admin's search shows %d repositories from %v", len(got), got[:min(len(got), 1)])
	}
	if asked := e.tokenRequests.Load() - before; asked != 1 {
		t.Errorf("%d token requests for a search matching 1,000 names, want 1", asked)
	}
}

// benchRegistry is the pages (no auth) on a store of n repositories.
func benchRegistry(b *testing.B, n int) http.Handler {
	dir := b.TempDir()
	drv, err := filesystem.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { drv.Close() }) // before the directory goes: Windows keeps open files
	store := storage.New(drv)
	seed(b, dir, store, repoNames(n))
	h, err := ui.New(ui.Config{Store: store, Driver: drv})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

func benchPage(b *testing.B, h http.Handler, path, want string) {
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), want) {
			b.Fatalf("%s: %d", path, w.Code)
		}
	}
}

// BenchmarkRepositories10k: the first page of a 10,000-repository
// registry, then a later one, then a search that matches 11 names, and
// one that matches none (the whole catalog walked).
func BenchmarkRepositories10k(b *testing.B) {
	h := benchRegistry(b, 10000)
	b.Run("first", func(b *testing.B) { benchPage(b, h, "/ui/", `data-repository="ns0/repo00000"`) })
	b.Run("later", func(b *testing.B) { benchPage(b, h, "/ui/?last=ns5/repo05005", `data-repository="ns5/repo05015"`) })
	b.Run("search", func(b *testing.B) { benchPage(b, h, "/ui/?q=repo0999", `data-repository="ns9/repo09999"`) })
	b.Run("search-none", func(b *testing.B) { benchPage(b, h, "/ui/?q=nothing", `No repository`) })
	b.Run("tags", func(b *testing.B) { benchPage(b, h, "/ui/r/ns3/repo00003/", `data-tag="latest"`) })
}
