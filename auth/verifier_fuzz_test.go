package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The fuzzed verifier's world: fixed keys, a root certificate valid
// 2000-2100 and a fixed now, so that inputs saved under testdata/fuzz mean
// the same on every run.
var fuzzNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type fuzzKeys struct {
	ec       *ecdsa.PrivateKey  // ES256, with x5c
	ed       ed25519.PrivateKey // EdDSA, by kid from a JWKS
	root     *x509.Certificate
	ecSigner *Signer
	edSigner *Signer
	verifier *Verifier
}

func newFuzzKeys(f *testing.F) *fuzzKeys {
	f.Helper()
	d := sha256.Sum256([]byte("berth fuzz ES256 key"))
	ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		f.Fatal(err)
	}
	seed := sha256.Sum256([]byte("berth fuzz EdDSA key"))
	k := &fuzzKeys{ec: ec, ed: ed25519.NewKeyFromSeed(seed[:])}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "berth fuzz"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ec.Public(), ec)
	if err != nil {
		f.Fatal(err)
	}
	if k.root, err = x509.ParseCertificate(der); err != nil {
		f.Fatal(err)
	}
	k.ecSigner = mustSigner(f, Key{Private: ec, Chain: []*x509.Certificate{k.root}})
	k.edSigner = mustSigner(f, Key{Private: k.ed})
	set := k.edSigner.JWKS()
	k.verifier = mustVerifier(f, VerifierConfig{
		Issuer: testIssuer, Service: testService, Roots: []*x509.Certificate{k.root}, JWKS: &set,
		Now: func() time.Time { return fuzzNow },
	})
	return k
}

func fuzzClaims(edit func(*Claims)) Claims {
	c := Claims{
		Issuer:    testIssuer,
		Subject:   "alice",
		Audience:  Audience{testService},
		ExpiresAt: jwt.NewNumericDate(fuzzNow.Add(5 * time.Minute)),
		NotBefore: jwt.NewNumericDate(fuzzNow),
		IssuedAt:  jwt.NewNumericDate(fuzzNow),
		ID:        "fuzz",
		Access:    []Scope{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}},
	}
	if edit != nil {
		edit(&c)
	}
	return c
}

// segment is the base64url encoding of a JWS part.
func segment(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// checkAccepted fails unless token, which the verifier accepted with
// claims c, is what it must be, checked without the JWT library: three
// parts, an ES256 or EdDSA signature by one of the test keys over the first
// two, "iss" exactly the issuer, "aud" naming the service, "exp" present
// and not past (give or take the leeway), "nbf" not in the future, and
// claims that say what the verifier returned.
func (k *fuzzKeys) checkAccepted(t *testing.T, token string, c *Claims) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("accepted %q: %d parts", token, len(parts))
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("accepted %q: part %q: %v", token, s, err)
		}
		return b
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(dec(parts[0]), &header); err != nil {
		t.Fatalf("accepted %q: header: %v", token, err)
	}
	input, sig := []byte(parts[0]+"."+parts[1]), dec(parts[2])
	switch header.Alg {
	case "ES256":
		digest := sha256.Sum256(input)
		r, s := new(big.Int).SetBytes(sig[:min(32, len(sig))]), new(big.Int).SetBytes(sig[min(32, len(sig)):])
		if len(sig) != 64 || !ecdsa.Verify(&k.ec.PublicKey, digest[:], r, s) {
			t.Fatalf("accepted %q: not signed by the ES256 test key", token)
		}
	case "EdDSA":
		if !ed25519.Verify(k.ed.Public().(ed25519.PublicKey), input, sig) {
			t.Fatalf("accepted %q: not signed by the EdDSA test key", token)
		}
	default:
		t.Fatalf("accepted %q: alg %q", token, header.Alg)
	}

	var raw map[string]json.RawMessage // exact claim names, as RFC 7519 has them
	if err := json.Unmarshal(dec(parts[1]), &raw); err != nil {
		t.Fatalf("accepted %q: claims: %v", token, err)
	}
	var iss string
	if err := json.Unmarshal(raw["iss"], &iss); err != nil || iss != testIssuer {
		t.Fatalf("accepted %q: iss %s", token, raw["iss"])
	}
	var aud Audience
	if err := json.Unmarshal(raw["aud"], &aud); err != nil || !slices.Contains(aud, testService) {
		t.Fatalf("accepted %q: aud %s", token, raw["aud"])
	}
	now := float64(fuzzNow.Unix())
	leeway := DefaultLeeway.Seconds()
	exp, ok := numericDate(raw["exp"])
	if !ok || exp+leeway < now {
		t.Fatalf("accepted %q at %v: exp %s", token, fuzzNow, raw["exp"])
	}
	if nbf, ok := numericDate(raw["nbf"]); ok && math.Floor(nbf)-leeway > now {
		t.Fatalf("accepted %q at %v: nbf %s", token, fuzzNow, raw["nbf"])
	} else if !ok && raw["nbf"] != nil && string(raw["nbf"]) != "null" {
		t.Fatalf("accepted %q: nbf %s", token, raw["nbf"])
	}
	if c.Issuer != iss || !slices.Equal(c.Audience, aud) || c.ExpiresAt == nil {
		t.Fatalf("accepted %q: claims %+v", token, c)
	}
}

// numericDate reads a JSON number of seconds (or a string holding one,
// which the JWT library also accepts).
func numericDate(raw json.RawMessage) (float64, bool) {
	var n json.Number
	if raw == nil || json.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(n), 64)
	return v, err == nil && !math.IsInf(v, 0)
}

// FuzzVerify feeds the verifier arbitrary token strings, starting from
// valid tokens and the refused kinds of verifier_test.go, so most inputs
// are mutated valid tokens. Whatever it accepts must pass checkAccepted.
func FuzzVerify(f *testing.F) {
	k := newFuzzKeys(f)
	sign := func(s *Signer, c Claims) string { return mustSign(f, s, c) }
	valid, validEd := sign(k.ecSigner, fuzzClaims(nil)), sign(k.edSigner, fuzzClaims(nil))
	for _, tok := range []string{valid, validEd} {
		if _, err := k.verifier.Verify(tok); err != nil {
			f.Fatalf("a valid seed is refused: %v", err) // the checks would never run
		}
	}
	parts := strings.Split(valid, ".")
	for _, s := range []string{
		valid,
		validEd,
		sign(k.ecSigner, fuzzClaims(func(c *Claims) { c.Audience = Audience{"other", testService} })),
		sign(k.ecSigner, fuzzClaims(func(c *Claims) { c.Issuer = "evil" })),
		sign(k.ecSigner, fuzzClaims(func(c *Claims) { c.Audience = Audience{"other"} })),
		sign(k.ecSigner, fuzzClaims(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(fuzzNow.Add(-2 * time.Minute)) })),
		sign(k.ecSigner, fuzzClaims(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(fuzzNow.Add(2 * time.Minute)) })),
		segment([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".",
		segment([]byte(`{"alg":"HS256","typ":"JWT","kid":"`+k.ecSigner.KeyID()+`"}`)) + "." + parts[1] + "." + parts[2],
		parts[0] + "." + segment([]byte(`{"iss":"berth-auth","sub":"mallory","aud":"registry.example.com","exp":9999999999}`)) + "." + parts[2],
		parts[0] + "." + parts[1],
		"a.b.c",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := k.verifier.Verify(token)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) || !errors.Is(err, ErrInvalidToken) || te.Reason == nil {
				t.Fatalf("Verify(%q): error %v is not a *TokenError", token, err)
			}
			return
		}
		k.checkAccepted(t, token, c)
	})
}

// FuzzVerifySigned signs arbitrary headers and claims with the ES256 test
// key, so that the fuzzer explores what lies behind a good signature: the
// header's algorithm and key references, and the claims' names, types and
// values. Whatever the verifier accepts must pass checkAccepted.
func FuzzVerifySigned(f *testing.F) {
	k := newFuzzKeys(f)
	x5c := base64.StdEncoding.EncodeToString(k.root.Raw)
	headers := []string{
		`{"alg":"ES256","typ":"JWT","kid":"` + k.ecSigner.KeyID() + `","x5c":["` + x5c + `"]}`,
		`{"alg":"ES256","kid":"` + k.ecSigner.KeyID() + `"}`,
		`{"alg":"ES384","kid":"` + k.ecSigner.KeyID() + `"}`,
		`{"alg":"EdDSA","kid":"` + k.edSigner.KeyID() + `"}`,
		`{"alg":"ES256","x5c":"` + x5c + `"}`,
	}
	claims := []string{
		`{"iss":"berth-auth","sub":"alice","aud":"registry.example.com","exp":1893456300,"nbf":1893456000,"iat":1893456000,"jti":"fuzz","access":[{"type":"repository","name":"team/app","actions":["pull","push"]}]}`,
		`{"iss":"berth-auth","aud":["other","registry.example.com"],"exp":1893456300}`,
		`{"iss":"berth-auth","aud":"registry.example.com","exp":"1893456300","nbf":null}`,
		`{"iss":"berth-auth","aud":"registry.example.com","exp":1893456300.5,"nbf":1893456059.9}`,
		`{"iss":"berth-auth","aud":"registry.example.com"}`,
	}
	for _, h := range headers {
		for _, c := range claims {
			f.Add([]byte(h), []byte(c))
		}
	}
	signed := func(header, claims []byte) string {
		input := segment(header) + "." + segment(claims)
		sig, err := jwt.SigningMethodES256.Sign(input, k.ec)
		if err != nil {
			f.Fatal(err)
		}
		return input + "." + segment(sig)
	}
	if _, err := k.verifier.Verify(signed([]byte(headers[0]), []byte(claims[0]))); err != nil {
		f.Fatalf("a valid seed is refused: %v", err) // the checks would never run
	}
	f.Fuzz(func(t *testing.T, header, claims []byte) {
		token := signed(header, claims)
		c, err := k.verifier.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify: error %v does not match ErrInvalidToken", err)
			}
			return
		}
		k.checkAccepted(t, token, c)
	})
}
