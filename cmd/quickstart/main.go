// Command quickstart starts Berth with one command from a fresh clone,
// without Docker:
//
//	go run ./cmd/quickstart [--host registry.example] [--host 10.0.0.5]
//
// It builds registry and authserver into ./bin, creates under ./berth a
// private CA with a certificate for each server, a token signing key, an
// htpasswd file with a first user "admin" (its random password is printed
// once) and both configuration files, then runs both servers until Ctrl-C
// or SIGTERM. A second run reuses everything it finds: keys, certificates,
// users and edited configuration files are never replaced.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// options are the command line of quickstart.
type options struct {
	dir, bin     string   // state directory and binaries directory
	hosts        []string // extra names and IPs, the first one is the public name
	registryPort int
	authPort     int
	listen       string // IP to listen on; "" means every interface
	noBuild      bool
	docker       bool // run both in containers with compose.yml
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "quickstart",
		Short: "Build and start the registry and the auth server over TLS, with a first admin user",
		Long: `Builds registry and authserver into --bin (go build), creates what they need under
--dir on the first run (private CA and server certificates, token signing key, htpasswd
with a user "admin" whose password is printed once, configuration files), starts both
and waits until they answer. Ctrl-C or SIGTERM stops both.

Later runs reuse everything under --dir: keys, the password and configuration files
you edited (the access policy is in <dir>/config/authserver.yml) are never replaced.
Certificates are re-issued from the same CA only when a --host is new.

The first --host is the name clients use (default: localhost, which reaches the
registry from this machine only). Every --host, this machine's name, localhost,
127.0.0.1 and ::1 are in both server certificates.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, p := range []int{o.registryPort, o.authPort} {
				if p <= 0 || p > 65535 {
					return fmt.Errorf("port %d out of range", p)
				}
			}
			if o.registryPort == o.authPort {
				return fmt.Errorf("the registry and the auth server need different ports")
			}
			if o.listen != "" && net.ParseIP(o.listen) == nil {
				return fmt.Errorf("--listen %q: want an IP address", o.listen)
			}
			return run(cmd.Context(), o, stdout, stderr)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "berth", "directory for certificates, keys, users, configuration and data")
	f.StringVar(&o.bin, "bin", "bin", "directory the binaries are built into")
	f.StringSliceVar(&o.hosts, "host", nil, "DNS name or IP address clients use (repeatable; the first is the public name)")
	f.IntVar(&o.registryPort, "registry-port", 5000, "registry port")
	f.IntVar(&o.authPort, "auth-port", 5001, "auth server port")
	f.StringVar(&o.listen, "listen", "", "IP address to listen on (default: every interface)")
	f.BoolVar(&o.noBuild, "no-build", false, "use the binaries already in --bin")
	f.BoolVar(&o.docker, "docker", false, "run both servers as containers (compose.yml, images built from static binaries, nothing pulled)")
	return cmd
}

// run prepares everything, starts both servers and waits for them.
func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	var root string
	if !o.noBuild || o.docker {
		var err error
		if root, err = moduleRoot(); err != nil {
			return err
		}
	}
	if !o.noBuild {
		fmt.Fprintf(stdout, "Building registry and authserver into %s …\n", o.bin)
		if err := build(ctx, root, o.bin, stderr); err != nil {
			return err
		}
	}
	if o.docker && o.listen != "" {
		return fmt.Errorf("--listen does not apply with --docker: the ports are published on every interface")
	}
	st, err := prepare(ctx, o)
	if err != nil {
		return err
	}
	procs := nativeProcesses(st)
	if o.docker {
		// The images' build context is the source tree: the Linux
		// binaries go to bin/docker there.
		prebuilt := filepath.Join("bin", "docker")
		fmt.Fprintf(stdout, "Building static Linux binaries into %s for the images …\n", prebuilt)
		if err := buildForDocker(ctx, root, prebuilt, stderr); err != nil {
			return err
		}
		if procs, err = dockerProcesses(ctx, st, root, prebuilt); err != nil {
			return err
		}
	}
	return serve(ctx, st, procs, stdout, stderr)
}

// addr joins the listen IP and a port.
func (o options) addr(port int) string {
	return net.JoinHostPort(o.listen, strconv.Itoa(port))
}
