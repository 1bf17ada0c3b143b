package auth

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer  = "berth-auth"
	testService = "registry.example.com"
)

var (
	keyMu    sync.Mutex
	keyCache = map[string]crypto.Signer{}
)

// testKey returns a key for alg, one per (alg, name) per test binary: RSA
// key generation is slow.
func testKey(t testing.TB, alg, name string) crypto.Signer {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[alg+"/"+name]; ok {
		return k
	}
	k, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	keyCache[alg+"/"+name] = k
	return k
}

// selfSigned returns a key with a self-signed certificate as its chain.
func selfSigned(t testing.TB, alg, name string) Key {
	t.Helper()
	k := testKey(t, alg, name)
	c, err := SelfSignedCertificate(k, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Private: k, Chain: []*x509.Certificate{c}}
}

// issueCert signs a certificate for pub with parent/parentKey (self-signed
// when parent is nil).
func issueCert(t testing.TB, cn string, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, ca bool, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  ca,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// validClaims are claims any verifier configured with testIssuer and
// testService accepts.
func validClaims() Claims {
	now := time.Now()
	return Claims{
		Issuer:    testIssuer,
		Subject:   "alice",
		Audience:  Audience{testService},
		ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		Access:    []Scope{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}},
	}
}

func mustSigner(t testing.TB, keys ...Key) *Signer {
	t.Helper()
	s, err := NewSigner(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSign(t testing.TB, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mustVerifier(t testing.TB, cfg VerifierConfig) *Verifier {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Service == "" {
		cfg.Service = testService
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
