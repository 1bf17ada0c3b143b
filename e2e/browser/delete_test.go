package browser

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// alice deletes a tag through the confirmation page: it is gone from the
// page and from the registry; the other tag stays.
func TestAliceDeletesATag(t *testing.T) {
	s, c, b := start(t)
	b.signInAs("alice", s.passwords["alice"])
	b.open("/ui/r/team/app/")
	b.do("wait for the tags", chromedp.WaitReady(chromedp.CSS(`tr[data-tag="0.9"]`)))
	b.clickAndLoad(`tr[data-tag="0.9"] a.delete`)
	if u, _ := url.Parse(b.location()); u == nil || u.Path != "/ui/r/team/app/-/delete" || u.Query().Get("tag") != "0.9" {
		t.Errorf("the delete link goes to %s, want /ui/r/team/app/-/delete?tag=0.9", b.location())
	}
	if !b.exists("form#delete #confirm-delete") {
		t.Fatal("no form#delete with #confirm-delete")
	}
	if !strings.Contains(b.text("main"), "0.9") {
		t.Error("the confirmation page does not name the tag")
	}
	b.screenshot("delete-confirmation")
	// Not deleted before the confirmation.
	alice := s.remoteOptions(t, "alice", "")
	if _, err := remoteHead(s.ref(t, "team/app:0.9"), alice); err != nil {
		t.Fatalf("team/app:0.9 before confirming: %v", err)
	}

	b.clickAndLoad("#confirm-delete")
	if u, _ := url.Parse(b.location()); u == nil || u.Host != s.host || u.Path != "/ui/r/team/app/" {
		t.Errorf("after the delete the browser is at %s, want the repository page /ui/r/team/app/", b.location())
	}
	if f := b.attrs("#flash", "role"); len(f) != 1 || f[0] != "status" {
		t.Errorf("no #flash role=status after the delete (%q)", f)
	}
	wantSet(t, "tags after deleting 0.9", b.attrs("table#tags tr[data-tag]", "data-tag"), []string{"1.0"})
	b.screenshot("after-delete")

	// And in the registry, as a client sees it.
	if _, err := remoteHead(s.ref(t, "team/app:0.9"), alice); statusOf(err) != 404 {
		t.Errorf("HEAD team/app:0.9 after the delete: %v, want 404", err)
	}
	if d, err := remoteHead(s.ref(t, "team/app:1.0"), alice); err != nil || d != c.index {
		t.Errorf("HEAD team/app:1.0 after deleting 0.9: %s, %v; want %s", d, err, c.index)
	}
}

// A confirmation whose csrf field is not the session's deletes nothing.
func TestDeleteNeedsTheCSRFToken(t *testing.T) {
	s, _, b := start(t)
	b.signInAs("alice", s.passwords["alice"])
	b.open("/ui/r/team/app/-/delete?tag=0.9")
	b.do("wait for the form", chromedp.WaitVisible(chromedp.CSS("form#delete #confirm-delete")))
	if n := eval[float64](b, "document.querySelectorAll('form#delete input[name=csrf]').length"); n != 1 {
		t.Fatalf("form#delete has %v csrf fields, want 1", n)
	}
	eval[string](b, "document.querySelector('form#delete input[name=csrf]').value = 'forged'")
	b.clickAndLoad("#confirm-delete")
	if status := eval[float64](b, "performance.getEntriesByType('navigation')[0].responseStatus"); status != http.StatusForbidden {
		t.Errorf("a delete with a forged csrf field answered %v, want 403", status)
	}
	if _, err := remoteHead(s.ref(t, "team/app:0.9"), s.remoteOptions(t, "alice", "")); err != nil {
		t.Errorf("team/app:0.9 after a forged confirmation: %v, want it still there", err)
	}
}

// A page of another site that posts a delete form to the registry, while
// alice is signed in there, deletes nothing: the session cookie stays
// home (SameSite=Strict) and the Origin is not the registry's.
func TestCrossSiteDeleteIsRefused(t *testing.T) {
	s := newSite(t, "", nil)
	s.seed(t)
	target := s.base() + "/ui/r/team/app/-/delete"
	evil, evilPin := formServer(t, target)
	b := newBrowser(t, s.base(), s.pin+","+evilPin, desktopWidth, desktopHeight)
	b.signInAs("alice", s.passwords["alice"])

	if status := run(b, "open the other site", chromedp.NavigateResponse(evil)); status == nil || status.Status != 200 {
		t.Fatalf("the other site: %v", status)
	}
	b.clickAndLoad("#go")
	if u, _ := url.Parse(b.location()); u == nil || u.Host != s.host {
		t.Fatalf("the forged form did not reach the registry: at %s", b.location())
	}
	status := eval[float64](b, "performance.getEntriesByType('navigation')[0].responseStatus")
	if status == http.StatusSeeOther || (status >= 200 && status < 300 && !strings.Contains(b.location(), "/login")) {
		t.Errorf("the cross-site delete answered %v at %s; want it refused", status, b.location())
	}
	if _, err := remoteHead(s.ref(t, "team/app:0.9"), s.remoteOptions(t, "alice", "")); err != nil {
		t.Errorf("team/app:0.9 after a cross-site post: %v, want it still there", err)
	}
}

// formServer serves, on another origin (127.0.0.1 over TLS, its own
// key), a page whose button posts a delete of team/app:0.9 to target.
func formServer(t *testing.T, target string) (page, pin string) {
	t.Helper()
	base, pin := pageServerWith(t, t.TempDir(), "evil", map[string]string{
		"/": fmt.Sprintf(`<form method="post" action="%s"><input type="hidden" name="tag" value="0.9">`+
			`<input type="hidden" name="csrf" value="guess"><button id="go" type="submit">win a prize</button></form>`, target),
	})
	return strings.Replace(base, "localhost", "127.0.0.1", 1) + "/", pin
}
