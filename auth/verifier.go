package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultAlgorithms are the signature algorithms a Verifier accepts when its
// configuration names none: every asymmetric JWS algorithm. HMAC algorithms
// and "none" are never accepted.
var DefaultAlgorithms = []string{
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA",
}

// DefaultLeeway is the clock skew allowed on "exp" and "nbf".
const DefaultLeeway = 60 * time.Second

// Errors of Verify. Every error Verify returns is a *TokenError matching
// ErrInvalidToken and exactly one of the others with errors.Is.
var (
	// ErrInvalidToken matches every verification failure: the registry
	// answers it with error="invalid_token".
	ErrInvalidToken = errors.New("invalid token")
	// ErrMalformedToken: not a JWS compact serialization, undecodable
	// header or claims, or a required claim ("exp", "iss", "aud") missing.
	// Claim names are case-sensitive: "AUD" is not "aud".
	ErrMalformedToken = errors.New("malformed token")
	// ErrAlgorithm: the "alg" header is not in the pinned list.
	ErrAlgorithm = errors.New("signature algorithm not accepted")
	// ErrUntrustedKey: no trusted key found for the token (unknown kid,
	// x5c chain not verifying to the root bundle, key type not matching alg).
	ErrUntrustedKey = errors.New("signing key not trusted")
	// ErrBadSignature: the signature does not verify with the trusted key.
	ErrBadSignature = errors.New("bad signature")
	// ErrWrongIssuer: "iss" is not the configured issuer.
	ErrWrongIssuer = errors.New("wrong issuer")
	// ErrWrongAudience: "aud" does not contain the configured service.
	ErrWrongAudience = errors.New("wrong audience")
	// ErrExpired: "exp" is more than the leeway in the past.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: "nbf" is more than the leeway in the future.
	ErrNotYetValid = errors.New("token not yet valid")
)

// TokenError is the error Verify returns. Reason is one of the sentinel
// errors above (other than ErrInvalidToken); Detail, when set, says more and is
// meant for logs, never for clients.
type TokenError struct {
	Reason error
	Detail error
}

// Error describes the reason and the detail.
func (e *TokenError) Error() string {
	if e.Detail == nil {
		return "invalid token: " + e.Reason.Error()
	}
	return "invalid token: " + e.Reason.Error() + ": " + e.Detail.Error()
}

// Unwrap makes errors.Is match ErrInvalidToken and the Reason.
func (e *TokenError) Unwrap() []error { return []error{ErrInvalidToken, e.Reason} }

// VerifierConfig configures a Verifier. Issuer, Service and at least one of
// Roots and JWKS are required.
type VerifierConfig struct {
	// Issuer is the exact "iss" tokens must carry.
	Issuer string
	// Service is the value "aud" must contain (a string or an array).
	Service string
	// Roots are the certificates of the root bundle (Distribution's
	// rootcertbundle). An "x5c" chain must verify to one of them, and a
	// "kid" without "x5c" may name the RFC 7638 thumbprint of one of
	// their keys.
	Roots []*x509.Certificate
	// JWKS holds more trusted keys, found by "kid" (the JWK's own "kid",
	// and its RFC 7638 thumbprint). Nil: none. See also SetJWKS.
	JWKS *JWKS
	// Algorithms pins the accepted "alg" values. Nil or empty means
	// DefaultAlgorithms; "none" and HMAC algorithms are refused.
	Algorithms []string
	// Leeway is the clock skew allowed on "exp" and "nbf". Zero means
	// DefaultLeeway.
	Leeway time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// Verifier checks registry tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    VerifierConfig
	roots  *x509.CertPool
	keys   atomic.Pointer[map[string]crypto.PublicKey] // by kid
	rootID map[string]crypto.PublicKey                 // thumbprints of root keys
	parser *jwt.Parser

	mu     sync.Mutex
	chains map[string]chainEntry // verified x5c headers
}

type chainEntry struct {
	key      crypto.PublicKey
	notAfter time.Time
}

const maxChainCache = 64

// NewVerifier checks cfg and builds a Verifier. The registry builds one from
// auth.token: Roots from LoadCertificates(rootcertbundle), JWKS from
// LoadJWKS(jwks), Issuer from issuer, Service from service and Algorithms
// from signingalgorithms.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Service == "" {
		return nil, errors.New("verifier: issuer and service are required")
	}
	if len(cfg.Roots) == 0 && cfg.JWKS == nil {
		return nil, errors.New("verifier: no trusted keys: configure a root certificate bundle or a JWKS")
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms
	}
	for _, a := range cfg.Algorithms {
		if !slices.Contains(DefaultAlgorithms, a) {
			return nil, fmt.Errorf("verifier: signing algorithm %q not accepted (want some of %s)", a, strings.Join(DefaultAlgorithms, ", "))
		}
	}
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg, roots: x509.NewCertPool(), rootID: map[string]crypto.PublicKey{}, chains: map[string]chainEntry{}}
	for _, c := range cfg.Roots {
		v.roots.AddCert(c)
		if kid, err := Thumbprint(c.PublicKey); err == nil {
			v.rootID[kid] = c.PublicKey
		}
	}
	if err := v.SetJWKS(cfg.JWKS); err != nil {
		return nil, err
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Service),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(cfg.Now),
	)
	return v, nil
}

// SetJWKS replaces the JWKS keys, for a registry that refreshes a JWKS it
// fetches. Keys of the root bundle stay trusted. A nil set removes the
// JWKS keys.
func (v *Verifier) SetJWKS(set *JWKS) error {
	keys := make(map[string]crypto.PublicKey, len(v.rootID))
	for kid, k := range v.rootID {
		keys[kid] = k
	}
	if set != nil {
		for _, j := range set.Keys {
			pub, err := j.PublicKey()
			if err != nil {
				return fmt.Errorf("verifier: jwks key %q: %w", j.Kid, err)
			}
			if j.Kid != "" {
				keys[j.Kid] = pub
			}
			keys[j.thumbprint()] = pub
		}
	}
	v.keys.Store(&keys)
	return nil
}

// Verify checks a token (the part after "Bearer ") and returns its claims.
// Every failure is a *TokenError matching ErrInvalidToken.
func (v *Verifier) Verify(token string) (*Claims, error) {
	var claims Claims
	tok, err := v.parser.ParseWithClaims(token, &claims, v.keyFor)
	if err == nil {
		return &claims, nil
	}
	return nil, v.classify(tok, err)
}

func (v *Verifier) classify(tok *jwt.Token, err error) error {
	reason := ErrMalformedToken
	var alg string
	if tok != nil {
		alg, _ = tok.Header["alg"].(string)
	}
	switch {
	case errors.Is(err, ErrUntrustedKey):
		reason = ErrUntrustedKey
	case tok != nil && alg != "" && !slices.Contains(v.cfg.Algorithms, alg):
		reason = ErrAlgorithm
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = ErrMalformedToken
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = ErrBadSignature
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = ErrWrongIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = ErrWrongAudience
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		reason = ErrNotYetValid
	}
	return &TokenError{Reason: reason, Detail: err}
}

// keyFor finds the trusted key of a token: by its x5c chain, verified to the
// root bundle, else by its kid. A kid naming a trusted key is enough even
// when an x5c chain does not verify (or no root bundle is configured): the
// signature must still verify with that trusted key.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	key, err := v.findKey(t.Header)
	if err != nil {
		return nil, err
	}
	if !keyFitsMethod(key, t.Method) {
		return nil, fmt.Errorf("%w: a %T cannot verify %s", ErrUntrustedKey, key, t.Method.Alg())
	}
	return key, nil
}

func (v *Verifier) findKey(h map[string]any) (crypto.PublicKey, error) {
	var chainErr error
	if x5c, ok := h["x5c"]; ok {
		chain, ok := x5c.([]any)
		if !ok || len(chain) == 0 {
			return nil, fmt.Errorf("%w: x5c is not a list of certificates", ErrUntrustedKey)
		}
		key, err := v.verifyChain(chain)
		if err == nil {
			return key, nil
		}
		chainErr = err
	}
	if kid, ok := h["kid"].(string); ok {
		if key, ok := (*v.keys.Load())[kid]; ok {
			return key, nil
		}
		if chainErr == nil {
			return nil, fmt.Errorf("%w: unknown kid %q", ErrUntrustedKey, kid)
		}
	}
	if chainErr != nil {
		return nil, chainErr
	}
	return nil, fmt.Errorf("%w: token names no key (no x5c, no kid)", ErrUntrustedKey)
}

func (v *Verifier) verifyChain(x5c []any) (crypto.PublicKey, error) {
	if len(v.cfg.Roots) == 0 {
		return nil, fmt.Errorf("%w: x5c given but no root bundle configured", ErrUntrustedKey)
	}
	strs := make([]string, len(x5c))
	for i, c := range x5c {
		s, ok := c.(string)
		if !ok {
			return nil, fmt.Errorf("%w: x5c entry is not a string", ErrUntrustedKey)
		}
		strs[i] = s
	}
	cacheKey := strings.Join(strs, ",")
	now := v.cfg.Now()
	v.mu.Lock()
	e, ok := v.chains[cacheKey]
	v.mu.Unlock()
	if ok && now.Before(e.notAfter) {
		return e.key, nil
	}
	certs := make([]*x509.Certificate, len(strs))
	for i, s := range strs {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: x5c: %v", ErrUntrustedKey, err)
		}
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("%w: x5c: %v", ErrUntrustedKey, err)
		}
	}
	opts := x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: x5c chain: %v", ErrUntrustedKey, err)
	}
	notAfter := certs[0].NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	v.mu.Lock()
	if len(v.chains) >= maxChainCache {
		clear(v.chains)
	}
	v.chains[cacheKey] = chainEntry{key: certs[0].PublicKey, notAfter: notAfter}
	v.mu.Unlock()
	return certs[0].PublicKey, nil
}

func keyFitsMethod(key crypto.PublicKey, m jwt.SigningMethod) bool {
	switch key.(type) {
	case *rsa.PublicKey:
		_, rs := m.(*jwt.SigningMethodRSA)
		_, ps := m.(*jwt.SigningMethodRSAPSS)
		return rs || ps
	case *ecdsa.PublicKey:
		_, ok := m.(*jwt.SigningMethodECDSA)
		return ok
	case ed25519.PublicKey:
		_, ok := m.(*jwt.SigningMethodEd25519)
		return ok
	}
	return false
}

// LoadVerifier builds a Verifier from a registry's auth.token settings:
// rootCertBundle and jwksFile are file paths (either may be empty, not
// both), algorithms the signingalgorithms list (empty: DefaultAlgorithms).
func LoadVerifier(issuer, service, rootCertBundle, jwksFile string, algorithms []string) (*Verifier, error) {
	cfg := VerifierConfig{Issuer: issuer, Service: service, Algorithms: algorithms}
	var err error
	if rootCertBundle != "" {
		if cfg.Roots, err = LoadCertificates(rootCertBundle); err != nil {
			return nil, fmt.Errorf("rootcertbundle: %w", err)
		}
	}
	if jwksFile != "" {
		if cfg.JWKS, err = LoadJWKS(jwksFile); err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
	}
	return NewVerifier(cfg)
}
