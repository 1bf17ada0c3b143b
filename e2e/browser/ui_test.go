package browser

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// The tests follow the contract between the UI and these tests
// (/ui/… URLs, element ids and data-* attributes; see package ui). Each
// runs its own registry and its own browser.

// desktop is the window the tests browse in, unless they say otherwise.
const desktopWidth, desktopHeight = 1280, 900

// start runs a seeded site and a browser pointed at it.
func start(t *testing.T) (*site, *content, *browser) {
	t.Helper()
	s := newSite(t, "", nil)
	c := s.seed(t)
	b := newBrowser(t, s.base(), s.pin, desktopWidth, desktopHeight)
	t.Cleanup(func() { b.checkCSP() })
	return s, c, b
}

// checkCSP fails the test if the browser reported a CSP violation on any
// page the test loaded.
func (b *browser) checkCSP() {
	b.t.Helper()
	if v := b.cspViolations(); len(v) > 0 {
		b.t.Errorf("the browser reported %d Content-Security-Policy violations:\n  %s", len(v), strings.Join(v, "\n  "))
	}
}

// signIn signs user in through the login form with password and waits
// for the page it lands on to name the user.
func (b *browser) signIn(user, password string, shot bool) {
	b.t.Helper()
	if status := b.open("/ui/login"); status != 200 {
		b.t.Fatalf("GET /ui/login: %d", status)
	}
	b.do("fill in the login form",
		chromedp.WaitVisible(chromedp.CSS("form#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password))
	for _, id := range []string{"username", "password"} {
		if !b.exists(fmt.Sprintf("label[for=%q]", id)) {
			b.t.Errorf("login form: #%s has no <label for>", id)
		}
	}
	if shot {
		b.screenshot("login")
	}
	b.clickAndLoad("#login-form button[type=submit]")
}

// signInAs signs user in and checks the page names them in #user.
func (b *browser) signInAs(user, password string) {
	b.t.Helper()
	b.signIn(user, password, false)
	if got := b.text("#user"); got != user {
		b.t.Fatalf("after signing in as %s, #user = %q (page %s: %q)", user, got, b.location(), b.text("main"))
	}
}

// repositories returns the names the repositories table lists.
func (b *browser) repositories() []string {
	b.t.Helper()
	// The table may be absent when nothing is listed.
	b.do("wait for the page", chromedp.WaitReady(chromedp.CSS("main#main")))
	return b.attrs("table#repositories tr[data-repository]", "data-repository")
}

// wantSet fails unless got holds exactly want, in any order.
func wantSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

// html returns the outer HTML of the first element sel selects ("" when
// none): digests may be shortened in text, never in links or attributes.
func (b *browser) html(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf("(document.querySelector(%s) || {}).outerHTML || ''", jsString(sel)))
}

// alice signs in, lists, searches, opens the multi-platform image, one of
// its platforms with layers and config, and sees the referrers of both.
func TestAliceBrowses(t *testing.T) {
	s, c, b := start(t)
	b.signIn("alice", s.passwords["alice"], true)
	if got := b.text("#user"); got != "alice" {
		t.Fatalf("after signing in, #user = %q, want alice (page %s: %q)", got, b.location(), b.text("main"))
	}
	if !b.exists("form#logout button, form#logout input[type=submit]") {
		t.Error("signed in, but no logout form with a submit button")
	}
	if b.exists("#login") {
		t.Error("signed in, but the #login link is still there")
	}

	// The repositories she may pull, and none else.
	if status := b.open("/ui/"); status != 200 {
		t.Fatalf("GET /ui/: %d", status)
	}
	wantSet(t, "alice's repositories", b.repositories(), []string{"team/app", "team/secret", "public/base"})
	if !b.exists(`label[for="q"]`) || !b.exists("form#search input#q[name=q]") {
		t.Error("the search form lacks input#q[name=q] with its <label for=q>")
	}
	b.screenshot("repositories")

	// Search.
	b.open("/ui/?q=app")
	wantSet(t, "search q=app", b.repositories(), []string{"team/app"})

	// The repository: its tags, with platforms and pull commands.
	b.open("/ui/")
	b.repositories()
	b.clickAndLoad(`tr[data-repository="team/app"] a`)
	if got, want := b.location(), s.base()+"/ui/r/team/app/"; got != want {
		t.Errorf("the team/app link goes to %s, want %s", got, want)
	}
	if h1 := b.text("h1"); h1 != "team/app" {
		t.Errorf("repository page <h1> = %q, want team/app", h1)
	}
	wantSet(t, "team/app's tags", b.attrs("table#tags tr[data-tag]", "data-tag"), c.tags["team/app"])
	row := b.text(`tr[data-tag="1.0"]`)
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		if !strings.Contains(row, p) {
			t.Errorf("the 1.0 row does not show platform %s: %q", p, row)
		}
	}
	if !strings.Contains(b.html(`tr[data-tag="1.0"]`), c.index.String()) {
		t.Errorf("the 1.0 row does not link the index digest %s", c.index)
	}
	pull := "docker pull " + s.host + "/team/app:1.0"
	if !slices.Contains(eval[[]string](b, "Array.from(document.querySelectorAll('code.pull'), e => e.textContent.trim())"), pull) {
		t.Errorf("no code.pull says %q", pull)
	}
	for _, tag := range c.tags["team/app"] {
		if !b.exists(fmt.Sprintf(`tr[data-tag=%q] a.delete`, tag)) {
			t.Errorf("alice may delete team/app:%s, but its row has no a.delete", tag)
		}
	}
	// At desktop width the tags table fits its box: nothing to scroll to,
	// no column squeezed out of sight.
	if w := eval[map[string]float64](b, "(() => { const t = document.querySelector('table#tags'); return {table: t.scrollWidth, box: t.parentElement.clientWidth}; })()"); w["table"] > w["box"] {
		t.Errorf("at %d px the tags table is %v px wide in a box of %v px", desktopWidth, w["table"], w["box"])
	}
	b.screenshot("repository")

	// The index: its platforms, and its signature among the referrers.
	b.clickAndLoad(`tr[data-tag="1.0"] a[href*="/-/manifests/"]`)
	if got, want := b.location(), s.base()+"/ui/r/team/app/-/manifests/"+c.index.String(); got != want {
		t.Errorf("the digest link goes to %s, want %s", got, want)
	}
	if mt := b.text("#media-type"); !strings.Contains(mt, "application/vnd.oci.image.index.v1+json") {
		t.Errorf("index #media-type = %q", mt)
	}
	wantSet(t, "the index's platforms", b.attrs("ul#platforms li[data-platform]", "data-platform"), []string{"linux/amd64", "linux/arm64"})
	referrers := b.attrs("section#referrers [data-artifact-type]", "data-artifact-type")
	if !slices.Contains(referrers, signatureType) {
		t.Errorf("the index's referrers by artifact type = %q, want %s", referrers, signatureType)
	}
	if !strings.Contains(b.html("section#referrers"), c.signature.String()) {
		t.Errorf("the index's referrers do not name the signature %s", c.signature)
	}
	b.screenshot("index")

	// One platform: config, layers, and its SBOM.
	b.clickAndLoad(`li[data-platform="linux/arm64"] a`)
	if got, want := b.location(), s.base()+"/ui/r/team/app/-/manifests/"+c.platforms["linux/arm64"].String(); got != want {
		t.Errorf("the linux/arm64 link goes to %s, want %s", got, want)
	}
	if mt := b.text("#media-type"); !strings.Contains(mt, "application/vnd.oci.image.manifest.v1+json") {
		t.Errorf("image #media-type = %q", mt)
	}
	config := b.text("#config")
	if !strings.Contains(b.html("#config"), c.configs["linux/arm64"].String()) || !strings.Contains(config, "arm64") || !strings.Contains(config, "linux") {
		t.Errorf("#config does not show digest %s and linux/arm64: %q", c.configs["linux/arm64"], config)
	}
	layers := b.attrs("table#layers tr[data-digest]", "data-digest")
	var want []string
	for _, l := range c.layers["linux/arm64"] {
		want = append(want, l.String())
	}
	if !slices.Equal(layers, want) {
		t.Errorf("layers = %q, want %q", layers, want)
	}
	referrers = b.attrs("section#referrers [data-artifact-type]", "data-artifact-type")
	if !slices.Contains(referrers, sbomType) || slices.Contains(referrers, signatureType) {
		t.Errorf("the arm64 image's referrers by artifact type = %q, want %s only", referrers, sbomType)
	}
	if !strings.Contains(b.html("section#referrers"), c.sbom.String()) {
		t.Errorf("the arm64 image's referrers do not name the SBOM %s", c.sbom)
	}
	pull = "docker pull " + s.host + "/team/app@" + c.platforms["linux/arm64"].String()
	if !slices.Contains(eval[[]string](b, "Array.from(document.querySelectorAll('code.pull'), e => e.textContent.trim())"), pull) {
		t.Errorf("no code.pull says %q", pull)
	}
	b.screenshot("image")

	// Signing out ends the session: the next page is anonymous.
	b.clickAndLoad("form#logout button, form#logout input[type=submit]")
	b.open("/ui/")
	if b.exists("#user") || !b.exists("a#login") {
		t.Errorf("after signing out: #user %q, a#login present %v", b.text("#user"), b.exists("a#login"))
	}
	wantSet(t, "repositories after signing out", b.repositories(), []string{"public/base"})

	// Neither her password nor a token reached the registry's log (the
	// access log names every URL the UI asked for).
	logText := s.log.String()
	if strings.Contains(logText, s.passwords["alice"]) || strings.Contains(logText, "eyJ") {
		t.Error("the registry's log holds alice's password or a token")
	}
}

// bob may pull public/* only: he sees public/base and not the team's
// repositories, cannot open them by URL, and has no delete control.
func TestBobSeesOnlyPublic(t *testing.T) {
	s, _, b := start(t)
	b.signInAs("bob", s.passwords["bob"])
	b.open("/ui/")
	wantSet(t, "bob's repositories", b.repositories(), []string{"public/base"})
	b.open("/ui/?q=secret")
	wantSet(t, "bob's search q=secret", b.repositories(), nil)
	checkNoDelete(t, b, "public/base", "latest")
	checkHidden(t, b, "team/secret", "latest")
}

// Anonymous visitors see what anonymous clients may pull, and a link to
// sign in.
func TestAnonymousSeesOnlyPublic(t *testing.T) {
	_, _, b := start(t)
	if status := b.open("/ui/"); status != 200 {
		t.Fatalf("GET /ui/: %d", status)
	}
	if b.exists("#user") || !b.exists("a#login") {
		t.Errorf("anonymous: #user present %v, a#login present %v; want no #user and a login link", b.exists("#user"), b.exists("a#login"))
	}
	wantSet(t, "anonymous repositories", b.repositories(), []string{"public/base"})
	checkNoDelete(t, b, "public/base", "latest")
	checkHidden(t, b, "team/app", "1.0")
}

// checkNoDelete opens repo's page, where tag is listed without a delete
// control.
func checkNoDelete(t *testing.T, b *browser, repo, tag string) {
	t.Helper()
	if status := b.open("/ui/r/" + repo + "/"); status != 200 {
		t.Fatalf("GET /ui/r/%s/: %d", repo, status)
	}
	b.do("wait for the tags", chromedp.WaitReady(chromedp.CSS(fmt.Sprintf("tr[data-tag=%q]", tag))))
	if b.exists("a.delete") || b.exists("form#delete") {
		t.Errorf("%s: a delete control for a user without delete rights", repo)
	}
}

// checkHidden opens repo's page by URL: it must not list tag, nor show a
// status other than 404, the answer for what does not exist.
func checkHidden(t *testing.T, b *browser, repo, tag string) {
	t.Helper()
	status := b.open("/ui/r/" + repo + "/")
	if status != 404 || b.exists("tr[data-tag]") || b.exists("table#tags") {
		t.Errorf("GET /ui/r/%s/ without pull rights: status %d, tags %q; want 404 (as for nothing there) and no tags", repo, status, b.attrs("tr[data-tag]", "data-tag"))
	}
	if strings.Contains(b.text("body"), tag) && strings.Contains(b.text("body"), "docker pull") {
		t.Errorf("GET /ui/r/%s/ without pull rights shows a pull command", repo)
	}
}

// A wrong password: the form says so in #error (role=alert), with 401,
// and nobody is signed in.
func TestWrongPassword(t *testing.T) {
	s, _, b := start(t)
	b.signIn("alice", s.passwords["alice"]+"-wrong", false)
	b.do("wait for the error", chromedp.WaitVisible(chromedp.CSS("#error")))
	if role := b.attrs("#error", "role"); len(role) != 1 || role[0] != "alert" {
		t.Errorf("#error role = %q, want alert", role)
	}
	if b.exists("#user") {
		t.Error("a wrong password signed the user in")
	}
	if status := eval[float64](b, "performance.getEntriesByType('navigation')[0].responseStatus"); status != 401 {
		t.Errorf("the failed sign-in answered %v, want 401", status)
	}
	if u := b.location(); strings.Contains(u, "password") || strings.Contains(u, s.passwords["alice"]) {
		t.Errorf("the password reached the URL: %s", u)
	}
}

// The search works with the keyboard alone: Tab to the search box, type,
// Enter.
func TestKeyboardSearch(t *testing.T) {
	s, _, b := start(t)
	b.signInAs("alice", s.passwords["alice"])
	b.open("/ui/")
	b.repositories()
	focused := ""
	for range 40 {
		b.do("press Tab", chromedp.KeyEvent("\t"))
		if focused = eval[string](b, "document.activeElement ? document.activeElement.id : ''"); focused == "q" {
			break
		}
	}
	if focused != "q" {
		t.Fatalf("40 presses of Tab never reached #q (last focus: %q)", focused)
	}
	b.keysAndLoad("app\r")
	u, err := url.Parse(b.location())
	if err != nil || u.Path != "/ui/" || u.Query().Get("q") != "app" {
		t.Fatalf("Enter in the search box went to %s, want /ui/?q=app", b.location())
	}
	wantSet(t, "keyboard search q=app", b.repositories(), []string{"team/app"})
}

// On a phone (390×844, mobile viewport) the pages lay out at the device's
// width and do not scroll sideways.
func TestPhoneWidth(t *testing.T) {
	s, c, b := start(t)
	b.signInAs("alice", s.passwords["alice"])
	b.do("emulate a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile))
	for _, p := range []struct{ name, path string }{
		{"phone-repositories", "/ui/"},
		{"phone-repository", "/ui/r/team/app/"},
		{"phone-image", "/ui/r/team/app/-/manifests/" + c.platforms["linux/arm64"].String()},
	} {
		if status := b.open(p.path); status != 200 {
			t.Errorf("GET %s: %d", p.path, status)
		}
		b.do("wait for main", chromedp.WaitVisible(chromedp.CSS("main#main")))
		w := eval[map[string]float64](b, "({client: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth})")
		if w["client"] != 390 {
			t.Errorf("%s lays out %v px wide on a 390 px phone (a viewport meta tag is missing?)", p.path, w["client"])
		}
		if w["scroll"] > w["client"] {
			t.Errorf("%s scrolls sideways on a phone: scrollWidth %v > clientWidth %v", p.path, w["scroll"], w["client"])
		}
		b.screenshot(p.name)
	}
}
