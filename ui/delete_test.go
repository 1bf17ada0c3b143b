package ui_test

import (
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/ui"
)

func (e *env) tagExists(repo, tag string) bool {
	e.t.Helper()
	_, err := e.store.ResolveManifest(e.t.Context(), repo, tag)
	if err != nil && !errors.Is(err, storage.ErrManifestUnknown) {
		e.t.Fatal(err)
	}
	return err == nil
}

// TestDeleteTag: the confirmation page's form deletes the tag; a post
// without the CSRF value, with another value, from another origin, or by
// a user without delete rights deletes nothing.
func TestDeleteTag(t *testing.T) {
	e := newEnv(t, modeToken)
	e.pushAll("team/app")
	alice := e.browser()
	alice.login("alice", passwords["alice"])

	p := alice.get("/ui/r/team/app/-/delete?tag=v1")
	d := parse(t, p.body)
	if p.status != http.StatusOK || d.id("delete") == nil || d.id("confirm-delete") == nil {
		t.Fatalf("confirmation page: %d\n%s", p.status, p.body)
	}
	csrf := csrfOf(t, p.body)
	action := "/ui/r/team/app/-/delete"
	if v, _ := attr(d.id("delete"), "action"); v != action {
		t.Fatalf("form action %q", v)
	}

	refused := []struct {
		what string
		form url.Values
		hdr  map[string]string
	}{
		{"no csrf", url.Values{"tag": {"v1"}}, nil},
		{"wrong csrf", url.Values{"tag": {"v1"}, "csrf": {"x" + csrf}}, nil},
		{"other origin", url.Values{"tag": {"v1"}, "csrf": {csrf}}, map[string]string{"Origin": "https://evil.example.com"}},
		{"cross-site fetch", url.Values{"tag": {"v1"}, "csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"null origin, cross-site", url.Values{"tag": {"v1"}, "csrf": {csrf}}, map[string]string{"Origin": "null", "Sec-Fetch-Site": "cross-site"}},
	}
	for _, r := range refused {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+action, stringsReader(r.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.srv.URL)
		for k, v := range r.hdr {
			req.Header.Set(k, v)
		}
		p := alice.do(req)
		if p.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", r.what, p.status)
		}
		if !e.tagExists("team/app", "v1") {
			t.Fatalf("%s: the tag was deleted", r.what)
		}
	}

	// bob may pull team/app, not delete: his own valid form is refused.
	bob := e.browser()
	bp := bob.login("bob", passwords["bob"])
	if p := bob.post(action, url.Values{"tag": {"v1"}, "csrf": {csrfOf(t, bp.body)}}); p.status != http.StatusForbidden || !e.tagExists("team/app", "v1") {
		t.Fatalf("bob's delete: %d, tag exists %v", p.status, e.tagExists("team/app", "v1"))
	}
	if p := bob.get("/ui/r/team/app/-/delete?tag=v1"); p.status != http.StatusNotFound {
		t.Errorf("bob's confirmation page: %d", p.status)
	}

	// What Chromium sends under Referrer-Policy: no-referrer: Origin null,
	// and Sec-Fetch-Site to say the post is the site's own.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+action, stringsReader(url.Values{"tag": {"v1"}, "csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "null")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	p = alice.do(req)
	if p.status != http.StatusOK || p.url.Path != "/ui/r/team/app/" {
		t.Fatalf("after delete: %d at %s", p.status, p.url)
	}
	flash := parse(t, p.body).id("flash")
	if flash == nil || text(flash) != "Deleted v1." {
		t.Errorf("flash: %v", flash)
	}
	if e.tagExists("team/app", "v1") {
		t.Fatal("the tag is still there")
	}
	ev := <-e.sink.events
	if ev.Action != notify.ActionDelete || ev.Target.Repository != "team/app" || ev.Target.Tag != "v1" || ev.Actor.Name != "alice" {
		t.Errorf("event %+v", ev)
	}
}

// TestDeleteManifest: deleting a manifest by digest removes it with its
// tags, with an event for each, as the API's DELETE does.
func TestDeleteManifest(t *testing.T) {
	e := newEnv(t, modeOpen)
	img := e.pushImage("team/app", "v1")
	dg, _ := img.Digest()
	b := e.browser()
	p := b.get("/ui/r/team/app/-/delete?digest=" + dg.String())
	if p.status != http.StatusOK {
		t.Fatalf("confirmation: %d", p.status)
	}
	p = b.post("/ui/r/team/app/-/delete", url.Values{"digest": {dg.String()}, "csrf": {csrfOf(t, p.body)}})
	if p.status != http.StatusOK || parse(t, p.body).id("flash") == nil {
		t.Fatalf("after delete: %d", p.status)
	}
	if _, err := e.store.ResolveManifest(t.Context(), "team/app", dg.String()); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("manifest still there: %v", err)
	}
	if e.tagExists("team/app", "v1") {
		t.Fatal("its tag is still there")
	}
	first, second := <-e.sink.events, <-e.sink.events
	if first.Target.Digest.String() != dg.String() || second.Target.Tag != "v1" {
		t.Errorf("events %+v, %+v", first.Target, second.Target)
	}
}

// TestNoDelete: with deletes off, in read-only mode, and on a mirror, no
// delete control shows and a delete post (valid otherwise) changes nothing.
func TestNoDelete(t *testing.T) {
	for what, adjust := range map[string]func(*ui.Config){
		"deletes off": func(c *ui.Config) { c.DeleteEnabled = false },
		"read-only":   func(c *ui.Config) { c.ReadOnly = true },
		"mirror":      func(c *ui.Config) { c.Mirrors = func(name string) bool { return name == "team/app" } },
	} {
		e := newEnvWith(t, modeToken, adjust)
		e.pushAll("team/app")
		b := e.browser()
		csrf := csrfOf(t, b.login("alice", passwords["alice"]).body) // alice may delete team/app
		p := b.get("/ui/r/team/app/")
		if n := len(parse(t, p.body).class("a", "delete")); n != 0 {
			t.Errorf("%s: %d delete links", what, n)
		}
		if p := b.get("/ui/r/team/app/-/delete?tag=v1"); p.status != http.StatusNotFound {
			t.Errorf("%s: confirmation page %d", what, p.status)
		}
		if p := b.post("/ui/r/team/app/-/delete", url.Values{"tag": {"v1"}, "csrf": {csrf}}); p.status != http.StatusForbidden || !e.tagExists("team/app", "v1") {
			t.Errorf("%s: delete post %d, tag exists %v", what, p.status, e.tagExists("team/app", "v1"))
		}
	}
}
