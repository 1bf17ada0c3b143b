// Package cli holds the subcommands that both programs offer in the same
// shape, so `registry certs` and `authserver certs` cannot drift apart.
package cli

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/tlsutil"
)

// CertsCommand returns `certs`: create the private CA if there is none, and
// issue (or renew) the server certificate named name for the given hosts.
// defaultPort names the certs.d folders in the printed instructions.
func CertsCommand(name, defaultPort string) *cobra.Command {
	var (
		dir     string
		hosts   []string
		port    string
		keyType string
		renew   bool
	)
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create the private CA and a server certificate (renew with --renew)",
		Long: `Creates, under --dir, a private CA (once; its key is never replaced) and a
server certificate signed by it for every --host (DNS names and IP addresses).
The certificate is re-issued when it nears expiry or does not cover a host;
--renew re-issues it in any case. Prints how clients trust the CA.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{
				Dir: dir, Name: name, Hosts: hosts, KeyType: tlsutil.KeyType(keyType), ClientPort: port,
			}, renew)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "CA certificate:     %s (sha256 %s)\n", files.CAFile, files.Fingerprint)
			fmt.Fprintf(out, "server certificate: %s\nserver key:         %s\n", files.CertFile, files.KeyFile)
			if files.Issued != "" {
				fmt.Fprintf(out, "issued: %s\n", files.Issued)
			}
			var hostports []string
			for _, h := range hosts {
				hostports = append(hostports, net.JoinHostPort(h, port))
			}
			if len(hostports) == 0 {
				hostports = []string{net.JoinHostPort("localhost", port)}
			}
			text, err := tlsutil.TrustInstructions(files.CAFile, hostports...)
			if err != nil {
				return err
			}
			fmt.Fprintln(out)
			fmt.Fprint(out, text)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "certs", "directory for the CA and certificates")
	f.StringSliceVar(&hosts, "host", nil, "DNS name or IP address the certificate is for (repeatable; default: this machine's name, localhost, 127.0.0.1, ::1)")
	f.StringVar(&port, "port", defaultPort, "port clients connect to (names the certs.d folder in the instructions)")
	f.StringVar(&keyType, "key-type", "ecdsa", "key algorithm: ecdsa (P-256) or rsa (3072)")
	f.BoolVar(&renew, "renew", false, "re-issue the server certificate even if it is still good")
	return cmd
}
