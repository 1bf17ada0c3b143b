package tlsutil

import (
	"crypto/tls"
	"errors"
	"io/fs"
	"os"

	"github.com/berth-registry/berth/internal/osfile"
)

// loadKeyPair is tls.LoadX509KeyPair with the files read through osfile,
// so that reading them never blocks their replacement on Windows.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := osfile.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := osfile.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// fileExists reports whether name exists; other stat errors count as
// existing so that nothing is overwritten by mistake.
func fileExists(name string) bool {
	_, err := os.Stat(name)
	return !errors.Is(err, fs.ErrNotExist)
}
