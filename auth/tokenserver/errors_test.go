package tokenserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/auth"
)

func TestRequestErrors(t *testing.T) {
	f := newFixture(t, 4)
	okForm := func(edit func(url.Values)) url.Values {
		v := url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {bobPW}, "client_id": {"test"}, "service": {service}}
		edit(v)
		return v
	}
	tests := []struct {
		name      string
		do        func() *httptest.ResponseRecorder
		status    int
		code      string
		challenge bool
	}{
		{"GET unknown service", func() *httptest.ResponseRecorder {
			return f.get(t, "service=evil.example.com&scope=repository:bob/a:pull", "bob", bobPW, "")
		}, 400, "invalid_request", false},
		{"GET no service", func() *httptest.ResponseRecorder { return f.get(t, "scope=repository:bob/a:pull", "bob", bobPW, "") }, 400, "invalid_request", false},
		{"GET wrong password", func() *httptest.ResponseRecorder { return f.get(t, "service="+service, "bob", "wrong", "") }, 401, "invalid_grant", true},
		{"GET unknown user", func() *httptest.ResponseRecorder { return f.get(t, "service="+service, "mallory", "wrong", "") }, 401, "invalid_grant", true},
		{"GET empty user name", func() *httptest.ResponseRecorder { return f.get(t, "service="+service, "", "x", "") }, 401, "invalid_grant", true},
		{"GET account without credentials", func() *httptest.ResponseRecorder {
			return f.get(t, "account=bob&service="+service, "", "", "")
		}, 401, "invalid_grant", true},
		{"GET account of someone else", func() *httptest.ResponseRecorder {
			return f.get(t, "account=alice&service="+service, "bob", bobPW, "")
		}, 400, "invalid_request", false},
		{"GET malformed scope", func() *httptest.ResponseRecorder {
			return f.get(t, "service="+service+"&scope=repository:bob/a", "bob", bobPW, "")
		}, 400, "invalid_scope", false},
		{"POST unknown service", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Set("service", "evil") }), "")
		}, 400, "invalid_request", false},
		{"POST no client_id", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Del("client_id") }), "")
		}, 400, "invalid_request", false},
		{"POST unsupported grant", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Set("grant_type", "client_credentials") }), "")
		}, 400, "unsupported_grant_type", false},
		{"POST no username", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Del("username") }), "")
		}, 400, "invalid_request", false},
		{"POST wrong password", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Set("password", "nope") }), "")
		}, 401, "invalid_grant", true},
		{"POST garbage refresh token", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Set("grant_type", "refresh_token"); v.Set("refresh_token", "abc.def") }), "")
		}, 401, "invalid_grant", true},
		{"POST access token as refresh token", func() *httptest.ResponseRecorder {
			tok := body(t, f.get(t, "service="+service, "bob", bobPW, ""))["token"].(string)
			return f.post(t, okForm(func(v url.Values) { v.Set("grant_type", "refresh_token"); v.Set("refresh_token", tok) }), "")
		}, 401, "invalid_grant", true},
		{"POST body too large", func() *httptest.ResponseRecorder {
			return f.post(t, okForm(func(v url.Values) { v.Set("pad", strings.Repeat("x", 100<<10)) }), "")
		}, 413, "invalid_request", false},
		{"unknown path", func() *httptest.ResponseRecorder {
			return f.do(httptest.NewRequest(http.MethodGet, "/v2/", nil), "")
		}, 404, "not_found", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.do()
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body.String())
			}
			m := body(t, w)
			if m["error"] != tt.code || m["error_description"] == "" {
				t.Fatalf("body %v, want error %q", m, tt.code)
			}
			if got := w.Header().Get("WWW-Authenticate"); (got == `Basic realm="Berth token server"`) != tt.challenge {
				t.Fatalf("WWW-Authenticate %q, challenge wanted: %v", got, tt.challenge)
			}
		})
	}
	// Unknown user and wrong password are indistinguishable.
	a, b := f.get(t, "service="+service, "bob", "wrong", "198.51.100.1"), f.get(t, "service="+service, "nobody", "wrong", "198.51.100.2")
	if a.Body.String() != b.Body.String() {
		t.Fatalf("bodies differ: %s / %s", a.Body.String(), b.Body.String())
	}
}

func TestPasswordGrantOffline(t *testing.T) {
	f := newFixture(t, 4)
	w := f.post(t, url.Values{
		"grant_type": {"password"}, "username": {"alice"}, "password": {alicePW}, "client_id": {"podman"},
		"service": {service}, "access_type": {"offline"}, "scope": {"repository:x/y:pull,delete registry:catalog:*"},
	}, "")
	m := checkToken(t, f, w, []string{"token", "access_token", "scope", "expires_in", "issued_at", "refresh_token"}, "alice", []auth.Scope{
		{Type: "repository", Name: "x/y", Actions: []string{"pull", "delete"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	})
	if m["scope"] != "repository:x/y:pull,delete registry:catalog:*" {
		t.Fatalf("scope %q", m["scope"])
	}
	// The refresh token works, and asking offline again renews it.
	w = f.post(t, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {m["refresh_token"].(string)}, "client_id": {"podman"},
		"service": {service}, "access_type": {"offline"},
	}, "")
	checkToken(t, f, w, []string{"token", "access_token", "expires_in", "issued_at", "refresh_token"}, "alice", []auth.Scope{})
}

func TestRefreshTokenBindingAndRevocation(t *testing.T) {
	f := newFixture(t, 4)
	login := func(user, pw string) string {
		w := f.get(t, "account="+user+"&client_id=docker&offline_token=true&service="+service, user, pw, "")
		rt, _ := body(t, w)["refresh_token"].(string)
		if rt == "" {
			t.Fatalf("no refresh token: %s", w.Body.String())
		}
		return rt
	}
	refresh := func(rt, svc string) int {
		return f.post(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"docker"}, "service": {svc}, "scope": {"repository:bob/a:pull"}}, "").Code
	}
	bobRT, aliceRT := login("bob", bobPW), login("alice", alicePW)
	if c := refresh(bobRT, service); c != 200 {
		t.Fatalf("fresh refresh token: %d", c)
	}
	if c := refresh(bobRT, service2); c != 401 {
		t.Fatalf("refresh token used for another service: %d", c)
	}
	// Tampering with the payload (claiming to be alice) breaks the MAC.
	body, sig, _ := strings.Cut(bobRT, ".")
	if c := refresh(body+"x."+sig, service); c != 401 {
		t.Fatalf("tampered refresh token: %d", c)
	}

	// Bob's password changes: his refresh tokens stop working, alice's don't.
	var h *auth.Htpasswd
	edit := func(change func()) {
		var err error
		if h, err = auth.ReadHtpasswd(f.htpasswd); err != nil {
			t.Fatal(err)
		}
		change()
		if err := h.WriteFile(f.htpasswd); err != nil {
			t.Fatal(err)
		}
		if _, err := f.users.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	edit(func() {
		if err := h.SetPassword("bob", "bob-new-password", 4); err != nil {
			t.Fatal(err)
		}
	})
	if c := refresh(bobRT, service); c != 401 {
		t.Fatalf("refresh token after password change: %d", c)
	}
	if c := refresh(aliceRT, service); c != 200 {
		t.Fatalf("another user's refresh token after bob's change: %d", c)
	}
	newBobRT := login("bob", "bob-new-password")
	if c := refresh(newBobRT, service); c != 200 {
		t.Fatalf("new refresh token: %d", c)
	}
	// Alice is removed: hers stop working.
	edit(func() { h.Remove("alice") })
	if c := refresh(aliceRT, service); c != 401 {
		t.Fatalf("refresh token of a removed user: %d", c)
	}
	// Refresh tokens expire (default 30 days).
	f.clock.Advance(DefaultRefreshExpiration - time.Minute)
	if c := refresh(newBobRT, service); c != 200 {
		t.Fatalf("refresh token before expiry: %d", c)
	}
	f.clock.Advance(2 * time.Minute)
	if c := refresh(newBobRT, service); c != 401 {
		t.Fatalf("expired refresh token: %d", c)
	}
}

func TestThrottleFailedLogins(t *testing.T) {
	f := newFixture(t, 4, func(c *Config) {
		c.Throttle = ThrottleConfig{AccountBurst: 3, CleanBurst: 2, AddressBurst: 6, Interval: 10 * time.Second}
	})
	q := "service=" + service + "&scope=repository:bob/a:pull"
	status := func(user, password, ip string) int {
		t.Helper()
		return f.get(t, q, user, password, ip).Code
	}

	// Successes are never throttled.
	for range 30 {
		if c := status("alice", alicePW, "203.0.113.1"); c != 200 {
			t.Fatalf("successful login throttled: %d", c)
		}
	}
	// Three failures for bob from one address, then that address is held
	// back from bob, even with the right password, with a Retry-After.
	for i := range 3 {
		if c := status("bob", "guess", "203.0.113.10"); c != 401 {
			t.Fatalf("failure %d: %d", i, c)
		}
	}
	w := f.get(t, q, "bob", bobPW, "203.0.113.10")
	if w.Code != 429 {
		t.Fatalf("guessing address: %d %s", w.Code, w.Body.String())
	}
	ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || ra < 1 || ra > 10 {
		t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
	}
	// Bob himself, from an address that is not guessing, is not locked
	// out; nor are other accounts.
	if c := status("bob", bobPW, "203.0.113.20"); c != 200 {
		t.Fatalf("owner from another address: %d", c)
	}
	if c := status("alice", alicePW, "203.0.113.10"); c != 200 {
		t.Fatalf("other account: %d", c)
	}
	f.clock.Advance(time.Duration(ra) * time.Second)
	if c := status("bob", bobPW, "203.0.113.10"); c != 200 {
		t.Fatalf("after Retry-After: %d", c)
	}

	// Failures from addresses that are not guessing use up the clean
	// allowance (AccountBurst+CleanBurst in all); then new addresses are
	// held back from bob too, but not those he has logged in from.
	for i := range 3 {
		if c := status("bob", "guess", "203.0.113."+strconv.Itoa(30+i)); c != 401 {
			t.Fatalf("failure from a fresh address %d: %d", i, c)
		}
	}
	if c := status("bob", bobPW, "203.0.113.40"); c != 429 {
		t.Fatalf("new address after the clean allowance: %d", c)
	}
	for _, ip := range []string{"203.0.113.20", "203.0.113.10"} {
		if c := status("bob", bobPW, ip); c != 200 {
			t.Fatalf("owner from %s, where he logged in before: %d", ip, c)
		}
	}

	// One address guessing many accounts is held back by address, and a
	// forged X-Forwarded-For does not help (no trusted proxies).
	for i := range 6 {
		f.get(t, q, "user"+strconv.Itoa(i), "guess", "198.51.100.7")
	}
	req := httptest.NewRequest(http.MethodGet, "/token?"+q, nil)
	req.SetBasicAuth("alice", alicePW)
	req.Header.Set("X-Forwarded-For", "10.9.8.7")
	if w := f.do(req, "198.51.100.7"); w.Code != 429 {
		t.Fatalf("throttled address with forged X-Forwarded-For: %d", w.Code)
	}
	if w := f.get(t, q, "alice", alicePW, "198.51.100.8"); w.Code != 200 {
		t.Fatalf("another address: %d", w.Code)
	}
	var m map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &m)
	if m["error"] != "too_many_requests" {
		t.Fatalf("429 body %v", m)
	}
}

func TestJWKSEndpoint(t *testing.T) {
	f := newFixture(t, 4)
	w := f.do(httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil), "")
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("%d %s", w.Code, w.Header())
	}
	set, err := auth.ParseJWKS(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].Kid != f.signer.KeyID() || set.Keys[0].Alg != "RS256" || len(set.Keys[0].X5c) != 1 {
		t.Fatalf("jwks %+v", set)
	}
	// A registry configured with only this JWKS accepts our tokens.
	v, err := auth.NewVerifier(auth.VerifierConfig{Issuer: issuer, Service: service, JWKS: set})
	if err != nil {
		t.Fatal(err)
	}
	tok := body(t, f.get(t, "service="+service, "bob", bobPW, ""))["token"].(string)
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	if w := f.do(httptest.NewRequest(http.MethodGet, "/healthz", nil), ""); w.Code != 200 {
		t.Fatalf("healthz %d", w.Code)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	f := newFixture(t, 4)
	base := f.srv.cfg
	for name, edit := range map[string]func(*Config){
		"no issuer":     func(c *Config) { c.Issuer = "" },
		"no services":   func(c *Config) { c.Services = nil },
		"no signer":     func(c *Config) { c.Signer = nil },
		"bad proxy":     func(c *Config) { c.TrustedProxies = []string{"not-an-ip"} },
		"no user store": func(c *Config) { c.Users = nil },
	} {
		c := base
		edit(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := base
	c.Expiration = 5 * time.Second
	s, err := New(c)
	if err != nil || s.cfg.Expiration != MinExpiration {
		t.Fatalf("expiration below 60 s: %v %v", err, s.cfg.Expiration)
	}
}
