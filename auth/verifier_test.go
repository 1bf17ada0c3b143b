package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-registry/berth/internal/osfile"
)

// rawToken assembles a compact JWS from a header, claims and a signing
// function over "header.claims".
func rawToken(t *testing.T, header map[string]any, claims Claims, sign func(string) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(&claims)
	if err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign(input))
}

func TestVerifierAccepts(t *testing.T) {
	signing := selfSigned(t, RS256, "signer")
	root := signing.Chain[0]

	// A chain: root CA → intermediate → leaf holding an ES256 key.
	caKey, interKey, leafKey := testKey(t, ES256, "ca"), testKey(t, ES256, "inter"), testKey(t, ES256, "leaf")
	ca := issueCert(t, "ca", caKey.Public(), nil, caKey, true, time.Now().Add(time.Hour))
	inter := issueCert(t, "inter", interKey.Public(), ca, caKey, true, time.Now().Add(time.Hour))
	leaf := issueCert(t, "leaf", leafKey.Public(), inter, interKey, false, time.Now().Add(time.Hour))

	jwksSigner := mustSigner(t, Key{Private: testKey(t, EdDSA, "jwks")})
	set := jwksSigner.JWKS()
	signingSet := mustSigner(t, signing).JWKS()

	arrayAud := validClaims()
	arrayAud.Audience = Audience{"other", testService}
	withinLeeway := validClaims()
	withinLeeway.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-30 * time.Second))
	withinLeeway.NotBefore = jwt.NewNumericDate(time.Now().Add(30 * time.Second))

	tests := []struct {
		name  string
		cfg   VerifierConfig
		token string
	}{
		{"x5c to root bundle", VerifierConfig{Roots: []*x509.Certificate{root}}, mustSign(t, mustSigner(t, signing), validClaims())},
		{"kid = thumbprint of a root key (no x5c)", VerifierConfig{Roots: []*x509.Certificate{root}}, mustSign(t, mustSigner(t, Key{Private: signing.Private}), validClaims())},
		{"x5c through an intermediate", VerifierConfig{Roots: []*x509.Certificate{ca}}, mustSign(t, mustSigner(t, Key{Private: leafKey, Chain: []*x509.Certificate{leaf, inter}}), validClaims())},
		{"kid in JWKS", VerifierConfig{JWKS: &set}, mustSign(t, jwksSigner, validClaims())},
		{"x5c without a root bundle, kid in JWKS", VerifierConfig{JWKS: &signingSet}, mustSign(t, mustSigner(t, signing), validClaims())},
		{"aud as array", VerifierConfig{Roots: []*x509.Certificate{root}}, mustSign(t, mustSigner(t, signing), arrayAud)},
		{"exp and nbf within leeway", VerifierConfig{Roots: []*x509.Certificate{root}}, mustSign(t, mustSigner(t, signing), withinLeeway)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustVerifier(t, tt.cfg)
			for range 2 { // the second time from the x5c cache
				c, err := v.Verify(tt.token)
				if err != nil {
					t.Fatal(err)
				}
				if c.Subject != "alice" || !c.Allows("repository", "team/app", "push") {
					t.Fatalf("claims %+v", c)
				}
			}
		})
	}
}

func TestVerifierRejects(t *testing.T) {
	signing := selfSigned(t, RS256, "signer")
	root := signing.Chain[0]
	signer := mustSigner(t, signing)
	kid := signer.KeyID()
	stranger := selfSigned(t, RS256, "stranger")
	rsaPub := signing.Private.Public()
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaPub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	claims := func(edit func(*Claims)) Claims {
		c := validClaims()
		edit(&c)
		return c
	}
	good := mustSign(t, signer, validClaims())
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"berth-auth","sub":"mallory","aud":"registry.example.com","exp":9999999999}`)) + "." + parts[2]
	hs256 := func(key []byte) func(string) []byte {
		return func(in string) []byte {
			m := hmac.New(sha256.New, key)
			m.Write([]byte(in))
			return m.Sum(nil)
		}
	}
	// An expired certificate in x5c, still issued by a trusted root.
	caKey := testKey(t, ES256, "ca")
	ca := issueCert(t, "ca", caKey.Public(), nil, caKey, true, time.Now().Add(time.Hour))
	leafKey := testKey(t, ES256, "leaf")
	expiredLeaf := issueCert(t, "leaf", leafKey.Public(), ca, caKey, false, time.Now().Add(-time.Minute))

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", rawToken(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid}, validClaims(), func(string) []byte { return nil }), ErrAlgorithm},
		{"HS256 keyed with the public key PEM", rawToken(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, validClaims(), hs256(pubPEM)), ErrAlgorithm},
		{"HS256 keyed with the public key DER", rawToken(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, validClaims(), hs256(pubDER)), ErrAlgorithm},
		{"unknown alg", rawToken(t, map[string]any{"alg": "XX999", "kid": kid}, validClaims(), func(string) []byte { return []byte("x") }), ErrAlgorithm},
		{"unknown kid", mustSign(t, mustSigner(t, Key{Private: stranger.Private}), validClaims()), ErrUntrustedKey},
		{"x5c chain not to the root", mustSign(t, mustSigner(t, stranger), validClaims()), ErrUntrustedKey},
		{"x5c certificate expired", mustSign(t, mustSigner(t, Key{Private: leafKey, Chain: []*x509.Certificate{expiredLeaf}}), validClaims()), ErrUntrustedKey},
		{"x5c not a list", rawToken(t, map[string]any{"alg": "RS256", "x5c": "abc"}, validClaims(), func(string) []byte { return []byte("x") }), ErrUntrustedKey},
		{"no kid and no x5c", rawToken(t, map[string]any{"alg": "RS256"}, validClaims(), func(string) []byte { return []byte("x") }), ErrUntrustedKey},
		{"ES256 header on an RSA kid", rawToken(t, map[string]any{"alg": "ES256", "kid": kid}, validClaims(), func(string) []byte { return make([]byte, 64) }), ErrUntrustedKey},
		{"tampered claims", tampered, ErrBadSignature},
		{"wrong issuer", mustSign(t, signer, claims(func(c *Claims) { c.Issuer = "evil" })), ErrWrongIssuer},
		{"wrong audience", mustSign(t, signer, claims(func(c *Claims) { c.Audience = Audience{"other-registry"} })), ErrWrongAudience},
		{"wrong audience in array", mustSign(t, signer, claims(func(c *Claims) { c.Audience = Audience{"a", "b"} })), ErrWrongAudience},
		{"expired", mustSign(t, signer, claims(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-61 * time.Second)) })), ErrExpired},
		{"not yet valid", mustSign(t, signer, claims(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(2 * time.Minute)) })), ErrNotYetValid},
		{"malformed: one part", "abc", ErrMalformedToken},
		{"malformed: empty", "", ErrMalformedToken},
		{"malformed: garbage parts", "a.b.c", ErrMalformedToken},
		{"malformed: two parts", parts[0] + "." + parts[1], ErrMalformedToken},
		{"malformed: claims not JSON", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[2], ErrMalformedToken},
		{"malformed: aud a number", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"berth-auth","aud":42,"exp":9999999999}`)) + "." + parts[2], ErrMalformedToken},
	}

	v := mustVerifier(t, VerifierConfig{Roots: []*x509.Certificate{root, ca}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v (and ErrInvalidToken)", err, tt.want)
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Reason != tt.want {
				t.Fatalf("error %#v is not a *TokenError with reason %v", err, tt.want)
			}
		})
	}
}

// TestVerifierClaimNamesAreCaseSensitive: "AUD" is not "aud" (RFC 7519),
// even in a token signed by a trusted key. encoding/json alone would fill
// the claims from either.
func TestVerifierClaimNamesAreCaseSensitive(t *testing.T) {
	k := selfSigned(t, ES256, "names")
	v := mustVerifier(t, VerifierConfig{Roots: k.Chain})
	kid := mustSigner(t, k).KeyID()
	exp := strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10)
	sign := func(claims string) string {
		input := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"`+kid+`"}`)) + "." +
			base64.RawURLEncoding.EncodeToString([]byte(claims))
		sig, err := jwt.SigningMethodES256.Sign(input, k.Private)
		if err != nil {
			t.Fatal(err)
		}
		return input + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	for claims, want := range map[string]error{
		`{"iss":"berth-auth","AUD":"registry.example.com","exp":` + exp + `}`:               ErrMalformedToken, // no "aud"
		`{"ISS":"berth-auth","aud":"registry.example.com","exp":` + exp + `}`:               ErrMalformedToken, // no "iss"
		`{"iss":"berth-auth","aud":"registry.example.com","Exp":` + exp + `}`:               ErrMalformedToken, // no "exp"
		`{"iss":"evil","aud":"registry.example.com","exp":` + exp + `,"Iss":"berth-auth"}`:  ErrWrongIssuer,
		`{"iss":"berth-auth","aud":"other","exp":` + exp + `,"aUd":"registry.example.com"}`: ErrWrongAudience,
	} {
		if _, err := v.Verify(sign(claims)); !errors.Is(err, want) {
			t.Errorf("claims %s: %v, want %v", claims, err, want)
		}
	}
	c, err := v.Verify(sign(`{"iss":"berth-auth","aud":"registry.example.com","exp":` + exp +
		`,"Access":[{"type":"repository","name":"a","actions":["push"]}],"access":[{"TYPE":"repository","type":"registry","Name":"a","name":"catalog","actions":["*"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Scope{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}; !reflect.DeepEqual(c.Access, want) {
		t.Fatalf("access %+v, want %+v", c.Access, want)
	}
}

func TestNewVerifierRefusesUnsafeConfig(t *testing.T) {
	root := selfSigned(t, RS256, "signer").Chain[0]
	for name, cfg := range map[string]VerifierConfig{
		"HS256 pinned": {Issuer: "i", Service: "s", Roots: []*x509.Certificate{root}, Algorithms: []string{"RS256", "HS256"}},
		"none pinned":  {Issuer: "i", Service: "s", Roots: []*x509.Certificate{root}, Algorithms: []string{"none"}},
		"no keys":      {Issuer: "i", Service: "s"},
		"no issuer":    {Service: "s", Roots: []*x509.Certificate{root}},
		"no service":   {Issuer: "i", Roots: []*x509.Certificate{root}},
	} {
		if _, err := NewVerifier(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestVerifierPinnedAlgorithms(t *testing.T) {
	k := selfSigned(t, ES256, "pinned")
	tok := mustSign(t, mustSigner(t, k), validClaims())
	v := mustVerifier(t, VerifierConfig{Roots: k.Chain, Algorithms: []string{"RS256"}})
	if _, err := v.Verify(tok); !errors.Is(err, ErrAlgorithm) {
		t.Fatalf("ES256 token with only RS256 pinned: %v", err)
	}
}

func TestVerifierSetJWKS(t *testing.T) {
	a := mustSigner(t, Key{Private: testKey(t, EdDSA, "a")})
	b := mustSigner(t, Key{Private: testKey(t, ES256, "b")})
	setA := a.JWKS()
	v := mustVerifier(t, VerifierConfig{JWKS: &setA})
	tokB := mustSign(t, b, validClaims())
	if _, err := v.Verify(tokB); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("before refresh: %v", err)
	}
	setB := b.JWKS()
	if err := v.SetJWKS(&setB); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tokB); err != nil {
		t.Fatalf("after refresh: %v", err)
	}
	if _, err := v.Verify(mustSign(t, a, validClaims())); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("old key still trusted: %v", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		k := selfSigned(b, alg, "bench")
		for _, withX5c := range []bool{true, false} {
			key := k
			name := alg + "/kid"
			if withX5c {
				name = alg + "/x5c"
			} else {
				key = Key{Private: k.Private}
			}
			tok := mustSign(b, mustSigner(b, key), validClaims())
			v := mustVerifier(b, VerifierConfig{Roots: k.Chain})
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.Verify(tok); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestLoadVerifierFromFiles(t *testing.T) {
	dir := t.TempDir()
	bundled := selfSigned(t, RS256, "signer")
	published := mustSigner(t, Key{Private: testKey(t, EdDSA, "jwks")})
	bundle, jwksFile := dir+"/token.crt", dir+"/jwks.json"
	if err := osfile.WriteFile(bundle, EncodeCertificatesPEM(bundled.Chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(published.JWKS())
	if err := osfile.WriteFile(jwksFile, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(testIssuer, testService, bundle, jwksFile, []string{"RS256", "EdDSA"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Signer{mustSigner(t, bundled), published} {
		if _, err := v.Verify(mustSign(t, s, validClaims())); err != nil {
			t.Fatalf("%s token: %v", s.Algorithm(), err)
		}
	}
	if _, err := LoadVerifier(testIssuer, testService, "", "", nil); err == nil {
		t.Fatal("no bundle and no jwks accepted")
	}
	if _, err := LoadVerifier(testIssuer, testService, dir+"/missing.crt", "", nil); err == nil || !strings.Contains(err.Error(), "rootcertbundle") {
		t.Fatalf("missing bundle: %v", err)
	}
	if _, err := LoadVerifier(testIssuer, testService, jwksFile, "", nil); err == nil {
		t.Fatal("a bundle without certificates accepted")
	}
}
