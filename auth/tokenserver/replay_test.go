package tokenserver

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/auth"
)

// checkToken asserts every field of a successful token response and of the
// JWT inside, and returns the response.
func checkToken(t *testing.T, f *fixture, rec *httptest.ResponseRecorder, wantKeys []string, sub string, wantAccess []auth.Scope) map[string]any {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	m := body(t, rec)
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sort.Strings(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("response fields %v, want %v", keys, wantKeys)
	}
	tok, _ := m["token"].(string)
	if tok == "" || m["access_token"] != tok {
		t.Fatalf("token %q, access_token %v: want the same JWT in both", tok, m["access_token"])
	}
	if m["expires_in"] != float64(300) {
		t.Fatalf("expires_in %v, want 300", m["expires_in"])
	}
	issued, err := time.Parse(time.RFC3339, m["issued_at"].(string))
	if err != nil {
		t.Fatalf("issued_at %v: %v", m["issued_at"], err)
	}
	if d := issued.Sub(f.clock.Now()); d > time.Second || d < -time.Second {
		t.Fatalf("issued_at %v is not now (%v)", issued, f.clock.Now())
	}
	if rt, ok := m["refresh_token"].(string); ok && (rt == "" || strings.Count(rt, ".") == 2) {
		t.Fatalf("refresh_token %q: want a non-JWT opaque token", rt)
	}

	h := header(t, tok)
	if h["alg"] != "RS256" || h["typ"] != "JWT" || h["kid"] != f.signer.KeyID() || h["x5c"] == nil {
		t.Fatalf("JWT header %v", h)
	}
	c, err := f.verifier.Verify(tok)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if c.Issuer != issuer || c.Subject != sub || !slices.Equal(c.Audience, auth.Audience{service}) || c.ID == "" {
		t.Fatalf("claims %+v", c)
	}
	if !c.IssuedAt.Time.Equal(c.NotBefore.Time) || c.ExpiresAt.Sub(c.IssuedAt.Time) != 300*time.Second ||
		c.IssuedAt.Unix() != f.clock.Now().Unix() {
		t.Fatalf("iat %v nbf %v exp %v", c.IssuedAt, c.NotBefore, c.ExpiresAt)
	}
	if !reflect.DeepEqual(c.Access, wantAccess) {
		t.Fatalf("access %+v, want %+v", c.Access, wantAccess)
	}
	return m
}

func TestReplayDockerLoginThenPush(t *testing.T) {
	f := newFixture(t, 4)

	// docker login registry.example.com -u bob: GET, no scope, Basic auth.
	login := f.get(t, "account=bob&client_id=docker&offline_token=true&service=registry.example.com", "bob", bobPW, "")
	m := checkToken(t, f, login, []string{"token", "access_token", "expires_in", "issued_at", "refresh_token"}, "bob", []auth.Scope{})
	refresh := m["refresh_token"].(string)

	// docker push registry.example.com/team/app, mounting from other/base:
	// the stored identity token, one space-separated scope parameter.
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refresh},
		"client_id":     {"docker"},
		"service":       {service},
		"scope":         {"repository:team/app:push,pull repository:other/base:pull"},
	}
	push := f.post(t, form, "")
	pm := checkToken(t, f, push, []string{"token", "access_token", "scope", "expires_in", "issued_at"}, "bob", []auth.Scope{
		{Type: "repository", Name: "team/app", Actions: []string{"push", "pull"}},
		{Type: "repository", Name: "other/base", Actions: []string{"pull"}},
	})
	if pm["scope"] != "repository:team/app:push,pull repository:other/base:pull" {
		t.Fatalf("scope %q", pm["scope"])
	}

	// The same with the scopes as repeated parameters, one of them partly
	// denied: the intersection, not an error.
	form["scope"] = []string{"repository:team/app:push,pull", "repository:other/base:pull,push"}
	partial := f.post(t, form, "")
	pm = checkToken(t, f, partial, []string{"token", "access_token", "scope", "expires_in", "issued_at"}, "bob", []auth.Scope{
		{Type: "repository", Name: "team/app", Actions: []string{"push", "pull"}},
		{Type: "repository", Name: "other/base", Actions: []string{"pull"}},
	})
	if pm["scope"] != "repository:team/app:push,pull repository:other/base:pull" {
		t.Fatalf("scope %q", pm["scope"])
	}

	// docker pull of a repository bob has nothing on: 200, no actions.
	form["scope"] = []string{"repository:carol/secret:pull"}
	none := f.post(t, form, "")
	checkToken(t, f, none, []string{"token", "access_token", "expires_in", "issued_at"}, "bob", []auth.Scope{
		{Type: "repository", Name: "carol/secret", Actions: []string{}},
	})

	// Nothing secret reached the log; the access log names the account
	// and the grants.
	log := f.log.String()
	for _, secret := range []string{bobPW, refresh, m["token"].(string), pm["token"].(string)} {
		if strings.Contains(log, secret) {
			t.Fatalf("log contains a secret %q:\n%s", secret, log)
		}
	}
	if !strings.Contains(log, `"account":"bob"`) || !strings.Contains(log, `"granted":"repository:team/app:push,pull repository:other/base:pull"`) {
		t.Fatalf("access log lacks account or grants:\n%s", log)
	}
}

func TestReplayCrane(t *testing.T) {
	f := newFixture(t, 4)
	// crane catalog: GET with repeated scope parameters (url.Values.Encode
	// order) and Basic auth.
	q := url.Values{"scope": {"registry:catalog:*"}, "service": {service}}.Encode()
	w := f.get(t, q, "alice", alicePW, "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "alice", []auth.Scope{
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	})
	// Bob has no catalog rule: a token without actions, not an error.
	w = f.get(t, q, "bob", bobPW, "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "bob", []auth.Scope{
		{Type: "registry", Name: "catalog", Actions: []string{}},
	})
	// crane copy into bob's namespace with a mount from team/base.
	q = url.Values{"scope": {"repository:bob/app:push,pull", "repository:team/base:pull"}, "service": {service}}.Encode()
	w = f.get(t, q, "bob", bobPW, "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "bob", []auth.Scope{
		{Type: "repository", Name: "bob/app", Actions: []string{"push", "pull"}},
		{Type: "repository", Name: "team/base", Actions: []string{"pull"}},
	})
}

func TestReplayConformanceClient(t *testing.T) {
	f := newFixture(t, 4)
	// The OCI conformance suite v1.1.1: GET realm?service=…&scope=… with
	// Basic auth, no token cache.
	for range 2 {
		w := f.get(t, "service=registry.example.com&scope=repository:team/conformance:pull,push", "bob", bobPW, "")
		checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "bob", []auth.Scope{
			{Type: "repository", Name: "team/conformance", Actions: []string{"pull", "push"}},
		})
	}
	// Catalog and a host-prefixed name in one request.
	w := f.get(t, "service=registry.example.com&scope=registry:catalog:*&scope=repository:localhost:5000/bob/x:pull", "alice", alicePW, "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "alice", []auth.Scope{
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		{Type: "repository", Name: "localhost:5000/bob/x", Actions: []string{"pull"}},
	})
}

func TestAnonymousPull(t *testing.T) {
	f := newFixture(t, 4)
	// docker pull without login: GET with scope, no credentials.
	w := f.get(t, "scope=repository:public/nginx:pull&service=registry.example.com", "", "", "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "", []auth.Scope{
		{Type: "repository", Name: "public/nginx", Actions: []string{"pull"}},
	})
	// Anonymous clients get no refresh token and nothing beyond the rule.
	w = f.get(t, "offline_token=true&scope=repository:public/nginx:push,pull&scope=repository:team/app:pull&service=registry.example.com", "", "", "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at"}, "", []auth.Scope{
		{Type: "repository", Name: "public/nginx", Actions: []string{"pull"}},
		{Type: "repository", Name: "team/app", Actions: []string{}},
	})
}
