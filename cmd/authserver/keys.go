package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/internal/osfile"
)

func keysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage token signing keys"}
	cmd.AddCommand(keysGenerateCmd(), keysJWKSCmd())
	return cmd
}

func keysGenerateCmd() *cobra.Command {
	var (
		configPath, keyPath, certPath, alg, cn string
		days                                   int
		force                                  bool
	)
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Create a token signing key and its self-signed certificate",
		Long: "Creates a token signing key (file mode 0600) and a self-signed certificate for it.\n" +
			"Give the certificate to the registry as auth.token.rootcertbundle. Existing files are\n" +
			"never overwritten without --force.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			if keyPath == "" {
				keyPath = cfg.Token.Key
			}
			if certPath == "" {
				certPath = cfg.Token.Certificate
			}
			if keyPath == "" || certPath == "" {
				return errors.New("no key or certificate path: set --key and --certificate")
			}
			if !force {
				for _, p := range []string{keyPath, certPath} {
					if _, err := os.Stat(p); err == nil {
						return fmt.Errorf("%s exists; not overwriting it (use --force)", p)
					}
				}
			}
			key, err := auth.GenerateKey(alg)
			if err != nil {
				return err
			}
			cert, err := auth.SelfSignedCertificate(key, cn, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			keyPEM, err := auth.EncodePrivateKeyPEM(key)
			if err != nil {
				return err
			}
			if err := writeNew(keyPath, keyPEM, 0o600, force); err != nil {
				return err
			}
			if err := writeNew(certPath, auth.EncodeCertificatesPEM(cert), 0o644, force); err != nil {
				return err
			}
			kid, _ := auth.Thumbprint(key.Public())
			algorithm, _ := auth.AlgorithmFor(key.Public())
			fmt.Fprintf(cmd.OutOrStdout(), "key %s (%s, kid %s)\ncertificate %s: give it to the registry as auth.token.rootcertbundle\n",
				keyPath, algorithm, kid, certPath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "configuration file naming token.key and token.certificate")
	cmd.Flags().StringVar(&keyPath, "key", "", "private key file (default: token.key)")
	cmd.Flags().StringVar(&certPath, "certificate", "", "certificate file (default: token.certificate)")
	cmd.Flags().StringVar(&alg, "algorithm", auth.RS256, "RS256, ES256 or EdDSA")
	cmd.Flags().StringVar(&cn, "cn", "Berth token signing key", "certificate common name")
	cmd.Flags().IntVar(&days, "days", 3650, "certificate validity in days")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing files")
	return cmd
}

// writeNew creates path with perm, atomically. Without force an existing
// file is an error (and so is a file created meanwhile); with force it is
// replaced.
func writeNew(path string, data []byte, perm os.FileMode, force bool) error {
	if force {
		return osfile.WriteFile(path, data, perm)
	}
	return osfile.WriteNew(path, data, perm)
}

func keysJWKSCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "jwks [config.yml]",
		Short: "Print the JWKS of the configured signing keys (for the registry's auth.token.jwks)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(configArg(args))
			if err != nil {
				return err
			}
			signer, err := loadSigner(cfg.Token)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(signer.JWKS())
		},
	}
}
