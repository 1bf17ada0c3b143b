package registry

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-registry/berth/auth"
)

const (
	testRealm   = "https://auth.example:5001/token"
	testService = "registry.example"
	testIssuer  = "berth-auth"
)

// tokenKit signs tokens with a trusted key (x5c to the root) and can make
// every kind of bad token.
type tokenKit struct {
	t        testing.TB
	clock    time.Time // the verifier's now, when set
	signer   *auth.Signer
	key      crypto.Signer
	cert     *x509.Certificate
	verifier *auth.Verifier
}

func newTokenKit(t testing.TB) *tokenKit {
	t.Helper()
	key, err := auth.GenerateKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.SelfSignedCertificate(key, "token signer", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := auth.NewSigner(auth.Key{Private: key, Chain: []*x509.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	k := &tokenKit{t: t, signer: signer, key: key, cert: cert}
	now := func() time.Time {
		if !k.clock.IsZero() {
			return k.clock
		}
		return time.Now()
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{Issuer: testIssuer, Service: testService, Roots: []*x509.Certificate{cert}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	k.verifier = v
	return k
}

func (k *tokenKit) claims(access ...auth.Scope) auth.Claims {
	now := time.Now()
	return auth.Claims{
		Issuer: testIssuer, Subject: "alice", Audience: auth.Audience{testService},
		ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)), NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now),
		Access: access,
	}
}

func (k *tokenKit) sign(c auth.Claims) string {
	k.t.Helper()
	tok, err := k.signer.Sign(c)
	if err != nil {
		k.t.Fatal(err)
	}
	return tok
}

func repoScope(name string, actions ...string) auth.Scope {
	return auth.Scope{Type: "repository", Name: name, Actions: actions}
}

// forge builds a token with any header, claims and signature bytes.
func forge(header map[string]any, claims any, sig []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

func TestTokenRejections(t *testing.T) {
	k := newTokenKit(t)
	authz, err := NewTokenAuthorizer(testRealm, testService, k.verifier)
	if err != nil {
		t.Fatal(err)
	}
	h := newTestHandler(t, Config{Authorizer: authz})

	pullApp := k.sign(k.claims(repoScope("team/app", "pull")))
	good := k.claims(repoScope("team/app", "pull", "push"))

	// An attacker's own key and certificate, not chained to the root.
	otherKey, _ := auth.GenerateKey("ES256")
	otherCert, _ := auth.SelfSignedCertificate(otherKey, "evil", time.Hour)
	otherSigner, _ := auth.NewSigner(auth.Key{Private: otherKey, Chain: []*x509.Certificate{otherCert}})
	foreign, _ := otherSigner.Sign(good)
	unknownKid, _ := jwt.NewWithClaims(jwt.SigningMethodES256, &good).SignedString(otherKey)

	// HS256 "signed" with the trusted certificate's public key bytes.
	hmacTok := jwt.NewWithClaims(jwt.SigningMethodHS256, &good)
	hmacTok.Header["kid"] = k.signer.KeyID()
	hs256, _ := hmacTok.SignedString(k.cert.RawSubjectPublicKeyInfo)
	none := forge(map[string]any{"alg": "none", "typ": "JWT", "kid": k.signer.KeyID()}, good, nil)

	wrongIss := good
	wrongIss.Issuer = "someone-else"
	wrongAud := good
	wrongAud.Audience = auth.Audience{"other-registry"}
	expired := good
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
	expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-10 * time.Minute))
	early := good
	early.NotBefore = jwt.NewNumericDate(time.Now().Add(5 * time.Minute))

	const challengeApp = `Bearer realm="` + testRealm + `",service="` + testService + `",scope="repository:team/app:pull"`
	const challengeAppPush = `Bearer realm="` + testRealm + `",service="` + testService + `",scope="repository:team/app:pull,push"`
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	manifest := "/v2/team/app/manifests/latest"
	invalid := func(tok string) step {
		return step{method: "GET", path: manifest, header: bearer(tok), status: 401, code: "UNAUTHORIZED",
			want: map[string]string{"WWW-Authenticate": challengeApp + `,error="invalid_token"`}}
	}
	run(t, h, []step{
		{method: "GET", path: "/v2/", status: 401, code: "UNAUTHORIZED",
			want: map[string]string{"WWW-Authenticate": `Bearer realm="` + testRealm + `",service="` + testService + `"`}},
		{method: "GET", path: manifest, status: 401, code: "UNAUTHORIZED", want: map[string]string{"WWW-Authenticate": challengeApp}},
		{method: "GET", path: manifest, header: map[string]string{"Authorization": "Basic YWxpY2U6c2VjcmV0"}, status: 401,
			want: map[string]string{"WWW-Authenticate": challengeApp}},
		{method: "GET", path: manifest, header: map[string]string{"Authorization": "Bearer"}, status: 401,
			want: map[string]string{"WWW-Authenticate": challengeApp}},
		invalid("not-a-jwt"),
		invalid("a.b.c"),
		invalid(none),
		invalid(hs256),
		invalid(unknownKid),
		invalid(foreign),
		invalid(k.sign(wrongIss)),
		invalid(k.sign(wrongAud)),
		invalid(k.sign(expired)),
		invalid(k.sign(early)),
		// Valid, but not for this: another repository, pull on a push,
		// the catalog without its scope.
		{method: "GET", path: "/v2/team/other/manifests/latest", header: bearer(pullApp), status: 401, code: "DENIED",
			want: map[string]string{"WWW-Authenticate": `Bearer realm="` + testRealm + `",service="` + testService + `",scope="repository:team/other:pull",error="insufficient_scope"`}},
		{method: "PUT", path: manifest, header: bearer(pullApp), body: "{}", status: 401, code: "DENIED",
			want: map[string]string{"WWW-Authenticate": challengeAppPush + `,error="insufficient_scope"`}},
		{method: "POST", path: "/v2/team/app/blobs/uploads/", header: bearer(pullApp), status: 401, code: "DENIED"},
		{method: "DELETE", path: manifest, header: bearer(k.sign(good)), status: 401, code: "DENIED"},
		{method: "GET", path: "/v2/_catalog", header: bearer(pullApp), status: 401, code: "DENIED",
			want: map[string]string{"WWW-Authenticate": `Bearer realm="` + testRealm + `",service="` + testService + `",scope="registry:catalog:*",error="insufficient_scope"`}},
		// A mount also needs pull on its source.
		{method: "POST", path: "/v2/team/app/blobs/uploads/?mount=" + dgA + "&from=team/base", header: bearer(k.sign(good)), status: 401, code: "DENIED",
			want: map[string]string{"WWW-Authenticate": `Bearer realm="` + testRealm + `",service="` + testService + `",scope="repository:team/app:pull,push repository:team/base:pull",error="insufficient_scope"`}},
		// And what is granted works.
		{method: "GET", path: "/v2/", header: bearer(pullApp), status: 200},
		{method: "GET", path: manifest, header: bearer(pullApp), status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "POST", path: "/v2/team/app/blobs/uploads/", header: bearer(k.sign(good)), status: 202},
		{method: "GET", path: "/v2/_catalog", header: bearer(k.sign(k.claims(auth.Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}))), status: 200},
	})
}

func TestRealmValidated(t *testing.T) {
	k := newTokenKit(t)
	for _, realm := range []string{"", `https://a"b/token`, "https://bearer.example/token", "https://auth.example/basic"} {
		if _, err := NewTokenAuthorizer(realm, testService, k.verifier); err == nil {
			t.Errorf("realm %q accepted", realm)
		}
	}
}

// countingVerifier counts the signature checks that reach the verifier.
type countingVerifier struct {
	v     TokenVerifier
	calls int
}

func (c *countingVerifier) Verify(tok string) (*auth.Claims, error) {
	c.calls++
	return c.v.Verify(tok)
}

func TestVerifiedTokensCached(t *testing.T) {
	k := newTokenKit(t)
	cv := &countingVerifier{v: k.verifier}
	authz, _ := NewTokenAuthorizer(testRealm, testService, cv)
	c := k.claims(repoScope("team/app", "pull"))
	c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(2 * time.Minute))
	tok := k.sign(c)
	req := httptest.NewRequest("GET", "/v2/team/app/manifests/latest", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	need := []Access{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}
	for range 5 {
		if sub, err := authz.Authorize(req, need); err != nil || sub != "alice" {
			t.Fatalf("Authorize = %q, %v", sub, err)
		}
	}
	if cv.calls != 1 {
		t.Fatalf("verifier called %d times for one token, want 1", cv.calls)
	}
	// Past its expiry the cached entry is not trusted: the token goes to
	// the verifier again, which (past its leeway too) refuses it.
	later := time.Now().Add(5 * time.Minute)
	authz.now = func() time.Time { return later }
	k.clock = later
	if _, err := authz.Authorize(req, need); err == nil {
		t.Fatal("expired token accepted")
	}
	if cv.calls != 2 {
		t.Fatalf("expired cache entry served without re-verification (calls %d)", cv.calls)
	}
}

func TestBasicAuthorizer(t *testing.T) {
	dir := t.TempDir()
	ht, _ := auth.ParseHtpasswd(nil)
	if err := ht.SetPassword("alice", "s3cret-pass", 4); err != nil {
		t.Fatal(err)
	}
	path := dir + "/htpasswd"
	if err := ht.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	users, err := auth.NewUserStore(auth.UserStoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestHandler(t, Config{Authorizer: NewBasicAuthorizer("Berth", users)})
	basic := func(u, p string) map[string]string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, p)
		return map[string]string{"Authorization": r.Header.Get("Authorization")}
	}
	run(t, h, []step{
		{method: "GET", path: "/v2/", status: 401, code: "UNAUTHORIZED", want: map[string]string{"WWW-Authenticate": `Basic realm="Berth"`}},
		{method: "GET", path: "/v2/", header: basic("alice", "wrong"), status: 401, want: map[string]string{"WWW-Authenticate": `Basic realm="Berth"`}},
		{method: "GET", path: "/v2/", header: basic("mallory", "s3cret-pass"), status: 401},
		{method: "GET", path: "/v2/", header: basic("alice", "s3cret-pass"), status: 200},
		{method: "POST", path: "/v2/any/repo/blobs/uploads/", header: basic("alice", "s3cret-pass"), status: 202},
	})
}

func BenchmarkAuthorizeCachedToken(b *testing.B) {
	k := newTokenKit(b)
	authz, _ := NewTokenAuthorizer(testRealm, testService, k.verifier)
	tok := k.sign(k.claims(repoScope("team/app", "pull", "push")))
	req := httptest.NewRequest("PUT", "/v2/team/app/manifests/latest", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	need := []Access{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := authz.Authorize(req, need); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthorizeUncachedToken(b *testing.B) {
	k := newTokenKit(b)
	tok := k.sign(k.claims(repoScope("team/app", "pull", "push")))
	req := httptest.NewRequest("PUT", "/v2/team/app/manifests/latest", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	need := []Access{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}
	for b.Loop() {
		authz, _ := NewTokenAuthorizer(testRealm, testService, k.verifier)
		if _, err := authz.Authorize(req, need); err != nil {
			b.Fatal(err)
		}
	}
}
