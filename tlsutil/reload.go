package tlsutil

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// reloadInterval is how often, at most, the certificate files are checked
// for changes. The check is two stat calls, made from GetCertificate.
const reloadInterval = time.Second

// keyPairReloader serves a certificate and key from files and picks up new
// files without a restart. A new pair that does not load is logged and the
// previous pair stays in service.
type keyPairReloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	certStat  os.FileInfo // as of the last load attempt
	keyStat   os.FileInfo
	lastCheck time.Time
}

func newKeyPairReloader(certFile, keyFile string, logger *slog.Logger) (*keyPairReloader, error) {
	r := &keyPairReloader{certFile: certFile, keyFile: keyFile, logger: logger}
	certStat, keyStat := r.stat()
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: loading certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cert, r.certStat, r.keyStat, r.lastCheck = &cert, certStat, keyStat, time.Now()
	r.warnIfExpired(&cert)
	return r, nil
}

// GetCertificate is a tls.Config.GetCertificate hook.
func (r *keyPairReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.lastCheck) >= reloadInterval {
		r.lastCheck = now
		r.reloadIfChanged()
	}
	return r.cert, nil
}

// reloadIfChanged loads the pair again when either file changed since the
// last attempt, successful or not (so a broken pair is reported once, and
// retried when a file changes again). Called with r.mu held.
func (r *keyPairReloader) reloadIfChanged() {
	certStat, keyStat := r.stat()
	if certStat == nil || keyStat == nil {
		return // mid-replacement or removed: keep serving what we have
	}
	if sameFile(certStat, r.certStat) && sameFile(keyStat, r.keyStat) {
		return
	}
	r.certStat, r.keyStat = certStat, keyStat
	cert, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.logger.Error("TLS certificate changed but does not load; still serving the previous one",
			"certificate", r.certFile, "key", r.keyFile, "err", err)
		return
	}
	r.cert = &cert
	r.logger.Info("TLS certificate reloaded", "certificate", r.certFile,
		"subject", cert.Leaf.Subject.String(), "names", cert.Leaf.DNSNames,
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	r.warnIfExpired(&cert)
}

func (r *keyPairReloader) stat() (certStat, keyStat os.FileInfo) {
	certStat, _ = os.Stat(r.certFile)
	keyStat, _ = os.Stat(r.keyFile)
	return certStat, keyStat
}

func (r *keyPairReloader) warnIfExpired(cert *tls.Certificate) {
	if cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter) {
		r.logger.Warn("TLS certificate has expired", "certificate", r.certFile,
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// sameFile reports whether two stats show the same unchanged file: same
// inode (a rename or symlink swap changes it), size and modification time.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) &&
		a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
