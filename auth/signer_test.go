package auth

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// decodePart decodes one part of a compact JWS into v.
func decodePart(t *testing.T, token string, i int, v any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}

func TestSignerHeaderAndClaims(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			k := selfSigned(t, alg, "signer")
			s := mustSigner(t, k)
			c := validClaims()
			c.Access = append(c.Access, Scope{Type: "repository", Name: "other", Actions: nil})
			tok := mustSign(t, s, c)

			var h map[string]any
			decodePart(t, tok, 0, &h)
			kid, _ := Thumbprint(k.Private.Public())
			if h["alg"] != alg || h["typ"] != "JWT" || h["kid"] != kid {
				t.Fatalf("header %v, want alg %s typ JWT kid %s", h, alg, kid)
			}
			x5c, _ := h["x5c"].([]any)
			if len(x5c) != 1 || x5c[0] != base64.StdEncoding.EncodeToString(k.Chain[0].Raw) {
				t.Fatalf("x5c = %v", h["x5c"])
			}

			var p map[string]any
			decodePart(t, tok, 1, &p)
			if p["iss"] != testIssuer || p["sub"] != "alice" || p["aud"] != testService {
				t.Fatalf("claims %v", p)
			}
			for _, f := range []string{"exp", "nbf", "iat"} {
				if _, ok := p[f].(float64); !ok {
					t.Fatalf("%s = %v, want a number", f, p[f])
				}
			}
			if jti, _ := p["jti"].(string); len(jti) < 16 {
				t.Fatalf("jti = %v", p["jti"])
			}
			want := []any{
				map[string]any{"type": "repository", "name": "team/app", "actions": []any{"pull", "push"}},
				map[string]any{"type": "repository", "name": "other", "actions": []any{}},
			}
			if !reflect.DeepEqual(p["access"], want) {
				t.Fatalf("access = %#v", p["access"])
			}
		})
	}
}

func TestSignerWithoutCertificateHasNoX5c(t *testing.T) {
	s := mustSigner(t, Key{Private: testKey(t, RS256, "signer")})
	var h map[string]any
	decodePart(t, mustSign(t, s, validClaims()), 0, &h)
	if _, ok := h["x5c"]; ok || h["kid"] != s.KeyID() {
		t.Fatalf("header %v", h)
	}
}

func TestSignerEmptyAccessIsArray(t *testing.T) {
	c := validClaims()
	c.Access = nil
	tok := mustSign(t, mustSigner(t, Key{Private: testKey(t, ES256, "signer")}), c)
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if !strings.Contains(string(raw), `"access":[]`) {
		t.Fatalf("payload %s", raw)
	}
}

func TestSignerRotation(t *testing.T) {
	// issueCert starts validity an hour ago, selfSigned a minute ago.
	oldKey := testKey(t, RS256, "old")
	old := Key{Private: oldKey, Chain: []*x509.Certificate{issueCert(t, "old", oldKey.Public(), nil, oldKey, true, time.Now().Add(time.Hour))}}
	newer := selfSigned(t, ES256, "new")
	bare := Key{Private: testKey(t, EdDSA, "bare")}

	for _, order := range [][]Key{{old, newer, bare}, {newer, bare, old}, {bare, old, newer}} {
		s := mustSigner(t, order...)
		if s.Algorithm() != ES256 {
			t.Fatalf("signs with %s, want the newest key (ES256)", s.Algorithm())
		}
		set := s.JWKS()
		if len(set.Keys) != 3 {
			t.Fatalf("JWKS has %d keys, want all 3", len(set.Keys))
		}
		wantKid, _ := Thumbprint(newer.Private.Public())
		if set.Keys[0].Kid != wantKid || s.KeyID() != wantKid {
			t.Fatalf("first JWKS key %s, signing kid %s, want %s", set.Keys[0].Kid, s.KeyID(), wantKid)
		}
	}
	// Without certificates, the later key in the list wins.
	a, b := Key{Private: testKey(t, RS256, "a")}, Key{Private: testKey(t, ES256, "b")}
	if s := mustSigner(t, a, b); s.Algorithm() != ES256 {
		t.Fatalf("signs with %s, want the last key", s.Algorithm())
	}
}

func TestSignerRefusesMismatchedCertificate(t *testing.T) {
	k := selfSigned(t, RS256, "one")
	other := selfSigned(t, RS256, "two")
	if _, err := NewSigner(Key{Private: k.Private, Chain: other.Chain}); err == nil {
		t.Fatal("a certificate for another key was accepted")
	}
}

func TestThumbprintMatchesGoJose(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		pub := testKey(t, alg, "thumb").Public()
		got, err := Thumbprint(pub)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if want := base64.RawURLEncoding.EncodeToString(raw); got != want {
			t.Errorf("%s: Thumbprint = %s, go-jose says %s", alg, got, want)
		}
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	s := mustSigner(t, selfSigned(t, RS256, "j1"), Key{Private: testKey(t, ES256, "j2")}, Key{Private: testKey(t, EdDSA, "j3")})
	data, err := json.Marshal(s.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range set.Keys {
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if !samePublicKey(pub, s.keys[i].Private.Public()) {
			t.Errorf("key %d does not round-trip", i)
		}
		if k.Use != "sig" || k.Alg != s.keys[i].alg || k.Kid != s.keys[i].kid {
			t.Errorf("key %d: use %q alg %q kid %q", i, k.Use, k.Alg, k.Kid)
		}
	}
	// go-jose, which Distribution uses for its jwks file, reads it too.
	var js jose.JSONWebKeySet
	if err := json.Unmarshal(data, &js); err != nil {
		t.Fatalf("go-jose cannot read the JWKS: %v", err)
	}
	if len(js.Keys) != 3 {
		t.Fatalf("go-jose read %d keys", len(js.Keys))
	}
}

func TestParseJWKSRejectsBadKeys(t *testing.T) {
	k := selfSigned(t, RS256, "j1")
	other := selfSigned(t, RS256, "j4")
	j, _ := NewJWK(k.Private.Public())
	j.X5c = []string{base64.StdEncoding.EncodeToString(other.Chain[0].Raw)}
	for name, doc := range map[string]any{
		"x5c of another key": JWKS{Keys: []JWK{j}},
		"unknown kty":        JWKS{Keys: []JWK{{Kty: "oct"}}},
		"short EC":           JWKS{Keys: []JWK{{Kty: "EC", Crv: "P-256", X: "AQ", Y: "AQ"}}},
	} {
		data, _ := json.Marshal(doc)
		if _, err := ParseJWKS(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		k := testKey(t, alg, "pem")
		data, err := EncodePrivateKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParsePrivateKeyPEM(data)
		if err != nil {
			t.Fatal(err)
		}
		if !samePublicKey(back.Public(), k.Public()) {
			t.Errorf("%s: key does not round-trip", alg)
		}
	}
	c := selfSigned(t, ES256, "pem").Chain[0]
	certs, err := ParseCertificatesPEM(EncodeCertificatesPEM(c, c))
	if err != nil || len(certs) != 2 || !certs[0].Equal(c) {
		t.Fatalf("certificates: %v %d", err, len(certs))
	}
}
