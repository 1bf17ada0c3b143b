package tlsutil

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
)

// TrustInstructions tells a person how to make clients trust the CA
// certificate in caFile when they connect to each of hostports (the
// registry address as clients write it: "registry.example:5000", or without
// a port for 443). The text names the CA's SHA-256 fingerprint and the
// certs.d paths of Docker on Linux and Windows, podman and containerd.
func TrustInstructions(caFile string, hostports ...string) (string, error) {
	cert, err := readCACert(caFile)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Clients must trust the CA certificate %s\n", caFile)
	fmt.Fprintf(&b, "  SHA-256 fingerprint %s\n", fingerprint(cert))
	fmt.Fprintf(&b, "  (compare: openssl x509 -noout -fingerprint -sha256 -in %s)\n", caFile)
	for _, hp := range hostports {
		p := trustPathsFor(hp)
		fmt.Fprintf(&b, "For %s copy it to:\n", hp)
		fmt.Fprintf(&b, "  Docker on Linux:           %s\n", p.dockerLinux)
		fmt.Fprintf(&b, "  Docker on Windows:         %s\n", p.dockerWindows)
		fmt.Fprintf(&b, "  podman, skopeo, buildah:   %s\n", p.podman)
		fmt.Fprintf(&b, "  containerd (config_path):  %s\n", p.containerd)
	}
	b.WriteString("Other clients (crane, regctl, oras, curl) use the system trust store:\n" +
		"  Debian/Ubuntu: copy it to /usr/local/share/ca-certificates/berth-ca.crt, run update-ca-certificates\n" +
		"  Windows and Docker Desktop: Import-Certificate -FilePath ca.crt -CertStoreLocation Cert:\\LocalMachine\\Root\n")
	return b.String(), nil
}

// trustPaths are where the CA certificate goes for one registry address.
type trustPaths struct {
	dockerLinux, dockerWindows, podman, containerd string
}

func trustPathsFor(hostport string) trustPaths {
	return trustPaths{
		dockerLinux: "/etc/docker/certs.d/" + hostport + "/ca.crt",
		// The Windows daemon drops the colon from the folder name.
		dockerWindows: `C:\ProgramData\docker\certs.d\` + strings.ReplaceAll(hostport, ":", "") + `\ca.crt`,
		podman:        "/etc/containers/certs.d/" + hostport + "/ca.crt",
		containerd:    "/etc/containerd/certs.d/" + hostport + "/ca.crt",
	}
}

// fingerprint is the SHA-256 of the certificate's DER encoding, as
// upper-case hex pairs separated by colons (openssl's format).
func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	parts := make([]string, len(sum))
	for i, c := range sum {
		parts[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(parts, ":")
}
