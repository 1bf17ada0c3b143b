package ui_test

import (
	"net/http"
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

	p = b.get("/ui/r/team/app/")
	if p.status != http.StatusOK {
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
