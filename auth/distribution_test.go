package auth

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// This file checks tokens the way CNCF Distribution v3 does
// (registry/auth/token: NewToken, Verify, VerifySigningKey), written here
// against go-jose v4, the library Distribution uses, so the Signer is tested
// by an implementation that shares no code with Verifier.

// distributionAlgorithms is Distribution's default list.
var distributionAlgorithms = []jose.SignatureAlgorithm{
	jose.EdDSA, jose.HS256, jose.HS384, jose.HS512, jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512,
}

type distClaims struct {
	Issuer     string   `json:"iss"`
	Subject    string   `json:"sub"`
	Audience   distAud  `json:"aud"`
	Expiration int64    `json:"exp"`
	NotBefore  int64    `json:"nbf"`
	IssuedAt   int64    `json:"iat"`
	JWTID      string   `json:"jti"`
	Access     []*Scope `json:"access"`
}

// distAud accepts a string or a list, as Distribution's AudienceList does.
type distAud []string

func (a *distAud) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = distAud{s}
		return nil
	}
	var l []string
	err := json.Unmarshal(b, &l)
	*a = l
	return err
}

// distTrust is what Distribution builds from rootcertbundle and jwks.
type distTrust struct {
	roots *x509.CertPool
	keys  map[string]crypto.PublicKey
}

func newDistTrust(t *testing.T, roots []*x509.Certificate, jwksDoc []byte) distTrust {
	t.Helper()
	tr := distTrust{roots: x509.NewCertPool(), keys: map[string]crypto.PublicKey{}}
	for _, c := range roots {
		tr.roots.AddCert(c)
		tp, err := (&jose.JSONWebKey{Key: c.PublicKey}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		tr.keys[base64.RawURLEncoding.EncodeToString(tp)] = c.PublicKey
	}
	if jwksDoc != nil {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(jwksDoc, &set); err != nil {
			t.Fatal(err)
		}
		for _, k := range set.Keys {
			tr.keys[k.KeyID] = k.Public().Key
		}
	}
	return tr
}

func distributionVerify(raw string, tr distTrust, issuer, service string) (*distClaims, error) {
	tok, err := josejwt.ParseSigned(raw, distributionAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("malformed: %w", err)
	}
	if len(tok.Headers) == 0 {
		return nil, errors.New("no header")
	}
	h := tok.Headers[0]
	var key crypto.PublicKey
	chains, err := h.Certificates(x509.VerifyOptions{Roots: tr.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	switch {
	case err == nil:
		key = chains[0][0].PublicKey
	case errors.Is(err, jose.ErrMissingX5cHeader) && h.KeyID != "":
		k, ok := tr.keys[h.KeyID]
		if !ok {
			return nil, fmt.Errorf("untrusted kid %q", h.KeyID)
		}
		key = k
	default:
		return nil, err
	}
	var c distClaims
	if err := tok.Claims(key, &c); err != nil {
		return nil, err
	}
	if c.Issuer != issuer {
		return nil, errors.New("issuer")
	}
	if !slices.Contains(c.Audience, service) {
		return nil, errors.New("audience")
	}
	now := time.Now()
	if now.After(time.Unix(c.Expiration, 0).Add(60*time.Second)) || now.Before(time.Unix(c.NotBefore, 0).Add(-60*time.Second)) {
		return nil, errors.New("time")
	}
	return &c, nil
}

func TestTokenAcceptedByDistributionRules(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		k := selfSigned(t, alg, "dist")
		t.Run(alg+"/x5c to rootcertbundle", func(t *testing.T) {
			tok := mustSign(t, mustSigner(t, k), validClaims())
			c, err := distributionVerify(tok, newDistTrust(t, k.Chain, nil), testIssuer, testService)
			if err != nil {
				t.Fatal(err)
			}
			checkDistClaims(t, c)
		})
		t.Run(alg+"/RFC 7638 kid, no x5c, rootcertbundle", func(t *testing.T) {
			tok := mustSign(t, mustSigner(t, Key{Private: k.Private}), validClaims())
			c, err := distributionVerify(tok, newDistTrust(t, k.Chain, nil), testIssuer, testService)
			if err != nil {
				t.Fatal(err)
			}
			checkDistClaims(t, c)
		})
		t.Run(alg+"/kid from the JWKS document", func(t *testing.T) {
			s := mustSigner(t, Key{Private: k.Private})
			doc, _ := json.Marshal(s.JWKS())
			c, err := distributionVerify(mustSign(t, s, validClaims()), newDistTrust(t, nil, doc), testIssuer, testService)
			if err != nil {
				t.Fatal(err)
			}
			checkDistClaims(t, c)
		})
	}
	// A fact to configure by: Distribution with only a jwks (no
	// rootcertbundle) refuses a token that carries x5c, because it tries
	// the chain and fails before it looks at the kid. Berth's Verifier
	// falls back to the kid. So for such registries the auth server must
	// run without token.certificate.
	withX5c := selfSigned(t, RS256, "dist")
	doc, _ := json.Marshal(mustSigner(t, withX5c).JWKS())
	if _, err := distributionVerify(mustSign(t, mustSigner(t, withX5c), validClaims()), newDistTrust(t, nil, doc), testIssuer, testService); err == nil {
		t.Fatal("Distribution's rules accepted x5c without a root bundle: update the note above")
	}

	// And the same rules refuse a token signed by a stranger.
	stranger := selfSigned(t, RS256, "stranger")
	trusted := selfSigned(t, RS256, "dist")
	if _, err := distributionVerify(mustSign(t, mustSigner(t, stranger), validClaims()), newDistTrust(t, trusted.Chain, nil), testIssuer, testService); err == nil {
		t.Fatal("stranger's x5c accepted: the test does not check chains")
	}
	if _, err := distributionVerify(mustSign(t, mustSigner(t, Key{Private: stranger.Private}), validClaims()), newDistTrust(t, trusted.Chain, nil), testIssuer, testService); err == nil {
		t.Fatal("stranger's kid accepted: the test does not check kids")
	}
}

func checkDistClaims(t *testing.T, c *distClaims) {
	t.Helper()
	if c.Subject != "alice" || len(c.Access) != 1 || c.Access[0].Name != "team/app" || !slices.Equal(c.Access[0].Actions, []string{"pull", "push"}) {
		t.Fatalf("claims as Distribution reads them: %+v", c)
	}
	if c.JWTID == "" || c.IssuedAt == 0 {
		t.Fatalf("jti/iat missing: %+v", c)
	}
}
