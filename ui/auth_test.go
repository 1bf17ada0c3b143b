package ui_test

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/auth"
)

// pushAll pushes one image into each repository, as admin.
func (e *env) pushAll(repos ...string) {
	e.t.Helper()
	for _, r := range repos {
		e.pushImage(r, "v1")
	}
}

// TestTokenVisibility: with token auth, each person sees exactly the
// repositories the token server's policy lets them pull, anonymous
// visitors what anonymous clients may pull, and delete controls only
// where the policy grants delete.
func TestTokenVisibility(t *testing.T) {
	e := newEnv(t, modeToken)
	e.pushAll("public/base", "team/app", "team/secret", "private/x")

	anon := e.browser()
	p := anon.get("/ui/")
	d := parse(t, p.body)
	if got := d.values("data-repository"); !slices.Equal(got, []string{"public/base"}) {
		t.Fatalf("anonymous sees %v", got)
	}
	if d.id("login") == nil || d.id("user") != nil {
		t.Errorf("anonymous page: want #login, no #user")
	}
	if p := anon.get("/ui/r/team/app/"); p.status != http.StatusNotFound {
		t.Errorf("anonymous opened team/app: %d", p.status)
	}
	if p := anon.get("/ui/r/public/base/"); p.status != http.StatusOK || len(parse(t, p.body).class("a", "delete")) != 0 {
		t.Errorf("anonymous on public/base: %d, or with delete links", p.status)
	}

	bob := e.browser()
	p = bob.login("bob", passwords["bob"])
	d = parse(t, p.body)
	if p.url.Path != "/ui/" || text(d.id("user")) != "bob" || d.id("logout") == nil {
		t.Fatalf("bob after sign-in: %s, user %q", p.url, text(d.id("user")))
	}
	if got := d.values("data-repository"); !slices.Equal(got, []string{"team/app"}) {
		t.Fatalf("bob sees %v", got)
	}
	if p := bob.get("/ui/r/team/secret/"); p.status != http.StatusNotFound {
		t.Errorf("bob opened team/secret: %d", p.status)
	}
	if p := bob.get("/ui/r/team/app/"); p.status != http.StatusOK || len(parse(t, p.body).class("a", "delete")) != 0 {
		t.Errorf("bob on team/app: %d, or with delete links (he may only pull)", p.status)
	}
	if p := bob.get("/ui/?q=secret"); len(parse(t, p.body).values("data-repository")) != 0 {
		t.Errorf("bob's search finds team/secret")
	}

	alice := e.browser()
	p = alice.login("alice", passwords["alice"])
	if got := parse(t, p.body).values("data-repository"); !slices.Equal(got, []string{"public/base", "team/app", "team/secret"}) {
		t.Fatalf("alice sees %v", got)
	}
	p = alice.get("/ui/r/team/secret/")
	if n := len(parse(t, p.body).class("a", "delete")); n != 1 {
		t.Errorf("alice has %d delete links on team/secret, want 1", n)
	}
	if p := alice.get("/ui/?q=app"); !slices.Equal(parse(t, p.body).values("data-repository"), []string{"team/app"}) {
		t.Errorf("alice's search for app: %v", parse(t, p.body).values("data-repository"))
	}

	// Signed out, alice is anonymous again.
	p = alice.post("/ui/logout", map[string][]string{"csrf": {csrfOf(t, p.body)}})
	if d := parse(t, p.body); d.id("user") != nil || !slices.Equal(d.values("data-repository"), []string{"public/base"}) {
		t.Errorf("after sign-out: user %v, sees %v", d.id("user") != nil, d.values("data-repository"))
	}

	for _, secret := range []string{passwords["alice"], passwords["bob"], "refresh_token="} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
}

// TestSignInRefused: a wrong password shows #error with 401, and no
// session.
func TestSignInRefused(t *testing.T) {
	for _, m := range []mode{modeToken, modeHtpasswd} {
		e := newEnv(t, m)
		b := e.browser()
		p := b.login("alice", "wrong")
		d := parse(t, p.body)
		if p.status != http.StatusUnauthorized || d.id("error") == nil || d.id("user") != nil {
			t.Errorf("mode %d: wrong password: %d, #error %v", m, p.status, d.id("error") != nil)
		}
		if v, _ := attr(d.id("error"), "role"); v != "alert" {
			t.Errorf("#error role %q", v)
		}
	}
}

// TestHtpasswd: anonymous visitors are sent to the sign-in page; a user of
// the file sees everything and may delete.
func TestHtpasswd(t *testing.T) {
	e := newEnv(t, modeHtpasswd)
	e.pushAll("a/one", "b/two")
	b := e.browser()
	p := b.get("/ui/")
	if p.url.Path != "/ui/login" || parse(t, p.body).id("login-form") == nil {
		t.Fatalf("anonymous got %s", p.url)
	}
	if p := b.get("/ui/r/a/one/"); p.url.Path != "/ui/login" {
		t.Errorf("anonymous opened a/one: %s", p.url)
	}
	p = b.login("bob", passwords["bob"])
	if got := parse(t, p.body).values("data-repository"); !slices.Equal(got, []string{"a/one", "b/two"}) {
		t.Fatalf("bob sees %v", got)
	}
	if p := b.get("/ui/r/a/one/"); len(parse(t, p.body).class("a", "delete")) != 1 {
		t.Errorf("no delete link for an htpasswd user")
	}
}

// TestSessionGone: when the token server no longer takes a session's
// refresh token (the user's password changed), the next page signs the
// visitor out and sends them to the sign-in page.
func TestSessionGone(t *testing.T) {
	e := newEnv(t, modeToken)
	e.pushAll("team/app")
	bob := e.browser()
	if p := bob.login("bob", passwords["bob"]); text(parse(t, p.body).id("user")) != "bob" {
		t.Fatal("bob did not sign in")
	}
	data, err := os.ReadFile(e.htFile)
	if err != nil {
		t.Fatal(err)
	}
	ht, err := auth.ParseHtpasswd(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := ht.SetPassword("bob", "a-new-password", 4); err != nil {
		t.Fatal(err)
	}
	if err := ht.WriteFile(e.htFile); err != nil {
		t.Fatal(err)
	}
	if _, err := e.users.Reload(); err != nil {
		t.Fatal(err)
	}
	// bob's rights on team/app are kept for a while; a repository they
	// do not cover makes the page ask the token server again.
	e.pushAll("team/other")
	p := bob.get("/ui/")
	if p.url.Path != "/ui/login" || parse(t, p.body).id("user") != nil {
		t.Fatalf("after the password change: %s (%d)", p.url, p.status)
	}
}
