package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Signer issues registry tokens. It holds one or more keys: it signs with the
// newest and publishes all of them in its JWKS, so a new key can be announced
// before it is used and an old one kept until its tokens have expired.
type Signer struct {
	keys   []signingKey // newest first
	method jwt.SigningMethod
}

type signingKey struct {
	Key
	kid string
	alg string
	x5c []string
}

// NewSigner builds a Signer from keys. The newest key signs: the one whose
// certificate has the latest NotBefore; keys without a certificate count as
// oldest; ties go to the key later in the list.
func NewSigner(keys ...Key) (*Signer, error) {
	if len(keys) == 0 {
		return nil, errors.New("signer: no key")
	}
	s := &Signer{}
	for i, k := range keys {
		if err := k.check(); err != nil {
			return nil, fmt.Errorf("signer: key %d: %w", i+1, err)
		}
		sk := signingKey{Key: k}
		sk.alg, _ = AlgorithmFor(k.Private.Public())
		sk.kid, _ = Thumbprint(k.Private.Public())
		for _, c := range k.Chain {
			sk.x5c = append(sk.x5c, base64.StdEncoding.EncodeToString(c.Raw))
		}
		s.keys = append(s.keys, sk)
	}
	slices.Reverse(s.keys) // later in the list wins ties in the stable sort
	slices.SortStableFunc(s.keys, func(a, b signingKey) int {
		return -notBefore(a.Chain).Compare(notBefore(b.Chain))
	})
	s.method = jwt.GetSigningMethod(s.keys[0].alg)
	return s, nil
}

// notBefore is the start of validity of the chain's leaf, or the zero time
// (earlier than any certificate) without a chain.
func notBefore(chain []*x509.Certificate) time.Time {
	if len(chain) > 0 {
		return chain[0].NotBefore
	}
	return time.Time{}
}

// Algorithm is the JWS algorithm of the signing key (RS256, ES256 or EdDSA).
func (s *Signer) Algorithm() string { return s.keys[0].alg }

// KeyID is the "kid" of the signing key: its RFC 7638 thumbprint.
func (s *Signer) KeyID() string { return s.keys[0].kid }

// Sign encodes claims as a compact JWS with header typ "JWT", the signing
// key's "kid", and "x5c" when the key has a certificate. It fills in a
// random ID when claims.ID is empty and encodes missing access lists as [].
func (s *Signer) Sign(claims Claims) (string, error) {
	if claims.Issuer == "" || len(claims.Audience) == 0 || claims.ExpiresAt == nil {
		return "", errors.New("sign: issuer, audience and expiry are required")
	}
	if claims.ID == "" {
		claims.ID = NewID()
	}
	access := make([]Scope, len(claims.Access))
	for i, a := range claims.Access {
		if a.Actions == nil {
			a.Actions = []string{}
		}
		access[i] = a
	}
	claims.Access = access
	k := s.keys[0]
	t := jwt.NewWithClaims(s.method, &claims)
	t.Header["kid"] = k.kid
	if len(k.x5c) > 0 {
		t.Header["x5c"] = k.x5c
	}
	return t.SignedString(k.Private)
}

// JWKS returns the public keys of every key of the signer, signing key first,
// each with "use" sig, its "alg", its thumbprint as "kid", and "x5c" when it
// has a certificate.
func (s *Signer) JWKS() JWKS {
	set := JWKS{Keys: make([]JWK, 0, len(s.keys))}
	for _, k := range s.keys {
		j, _ := NewJWK(k.Private.Public()) // checked in NewSigner
		j.Use, j.Alg, j.X5c = "sig", k.alg, k.x5c
		set.Keys = append(set.Keys, j)
	}
	return set
}

// DeriveSecrets returns one 32-byte secret per key, derived from the private
// key and label with HMAC-SHA256, signing key first. The token server keys
// its refresh tokens with them, so refresh tokens survive restarts without
// another secret to configure, and rotate with the signing keys.
func (s *Signer) DeriveSecrets(label string) [][]byte {
	out := make([][]byte, 0, len(s.keys))
	for _, k := range s.keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			continue // checked key types all marshal
		}
		m := hmac.New(sha256.New, der)
		m.Write([]byte("berth derived secret\x00" + label))
		out = append(out, m.Sum(nil))
	}
	return out
}

// NewID returns 128 random bits, base64url encoded: a token "jti".
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
