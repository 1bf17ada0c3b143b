package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
)

// KeyType selects the algorithm of private keys that the private CA
// generates, for the CA itself and for server certificates.
type KeyType string

// The key types. The zero KeyType means KeyECDSA.
const (
	KeyECDSA KeyType = "ecdsa" // ECDSA on the NIST P-256 curve
	KeyRSA   KeyType = "rsa"   // RSA with a 3072-bit modulus
)

// Lifetimes of generated certificates.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour // or a third of the lifetime, if shorter
	backdate     = time.Hour           // tolerate clients whose clocks are behind
)

// CAConfig configures the private certificate authority: a CA that Berth
// generates once and whose certificate clients are told to trust, and a
// server certificate it signs.
//
// Files in Dir: ca.crt and ca.key (the CA), <Name>.crt and <Name>.key (the
// server certificate). Several programs may share one Dir with different
// Names. To bring your own CA, put its certificate and key (PEM; PKCS #8,
// SEC 1 or PKCS #1) in ca.crt and ca.key before the first start.
type CAConfig struct {
	// Dir holds the CA and server certificate files. "" means "certs",
	// relative to the working directory.
	Dir string

	// Name is the base name of the server certificate files. "" means
	// "server" (server.crt, server.key). Programs that share a Dir need
	// different Names (say "registry" and "authserver"), or each start
	// re-issues the other's certificate for its own hosts.
	Name string

	// Hosts are the DNS names (wildcards allowed) and IP addresses the
	// server certificate is valid for. The first one is the name used in
	// the logged trust instructions, so put the name clients use first.
	// Empty means the machine's host name, localhost, 127.0.0.1 and ::1.
	Hosts []string

	// KeyType is the algorithm of generated keys; "" means KeyECDSA.
	KeyType KeyType

	// ClientPort is the port clients connect to (for example "5000"). It is
	// used only to name the certs.d folders in the logged trust
	// instructions. "" means the HTTPS default, 443.
	ClientPort string
}

// CertFiles describes the private CA and the server certificate as
// EnsureCertificates left them on disk.
type CertFiles struct {
	CAFile      string // the CA certificate (PEM): what clients must trust
	CAKeyFile   string // the CA private key (PEM, mode 0600)
	CertFile    string // the server certificate (PEM)
	KeyFile     string // the server private key (PEM, mode 0600)
	Fingerprint string // SHA-256 of the CA certificate, colon-separated hex as openssl prints it
	CACreated   bool   // the CA did not exist and was created
	Issued      string // why the server certificate was (re-)issued; "" when the existing one was kept
}

// EnsureCertificates creates the private CA if Dir has none, and issues the
// server certificate if it is missing, expires within 30 days, or does not
// cover every configured host. With force it re-issues the server
// certificate in any case, also replacing one that the CA did not sign.
//
// It never replaces the CA key, and never replaces a server key without
// force unless it issues a certificate for it because the old one is
// missing, expiring or incomplete. Keys are written with mode 0600; every
// file is written to a temporary file, synced and renamed into place, so a
// running server that reloads them sees the old pair or the new one.
func EnsureCertificates(cfg CAConfig, force bool) (CertFiles, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return CertFiles{}, err
	}
	files := CertFiles{
		CAFile:    filepath.Join(cfg.Dir, "ca.crt"),
		CAKeyFile: filepath.Join(cfg.Dir, "ca.key"),
		CertFile:  filepath.Join(cfg.Dir, cfg.Name+".crt"),
		KeyFile:   filepath.Join(cfg.Dir, cfg.Name+".key"),
	}
	caCert, created, err := loadOrCreateCA(files.CAFile, files.CAKeyFile, cfg.KeyType)
	if err != nil {
		return files, err
	}
	files.CACreated = created
	files.Fingerprint = fingerprint(caCert)

	now := time.Now()
	reason, err := leafReason(files.CertFile, files.KeyFile, caCert, cfg.Hosts, force, now)
	if err != nil || reason == "" {
		return files, err
	}
	caKey, err := loadCAKey(files.CAKeyFile, caCert)
	if err != nil {
		return files, err
	}
	if err := issueLeaf(caCert, caKey, cfg, files.CertFile, files.KeyFile, now); err != nil {
		return files, err
	}
	files.Issued = reason
	return files, nil
}

func (c CAConfig) withDefaults() (CAConfig, error) {
	if c.Dir == "" {
		c.Dir = "certs"
	}
	if c.Name == "" {
		c.Name = "server"
	}
	if c.Name == "ca" || c.Name != filepath.Base(c.Name) || strings.ContainsAny(c.Name, `/\`) {
		return c, fmt.Errorf("tlsutil: certificate name %q: want a plain file name other than \"ca\"", c.Name)
	}
	switch c.KeyType {
	case "":
		c.KeyType = KeyECDSA
	case KeyECDSA, KeyRSA:
	default:
		return c, fmt.Errorf("tlsutil: key type %q: want %q or %q", c.KeyType, KeyECDSA, KeyRSA)
	}
	hosts := c.Hosts
	if len(hosts) == 0 {
		hosts = defaultHosts()
	}
	var err error
	if c.Hosts, err = normalizeHosts(hosts); err != nil {
		return c, err
	}
	return c, nil
}

func defaultHosts() []string {
	var hosts []string
	if h, err := os.Hostname(); err == nil && h != "" && !strings.EqualFold(h, "localhost") {
		hosts = append(hosts, h)
	}
	return append(hosts, "localhost", "127.0.0.1", "::1")
}

// normalizeHosts lower-cases DNS names, canonicalises IP addresses, drops
// duplicates and refuses anything that is neither.
func normalizeHosts(hosts []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			h = ip.String()
		} else {
			h = strings.TrimSuffix(strings.ToLower(h), ".")
			if h == "" || strings.ContainsAny(h, ":/ \t[]") {
				return nil, fmt.Errorf("tlsutil: host %q: want a DNS name or an IP address, without a port", h)
			}
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out, nil
}

// loadOrCreateCA returns the CA certificate from certFile, creating the CA
// first when neither file exists. When two processes start on a fresh
// directory at once, the one that links the key into place creates the CA
// and the other waits for its certificate.
func loadOrCreateCA(certFile, keyFile string, kt KeyType) (*x509.Certificate, bool, error) {
	if fileExists(certFile) {
		cert, err := readCACert(certFile)
		return cert, false, err
	}
	if fileExists(keyFile) {
		return nil, false, fmt.Errorf("tlsutil: %s exists but %s does not: refusing to replace the CA key "+
			"(restore the certificate, or remove the key to create a new CA)", keyFile, certFile)
	}
	key, err := generateKey(kt)
	if err != nil {
		return nil, false, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, false, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"Berth"},
			CommonName:   fmt.Sprintf("Berth private CA %X", serial.Bytes()[:4]),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, false, err
	}
	if err := osfile.WriteNew(keyFile, keyPEM, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			cert, err := waitForCACert(certFile)
			return cert, false, err
		}
		return nil, false, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := osfile.WriteNew(certFile, certPEM, 0o644); err != nil {
		return nil, false, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, true, err
}

// waitForCACert waits for a concurrent creator to finish writing the CA.
func waitForCACert(certFile string) (*x509.Certificate, error) {
	for range 50 {
		if fileExists(certFile) {
			return readCACert(certFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("tlsutil: the CA key exists but %s did not appear", certFile)
}

func readCACert(certFile string) (*x509.Certificate, error) {
	data, err := osfile.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: reading CA certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("tlsutil: %s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("tlsutil: %s is not a CA certificate", certFile)
	}
	return cert, nil
}

// loadCAKey reads the CA's private key and checks that it belongs to cert.
func loadCAKey(keyFile string, cert *x509.Certificate) (crypto.Signer, error) {
	data, err := osfile.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: the CA key is needed to issue a server certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("tlsutil: %s: no PEM private key", keyFile)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		err = fmt.Errorf("unsupported PEM type %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tlsutil: %s: key cannot sign", keyFile)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("tlsutil: %s does not belong to the CA certificate", keyFile)
	}
	return signer, nil
}

// leafReason says why the server certificate must be issued, "" if the
// current one is fine, or an error if issuing would replace a key that
// only force may replace.
func leafReason(certFile, keyFile string, ca *x509.Certificate, hosts []string, force bool, now time.Time) (string, error) {
	certOK, keyOK := fileExists(certFile), fileExists(keyFile)
	switch {
	case !certOK && !keyOK:
		return "no server certificate yet", nil
	case !keyOK:
		return "server key missing", nil
	case !certOK && force:
		return "server certificate missing", nil
	case !certOK:
		return "", fmt.Errorf("tlsutil: %s exists without %s: not replacing the key unless forced to renew", keyFile, certFile)
	}
	pair, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		if force {
			return "unusable server certificate: " + err.Error(), nil
		}
		return "", fmt.Errorf("tlsutil: server certificate unusable, not replacing it unless forced to renew: %w", err)
	}
	leaf := pair.Leaf
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		if force {
			return "server certificate not issued by this CA", nil
		}
		return "", fmt.Errorf("tlsutil: %s was not issued by the CA in this directory; "+
			"not replacing it unless forced to renew (or configure it as certificate and key files)", certFile)
	}
	if force {
		return "renewal forced", nil
	}
	margin := min(renewBefore, leaf.NotAfter.Sub(leaf.NotBefore)/3)
	if now.After(leaf.NotAfter.Add(-margin)) {
		return "server certificate expires " + leaf.NotAfter.UTC().Format(time.RFC3339), nil
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return fmt.Sprintf("server certificate does not cover %q", h), nil
		}
	}
	return "", nil
}

// issueLeaf writes a new server key and certificate signed by the CA.
func issueLeaf(ca *x509.Certificate, caKey crypto.Signer, cfg CAConfig, certFile, keyFile string, now time.Time) error {
	key, err := generateKey(cfg.KeyType)
	if err != nil {
		return err
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(leafLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, h := range cfg.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(cfg.Hosts[0]) <= 64 {
		tmpl.Subject.CommonName = cfg.Hosts[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	// Key first, then certificate: a reader in between sees a mismatched
	// pair, which the reloader refuses while keeping the old one.
	if err := osfile.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return osfile.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func generateKey(kt KeyType) (crypto.Signer, error) {
	if kt == KeyRSA {
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, top bit cleared to stay positive; never zero.
	max := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, max)
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1<<62)), nil
}
