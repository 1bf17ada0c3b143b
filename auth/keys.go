package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// Signing algorithms a Signer can use. The key type decides: RSA keys sign
// RS256, ECDSA P-256 keys ES256, Ed25519 keys EdDSA.
const (
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256, the default.
	RS256 = "RS256"
	// ES256 is ECDSA P-256 with SHA-256.
	ES256 = "ES256"
	// EdDSA is Ed25519.
	EdDSA = "EdDSA"
)

// Key is a private signing key and, optionally, its certificate chain (leaf
// first) which the Signer sends in the "x5c" header.
type Key struct {
	// Private signs tokens: *rsa.PrivateKey, *ecdsa.PrivateKey (P-256)
	// or ed25519.PrivateKey.
	Private crypto.Signer
	// Chain is the certificate of Private's public key, then any
	// intermediates. Empty: tokens carry no "x5c" header.
	Chain []*x509.Certificate
}

// AlgorithmFor returns the JWS algorithm for a key: RS256 for RSA, ES256 for
// ECDSA P-256, EdDSA for Ed25519.
func AlgorithmFor(pub crypto.PublicKey) (string, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits: want at least 2048", p.N.BitLen())
		}
		return RS256, nil
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return "", fmt.Errorf("ECDSA curve %s: only P-256 (ES256) is supported", p.Curve.Params().Name)
		}
		return ES256, nil
	case ed25519.PublicKey:
		return EdDSA, nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}

// GenerateKey creates a private key for alg (RS256: RSA 2048, ES256: ECDSA
// P-256, EdDSA: Ed25519). An empty alg means RS256.
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case RS256, "":
		return rsa.GenerateKey(rand.Reader, 2048)
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unsupported signing algorithm %q (want RS256, ES256 or EdDSA)", alg)
}

// SelfSignedCertificate makes a certificate for key, valid from now (less a
// minute of clock skew) for validity, usable as its own root: put it in the
// registry's rootcertbundle and tokens carrying it in "x5c" verify.
func SelfSignedCertificate(key crypto.Signer, commonName string, validity time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// EncodePrivateKeyPEM encodes a private key as a PKCS #8 "PRIVATE KEY" block.
func EncodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeCertificatesPEM encodes certificates as consecutive "CERTIFICATE"
// blocks.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParsePrivateKeyPEM decodes the first private key in PEM data: PKCS #8,
// PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no private key found in PEM data")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return s, nil
	}
}

// ParseCertificatesPEM decodes every "CERTIFICATE" block in data, skipping
// other blocks. It is how a rootcertbundle is read.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}

// LoadCertificates reads a PEM certificate bundle (such as the registry's
// rootcertbundle). A file holding no certificate is an error.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate found", path)
	}
	return certs, nil
}

// LoadKey reads a PEM private key file and, when certFile is not empty, its
// certificate chain (leaf first). The leaf must hold the key's public key.
func LoadKey(keyFile, certFile string) (Key, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return Key{}, err
	}
	priv, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", keyFile, err)
	}
	k := Key{Private: priv}
	if certFile != "" {
		if k.Chain, err = LoadCertificates(certFile); err != nil {
			return Key{}, err
		}
	}
	if err := k.check(); err != nil {
		return Key{}, fmt.Errorf("%s: %w", keyFile, err)
	}
	return k, nil
}

func (k Key) check() error {
	if k.Private == nil {
		return errors.New("no private key")
	}
	if _, err := AlgorithmFor(k.Private.Public()); err != nil {
		return err
	}
	if len(k.Chain) > 0 && !samePublicKey(k.Chain[0].PublicKey, k.Private.Public()) {
		return errors.New("the certificate does not hold this key's public key")
	}
	return nil
}
