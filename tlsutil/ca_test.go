package tlsutil_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

func TestCAAndServerCertificateVerify(t *testing.T) {
	dir := t.TempDir()
	hosts := []string{"registry.example.com", "*.apps.example.com", "Berth", "127.0.0.1", "::1", "[fd00::5]"}
	files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: dir, Hosts: hosts}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !files.CACreated || files.Issued == "" {
		t.Fatalf("fresh directory: CACreated=%v Issued=%q, want a new CA and certificate", files.CACreated, files.Issued)
	}
	if files.CAFile != filepath.Join(dir, "ca.crt") || files.CertFile != filepath.Join(dir, "server.crt") {
		t.Errorf("files = %+v", files)
	}

	ca, leaf := readCert(t, files.CAFile), readCert(t, files.CertFile)
	if !ca.IsCA || !ca.MaxPathLenZero {
		t.Errorf("CA: IsCA=%v MaxPathLenZero=%v", ca.IsCA, ca.MaxPathLenZero)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if years := ca.NotAfter.Sub(ca.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("CA lifetime %.2f years, want 10", years)
	}
	if days := leaf.NotAfter.Sub(leaf.NotBefore).Hours() / 24; days < 360 || days > 370 {
		t.Errorf("server certificate lifetime %.0f days, want about a year", days)
	}
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server certificate: IsCA=%v ExtKeyUsage=%v", leaf.IsCA, leaf.ExtKeyUsage)
	}
	want := sha256.Sum256(ca.Raw)
	if got := strings.ReplaceAll(files.Fingerprint, ":", ""); !strings.EqualFold(got, fmt.Sprintf("%x", want)) {
		t.Errorf("fingerprint %s, want SHA-256 %x", files.Fingerprint, want)
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	verify := func(name string) error {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	for _, name := range []string{"registry.example.com", "REGISTRY.example.com", "x.apps.example.com", "berth", "127.0.0.1", "::1", "fd00::5"} {
		if err := verify(name); err != nil {
			t.Errorf("verify %s: %v", name, err)
		}
	}
	for _, name := range []string{"example.com", "other.example.com", "a.b.apps.example.com", "localhost", "127.0.0.2", "::2", "10.0.0.1"} {
		if err := verify(name); err == nil {
			t.Errorf("verify %s succeeded, want a name mismatch", name)
		}
	}
	// A different root does not verify the certificate at all.
	other := x509.NewCertPool()
	other.AddCert(newTestCA(t).cert)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "registry.example.com", Roots: other}); err == nil {
		t.Error("verified against an unrelated root")
	}

	for _, f := range []string{files.CAKeyFile, files.KeyFile} {
		testutil.CheckPrivate(t, f)
	}
}

func TestRSAKeys(t *testing.T) {
	dir := t.TempDir()
	files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: dir, Hosts: []string{"r.example"}, KeyType: tlsutil.KeyRSA}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{files.CAFile, files.CertFile} {
		pub, ok := readCert(t, f).PublicKey.(*rsa.PublicKey)
		if !ok || pub.N.BitLen() != 3072 {
			t.Errorf("%s: key %T, want RSA 3072", f, readCert(t, f).PublicKey)
		}
	}
	if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: dir, KeyType: "dsa"}, false); err == nil {
		t.Error("unknown key type accepted")
	}
}

func TestCAKeyIsNeverOverwritten(t *testing.T) {
	dir := t.TempDir()
	cfg := tlsutil.CAConfig{Dir: dir, Hosts: []string{"a.example"}}
	first, err := tlsutil.EnsureCertificates(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	caKey, _ := os.ReadFile(first.CAKeyFile)

	// Running again, even forced and for other hosts, keeps the CA.
	cfg.Hosts = []string{"b.example"}
	again, err := tlsutil.EnsureCertificates(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if again.CACreated || again.Fingerprint != first.Fingerprint {
		t.Errorf("second run: CACreated=%v fingerprint %s, want the same CA %s", again.CACreated, again.Fingerprint, first.Fingerprint)
	}
	if now, _ := os.ReadFile(first.CAKeyFile); !bytes.Equal(now, caKey) {
		t.Error("CA key changed")
	}

	// Without its certificate the key is kept and nothing is created.
	if err := os.Remove(first.CAFile); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsutil.EnsureCertificates(cfg, true); err == nil || !strings.Contains(err.Error(), "refusing to replace the CA key") {
		t.Errorf("CA certificate missing, key present: err = %v, want a refusal", err)
	}
	if now, _ := os.ReadFile(first.CAKeyFile); !bytes.Equal(now, caKey) {
		t.Error("CA key changed")
	}
	if _, err := os.Stat(first.CAFile); err == nil {
		t.Error("a new CA certificate was written next to the old key")
	}
}

func TestServerCertificateRenewal(t *testing.T) {
	dir := t.TempDir()
	cfg := tlsutil.CAConfig{Dir: dir, Name: "registry", Hosts: []string{"a.example", "10.1.2.3"}}
	first, err := tlsutil.EnsureCertificates(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(first.CertFile) != "registry.crt" || filepath.Base(first.KeyFile) != "registry.key" {
		t.Errorf("files %s %s, want registry.crt and registry.key", first.CertFile, first.KeyFile)
	}
	snapshot := func() (cert, key []byte) {
		cert, _ = os.ReadFile(first.CertFile)
		key, _ = os.ReadFile(first.KeyFile)
		return cert, key
	}
	cert0, key0 := snapshot()

	// Same hosts, valid certificate: kept.
	if got, err := tlsutil.EnsureCertificates(cfg, false); err != nil || got.Issued != "" {
		t.Fatalf("unchanged config: Issued=%q err=%v, want the certificate kept", got.Issued, err)
	}
	if c, k := snapshot(); !bytes.Equal(c, cert0) || !bytes.Equal(k, key0) {
		t.Fatal("unchanged config rewrote the certificate or key")
	}

	// A host the certificate does not cover: re-issued for all hosts.
	cfg.Hosts = append(cfg.Hosts, "b.example")
	got, err := tlsutil.EnsureCertificates(cfg, false)
	if err != nil || !strings.Contains(got.Issued, "b.example") {
		t.Fatalf("new host: Issued=%q err=%v, want a re-issue naming b.example", got.Issued, err)
	}
	leaf := readCert(t, got.CertFile)
	for _, h := range cfg.Hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("re-issued certificate: %v", err)
		}
	}
	if _, k := snapshot(); bytes.Equal(k, key0) {
		t.Error("re-issued certificate kept the old key")
	}

	// A certificate near expiry, signed by the CA: re-issued.
	ca := testCert{cert: readCert(t, got.CAFile), key: readKey(t, got.CAKeyFile)}
	expiring := newTestCert(t, &x509.Certificate{DNSNames: []string{"a.example", "b.example"},
		IPAddresses: readCert(t, got.CertFile).IPAddresses,
		NotBefore:   time.Now().Add(-300 * 24 * time.Hour), NotAfter: time.Now().Add(5 * 24 * time.Hour)}, &ca)
	expiring.write(t, dir, "registry")
	got, err = tlsutil.EnsureCertificates(cfg, false)
	if err != nil || !strings.Contains(got.Issued, "expires") {
		t.Fatalf("expiring certificate: Issued=%q err=%v, want a re-issue", got.Issued, err)
	}
	if leaf := readCert(t, got.CertFile); time.Until(leaf.NotAfter) < 300*24*time.Hour {
		t.Errorf("re-issued certificate expires %v", leaf.NotAfter)
	}

	// A certificate from another CA is not replaced silently ...
	foreign := newTestCert(t, &x509.Certificate{DNSNames: []string{"a.example"}}, nil)
	foreign.write(t, dir, "registry")
	cert1, key1 := snapshot()
	if _, err := tlsutil.EnsureCertificates(cfg, false); err == nil || !strings.Contains(err.Error(), "not issued by the CA") {
		t.Errorf("foreign certificate: err = %v, want a refusal", err)
	}
	if c, k := snapshot(); !bytes.Equal(c, cert1) || !bytes.Equal(k, key1) {
		t.Error("foreign certificate or key was replaced without force")
	}
	// ... only when forced.
	got, err = tlsutil.EnsureCertificates(cfg, true)
	if err != nil || got.Issued == "" {
		t.Fatalf("forced: Issued=%q err=%v", got.Issued, err)
	}
	if err := readCert(t, got.CertFile).CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("forced re-issue not signed by the CA: %v", err)
	}
	testutil.CheckPrivate(t, got.KeyFile)
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left-over file %s", e.Name())
		}
	}
}

func TestHostValidation(t *testing.T) {
	for _, hosts := range [][]string{{"registry.example:5000"}, {""}, {"a/b"}} {
		if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: t.TempDir(), Hosts: hosts}, false); err == nil {
			t.Errorf("hosts %q accepted", hosts)
		}
	}
	if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: t.TempDir(), Name: "../x"}, false); err == nil {
		t.Error("name ../x accepted")
	}
}

func TestTrustInstructions(t *testing.T) {
	files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: t.TempDir(), Hosts: []string{"registry.example"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	text, err := tlsutil.TrustInstructions(files.CAFile, "registry.example:5000", "10.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		files.Fingerprint,
		"/etc/docker/certs.d/registry.example:5000/ca.crt",
		`C:\ProgramData\docker\certs.d\registry.example5000\ca.crt`,
		"/etc/containers/certs.d/registry.example:5000/ca.crt",
		"/etc/containerd/certs.d/registry.example:5000/ca.crt",
		"/etc/docker/certs.d/10.0.0.7/ca.crt",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("instructions lack %q:\n%s", want, text)
		}
	}
	if _, err := tlsutil.TrustInstructions(files.CertFile, "x"); err == nil {
		t.Error("a server certificate was accepted as a CA")
	}
}
