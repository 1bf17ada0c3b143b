package ui_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestPagesOpen: without auth, the pages show every repository, a
// repository's tags with digest, size, platforms, created time and media
// type, an index's platforms, an image's config and layers, and its
// referrers by artifact type.
func TestPagesOpen(t *testing.T) {
	e := newEnv(t, modeOpen)
	img := e.pushImage("team/app", "v1")
	idx := e.pushIndex("team/app", "multi")
	e.pushImage("other", "latest")
	ref := e.pushReferrer("team/app", img, sbomType)
	b := e.browser()

	p := b.get("/")
	if p.status != http.StatusOK || p.url.Path != "/ui/" {
		t.Fatalf("/ went to %s (%d)", p.url, p.status)
	}
	d := parse(t, p.body)
	if got := d.values("data-repository"); !slices.Equal(got, []string{"other", "team/app"}) {
		t.Fatalf("repositories %v", got)
	}
	if d.id("main") == nil || d.id("q") == nil || d.id("search") == nil || d.id("user") != nil || d.id("login") != nil {
		t.Fatalf("page hooks wrong:\n%s", p.body)
	}

	p = b.get("/ui/r/team/app")
	if p.status != http.StatusOK || p.url.Path != "/ui/r/team/app/" {
		t.Fatalf("tags page: %d\n%s", p.status, p.body)
	}
	d = parse(t, p.body)
	if got := d.values("data-tag"); !slices.Equal(got, []string{"multi", "v1"}) {
		t.Fatalf("tags %v", got)
	}
	rows := d.all(func(n *nodeT) bool { v, _ := attr(n, "data-tag"); return v == "multi" })
	row := text(rows[0])
	for _, want := range []string{"linux/amd64", "linux/arm64/v8", "application/vnd.oci.image.index.v1+json", "2025-02-02", "docker pull " + e.host + "/team/app:multi"} {
		if !strings.Contains(row, want) {
			t.Errorf("multi's row lacks %q: %s", want, row)
		}
	}
	idxDigest, _ := idx.Digest()
	if len(d.class("a", "delete")) != 2 {
		t.Errorf("want a delete link per tag:\n%s", p.body)
	}
	if !strings.Contains(p.body, "/ui/r/team/app/-/manifests/"+idxDigest.String()) {
		t.Errorf("no link to the index's page")
	}

	p = b.get("/ui/r/team/app/-/manifests/" + idxDigest.String())
	d = parse(t, p.body)
	if got := d.values("data-platform"); !slices.Equal(got, []string{"linux/amd64", "linux/arm64/v8"}) {
		t.Fatalf("platforms %v\n%s", got, p.body)
	}
	if text(d.id("media-type")) != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("media type %q", text(d.id("media-type")))
	}

	imgDigest, _ := img.Digest()
	p = b.get("/ui/r/team/app/-/manifests/" + imgDigest.String())
	d = parse(t, p.body)
	layers, _ := img.Layers()
	var want []string
	for _, l := range layers {
		dg, _ := l.Digest()
		want = append(want, dg.String())
	}
	got := d.values("data-digest")
	if len(got) < 2 || !slices.Equal(got[:2], want) {
		t.Errorf("layers %v, want %v", got, want)
	}
	cfg := text(d.id("config"))
	cfgName, _ := img.ConfigName()
	for _, w := range []string{cfgName.String(), "2025-03-04 05:06 UTC", "linux/amd64"} {
		if !strings.Contains(cfg, w) {
			t.Errorf("config lacks %q: %s", w, cfg)
		}
	}
	if got := d.values("data-artifact-type"); !slices.Equal(got, []string{sbomType}) {
		t.Errorf("referrers %v", got)
	}
	if !strings.Contains(p.body, ref.String()) {
		t.Errorf("referrer %s not shown", ref)
	}
	pulls := d.class("code", "pull")
	if len(pulls) == 0 || text(pulls[0]) != "docker pull "+e.host+"/team/app@"+imgDigest.String() {
		t.Errorf("pull command: %v", pulls)
	}
}

// TestPaging: 120 repositories come 50 a page, each page's a#next leading
// to the rest, and a search pages the same way.
func TestPaging(t *testing.T) {
	e := newEnv(t, modeOpen)
	names := repoNames(120)
	seed(t, e.dir, e.store, names)
	slices.Sort(names)
	b := e.browser()
	var seen []string
	next := "/ui/"
	for pages := 0; next != ""; pages++ {
		if pages == 3 {
			t.Fatal("more than 3 pages")
		}
		d := parse(t, b.get(next).body)
		got := d.values("data-repository")
		if len(got) != 50 && d.id("next") != nil {
			t.Fatalf("a page of %d with a next link", len(got))
		}
		seen = append(seen, got...)
		next = ""
		if a := d.id("next"); a != nil {
			next, _ = attr(a, "href")
		}
	}
	if !slices.Equal(seen, names) {
		t.Fatalf("pages showed %d names, want %d in order", len(seen), len(names))
	}
	// ns3/ holds 12 names: 10 on no page of their own, all on one.
	d := parse(t, b.get("/ui/?q=ns3/").body)
	if got := d.values("data-repository"); len(got) != 12 || d.id("next") != nil {
		t.Errorf("search ns3/: %d names, next %v", len(got), d.id("next") != nil)
	}
	if p := b.get("/ui/r/team/app/?deleted=" + url.QueryEscape("<b>anything you like</b>")); parse(t, p.body).id("flash") != nil {
		t.Errorf("a flash that is no tag or digest is shown")
	}
}
