package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
)

// JWK is a public JSON Web Key (RFC 7517) of type RSA, EC (P-256, P-384,
// P-521) or OKP (Ed25519).
type JWK struct {
	// Kty is the key type: RSA, EC or OKP.
	Kty string `json:"kty"`
	// Use is "sig" for signing keys; empty when not stated.
	Use string `json:"use,omitempty"`
	// Alg is the JWS algorithm the key is used with; empty when not stated.
	Alg string `json:"alg,omitempty"`
	// Kid identifies the key; tokens name it in their "kid" header.
	Kid string `json:"kid,omitempty"`
	// Crv is the curve of EC and OKP keys.
	Crv string `json:"crv,omitempty"`
	// N and E are the modulus and exponent of RSA keys (base64url).
	N string `json:"n,omitempty"`
	E string `json:"e,omitempty"`
	// X and Y are the coordinates of EC keys; X alone is an OKP key.
	X string `json:"x,omitempty"`
	Y string `json:"y,omitempty"`
	// X5c is the certificate chain, leaf first, each certificate in
	// standard base64 DER.
	X5c []string `json:"x5c,omitempty"`
}

// JWKS is a JSON Web Key Set, the document served at
// /.well-known/jwks.json. The zero value is an empty set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

var b64 = base64.RawURLEncoding

// NewJWK describes a public key as a JWK whose "kid" is its Thumbprint.
func NewJWK(pub crypto.PublicKey) (JWK, error) {
	var k JWK
	switch p := pub.(type) {
	case *rsa.PublicKey:
		k = JWK{Kty: "RSA", N: b64.EncodeToString(p.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())}
	case *ecdsa.PublicKey:
		crv, size, err := curveName(p.Curve)
		if err != nil {
			return JWK{}, err
		}
		raw, err := p.Bytes() // 0x04 || X || Y, fixed size
		if err != nil {
			return JWK{}, fmt.Errorf("ecdsa public key: %w", err)
		}
		k = JWK{Kty: "EC", Crv: crv, X: b64.EncodeToString(raw[1 : 1+size]), Y: b64.EncodeToString(raw[1+size:])}
	case ed25519.PublicKey:
		k = JWK{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(p)}
	default:
		return JWK{}, fmt.Errorf("unsupported public key type %T", pub)
	}
	k.Kid = k.thumbprint()
	return k, nil
}

// Thumbprint returns the RFC 7638 JWK thumbprint of a public key: SHA-256
// over the key's required members in lexicographic order, base64url without
// padding. It is the "kid" of every token the Signer issues.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	k, err := NewJWK(pub)
	if err != nil {
		return "", err
	}
	return k.Kid, nil
}

func (k JWK) thumbprint() string {
	var members string
	switch k.Kty {
	case "RSA":
		members = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, k.E, k.N)
	case "EC":
		members = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k.Crv, k.X, k.Y)
	case "OKP":
		members = fmt.Sprintf(`{"crv":%q,"kty":"OKP","x":%q}`, k.Crv, k.X)
	}
	sum := sha256.Sum256([]byte(members))
	return b64.EncodeToString(sum[:])
}

// PublicKey decodes the key. When the JWK carries an x5c chain, the leaf
// certificate's key must be the same key.
func (k JWK) PublicKey() (crypto.PublicKey, error) {
	pub, err := k.decode()
	if err != nil {
		return nil, err
	}
	if len(k.X5c) > 0 {
		der, err := base64.StdEncoding.DecodeString(k.X5c[0])
		if err != nil {
			return nil, fmt.Errorf("jwk %s: x5c: %w", k.Kid, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("jwk %s: x5c: %w", k.Kid, err)
		}
		if !samePublicKey(cert.PublicKey, pub) {
			return nil, fmt.Errorf("jwk %s: x5c certificate holds another key", k.Kid)
		}
	}
	return pub, nil
}

func (k JWK) decode() (crypto.PublicKey, error) {
	field := func(name, v string) ([]byte, error) {
		b, err := b64.DecodeString(v)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("jwk: bad %q", name)
		}
		return b, nil
	}
	switch k.Kty {
	case "RSA":
		n, err := field("n", k.N)
		if err != nil {
			return nil, err
		}
		e, err := field("e", k.E)
		if err != nil {
			return nil, err
		}
		eInt := new(big.Int).SetBytes(e)
		if !eInt.IsInt64() || eInt.Int64() < 3 || eInt.Int64() > 1<<31-1 {
			return nil, errors.New("jwk: bad RSA exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(eInt.Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("jwk: unsupported curve %q", k.Crv)
		}
		x, err := field("x", k.X)
		if err != nil {
			return nil, err
		}
		y, err := field("y", k.Y)
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("jwk: bad EC coordinate length")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("jwk: %w", err)
		}
		return pub, nil
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("jwk: unsupported curve %q", k.Crv)
		}
		x, err := field("x", k.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("jwk: bad Ed25519 key length")
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, fmt.Errorf("jwk: unsupported key type %q", k.Kty)
	}
}

// ParseJWKS decodes a JWKS document and checks that every key decodes.
func ParseJWKS(data []byte) (*JWKS, error) {
	var set JWKS
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	for _, k := range set.Keys {
		if _, err := k.PublicKey(); err != nil {
			return nil, fmt.Errorf("jwks: key %q: %w", k.Kid, err)
		}
	}
	return &set, nil
}

// LoadJWKS reads and parses a JWKS file.
func LoadJWKS(path string) (*JWKS, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseJWKS(data)
}

func curveName(c elliptic.Curve) (name string, size int, err error) {
	switch c {
	case elliptic.P256():
		return "P-256", 32, nil
	case elliptic.P384():
		return "P-384", 48, nil
	case elliptic.P521():
		return "P-521", 66, nil
	}
	return "", 0, fmt.Errorf("unsupported curve %s", c.Params().Name)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
