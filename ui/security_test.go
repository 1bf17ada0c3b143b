package ui_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// TestHeaders: every page carries the CSP and the other protective
// headers, is not cached, and the session cookie is __Host-, Secure,
// HttpOnly and SameSite=Strict.
func TestHeaders(t *testing.T) {
	e := newEnv(t, modeToken)
	e.pushAll("public/base")
	b := e.browser()
	for _, path := range []string{"/ui/", "/ui/r/public/base/", "/ui/login", "/ui/r/none/"} {
		p := b.get(path)
		h := p.header
		want := map[string]string{
			"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
			"Content-Type":            "text/html; charset=utf-8",
		}
		for k, v := range want {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), v)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/ui/login", nil)
	resp, err := (&http.Client{Transport: e.srv.Client().Transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookie := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-berth-ui=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("cookie %q lacks %s", cookie, want)
		}
	}
	if p := b.get("/ui/static/berth.css"); p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), "text/css") {
		t.Errorf("CSS: %d %s", p.status, p.header.Get("Content-Type"))
	}
	if p := b.get("/ui/static/copy.js"); p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), "text/javascript") {
		t.Errorf("script: %d %s", p.status, p.header.Get("Content-Type"))
	}
}

// TestEscaping: content a pusher controls (a referrer's artifactType) and
// the search string come out escaped.
func TestEscaping(t *testing.T) {
	e := newEnv(t, modeOpen)
	img := e.pushImage("team/app", "v1")
	e.pushReferrer("team/app", img, hostileType)
	dg, _ := img.Digest()
	b := e.browser()
	p := b.get("/ui/r/team/app/-/manifests/" + dg.String())
	if strings.Contains(p.body, "<script>") {
		t.Fatalf("artifactType not escaped:\n%s", p.body)
	}
	if got := parse(t, p.body).values("data-artifact-type"); len(got) != 1 || got[0] != hostileType {
		t.Errorf("artifact type %q", got)
	}
	p = b.get("/ui/?q=" + url.QueryEscape(`"><script>alert(1)</script>`))
	if strings.Contains(p.body, "<script>") {
		t.Fatalf("query not escaped:\n%s", p.body)
	}
	if v, _ := attr(parse(t, p.body).id("q"), "value"); v != `"><script>alert(1)</script>` {
		t.Errorf("search box holds %q", v)
	}
}
