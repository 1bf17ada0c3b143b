package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-registry/berth/auth"
)

// userFlags are shared by the user subcommands.
type userFlags struct {
	config        string
	htpasswd      string
	cost          int
	passwordStdin bool
}

func (f *userFlags) register(cmd *cobra.Command, withPassword bool) {
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "configuration file naming users.htpasswd")
	cmd.Flags().StringVar(&f.htpasswd, "htpasswd", "", "htpasswd file (overrides the configuration)")
	if withPassword {
		cmd.Flags().IntVar(&f.cost, "cost", 0, "bcrypt cost (default: users.bcryptcost, 10)")
		cmd.Flags().BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from the first line of stdin")
	}
}

// file returns the htpasswd path and the bcrypt cost to use.
func (f *userFlags) file() (string, int, error) {
	cfg, err := loadConfig(f.config)
	if err != nil {
		return "", 0, err
	}
	path := cfg.Users.Htpasswd
	if f.htpasswd != "" {
		path = f.htpasswd
	}
	cost := cfg.Users.BcryptCost
	if f.cost != 0 {
		cost = f.cost
	}
	if cost < auth.DefaultBcryptCost {
		return "", 0, fmt.Errorf("bcrypt cost %d is below the minimum of %d", cost, auth.DefaultBcryptCost)
	}
	return path, cost, nil
}

func userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage the users of the htpasswd file"}
	cmd.AddCommand(userSetCmd("add", "Add a user", false), userSetCmd("passwd", "Change a user's password", true), userRmCmd(), userListCmd())
	return cmd
}

// userSetCmd is `user add` (the user must not exist) or `user passwd` (it
// must).
func userSetCmd(name, short string, mustExist bool) *cobra.Command {
	var f userFlags
	cmd := &cobra.Command{
		Use:   name + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			if err := auth.ValidateUserName(user); err != nil {
				return err
			}
			path, cost, err := f.file()
			if err != nil {
				return err
			}
			// Check before asking for the password, and again under the
			// lock: another command may have changed the file meanwhile.
			check := func(h *auth.Htpasswd) error {
				if _, exists := h.Hash(user); exists != mustExist {
					if exists {
						return fmt.Errorf("user %q already exists; use `authserver user passwd`", user)
					}
					return fmt.Errorf("no user %q in %s", user, path)
				}
				return nil
			}
			h, err := auth.ReadHtpasswd(path)
			if err != nil {
				return err
			}
			if err := check(h); err != nil {
				return err
			}
			password, err := readPassword(cmd, f.passwordStdin)
			if err != nil {
				return err
			}
			err = auth.EditHtpasswd(path, func(h *auth.Htpasswd) error {
				if err := check(h); err != nil {
					return err
				}
				return h.SetPassword(user, password, cost)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: password of %q set (bcrypt cost %d)\n", path, user, cost)
			return nil
		},
	}
	f.register(cmd, true)
	return cmd
}

func userRmCmd() *cobra.Command {
	var f userFlags
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, _, err := f.file()
			if err != nil {
				return err
			}
			err = auth.EditHtpasswd(path, func(h *auth.Htpasswd) error {
				if !h.Remove(args[0]) {
					return fmt.Errorf("no user %q in %s", args[0], path)
				}
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: removed %q\n", path, args[0])
			return nil
		},
	}
	f.register(cmd, false)
	return cmd
}

func userListCmd() *cobra.Command {
	var f userFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _, err := f.file()
			if err != nil {
				return err
			}
			h, err := auth.ReadHtpasswd(path)
			if err != nil {
				return err
			}
			bad := map[string]string{}
			for _, e := range h.Unsupported() {
				var u *auth.UnsupportedHashError
				if errors.As(e, &u) {
					bad[u.User] = u.Format
				}
			}
			for _, u := range h.Users() {
				if format, ok := bad[u]; ok {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t(%s hash: cannot log in until the password is set again)\n", u, format)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), u)
			}
			return nil
		},
	}
	f.register(cmd, false)
	return cmd
}

// readPassword reads the first line of stdin with --password-stdin, else
// prompts twice on the terminal without echo. Passwords are never taken
// from arguments.
func readPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		password := strings.TrimRight(line, "\r\n")
		if password == "" {
			return "", errors.New("empty password on stdin")
		}
		return password, nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("stdin is not a terminal: pass the password with --password-stdin")
	}
	prompt := func(p string) (string, error) {
		fmt.Fprint(cmd.ErrOrStderr(), p)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	p1, err := prompt("Password: ")
	if err != nil {
		return "", err
	}
	p2, err := prompt("Repeat password: ")
	if err != nil {
		return "", err
	}
	if p1 != p2 {
		return "", errors.New("the passwords differ")
	}
	if p1 == "" {
		return "", errors.New("empty password")
	}
	return p1, nil
}
