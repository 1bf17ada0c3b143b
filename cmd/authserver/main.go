// Command authserver issues registry tokens to users of an htpasswd file,
// following the Docker registry token protocol.
//
//	authserver serve [config.yml]
//	authserver user add|passwd|rm|list NAME
//	authserver keys generate
//	authserver healthcheck [config.yml]
//	authserver version
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/gin-gonic/gin"
	"github.com/spf13/cobra"

	berthcli "github.com/berth-registry/berth/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	gin.SetMode(gin.ReleaseMode)
	if err := newRootCmd(os.Stdin, os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "authserver:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "authserver",
		Short:         "Token server for the Berth registry",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCmd(), userCmd(), keysCmd(), berthcli.CertsCommand("authserver", "5001"), healthcheckCmd(), versionCmd())
	return root
}

func configArg(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return ""
}

func serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve [config.yml]",
		Short: "Serve the token endpoints",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(configArg(args))
			if err != nil {
				return err
			}
			logger, err := newLogger(cfg.Log, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ln, err := net.Listen("tcp", cfg.Server.Addr)
			if err != nil {
				return err
			}
			return run(ctx, cfg, logger, ln)
		},
	}
}

func healthcheckCmd() *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "healthcheck [config.yml]",
		Short: "Exit 0 when the configured server answers /healthz",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if url == "" {
				cfg, err := loadConfig(configArg(args))
				if err != nil {
					return err
				}
				if url, err = berthcli.HealthURL(cfg.Server.Addr, !cfg.Server.Insecure, "/healthz"); err != nil {
					return err
				}
			}
			return berthcli.Healthcheck(cmd.Context(), url)
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "check this URL instead of the configured server's /healthz")
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			rev := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = " " + s.Value
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "authserver %s%s %s\n", version, rev, runtime.Version())
		},
	}
}
