package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/tlsutil"
)

// modulePath identifies the Berth source tree.
const modulePath = "github.com/berth-registry/berth"

// The names both configuration files agree on.
const (
	issuer  = "berth-auth"
	service = "berth-registry"
)

// layout is where everything lives under the state directory. The servers
// run with the state directory as working directory, and the
// configuration files name these relative paths, so the directory can be
// moved. The folders match the volumes of the container images (/certs,
// /config, /data).
type layout struct {
	dir string // absolute
}

func (l layout) path(rel ...string) string {
	return filepath.Join(append([]string{l.dir}, rel...)...)
}

const (
	certsDir       = "certs"
	configDir      = "config"
	dataDir        = "data"
	tokenKey       = "certs/token.key"
	tokenCert      = "certs/token.crt"
	htpasswdFile   = "config/htpasswd"
	registryConfig = "config/registry.yml"
	authConfig     = "config/authserver.yml"
)

// state is what prepare made or found, and what serve needs.
type state struct {
	l            layout
	registryBin  string
	authBin      string
	public       string // the host name clients use
	registryPort int
	authPort     int
	registryAddr string // listen addresses
	authAddr     string
	connectHost  string // where quickstart itself checks health
	caFile       string
	fingerprint  string
	password     string // admin's password when created by this run, else ""
	created      []string
}

// realm is the token endpoint as clients reach it.
func (s *state) realm() string {
	return "https://" + net.JoinHostPort(s.public, strconv.Itoa(s.authPort)) + "/token"
}

// registryHost is the registry's address as clients write it.
func (s *state) registryHost() string {
	return net.JoinHostPort(s.public, strconv.Itoa(s.registryPort))
}

// exe adds the executable suffix of the platform.
func exe(name string) string {
	if runtime.GOOS == "windows" {
		return name + ".exe"
	}
	return name
}

// moduleRoot finds the Berth source tree from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && f[1] == modulePath {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside a Berth source tree (no go.mod of %s): run quickstart from the clone, or pass --no-build", modulePath)
		}
		dir = parent
	}
}

// goTool is the go command that runs quickstart (go run), or the one on
// PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", exe("go"))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// build compiles both servers into binDir.
func build(ctx context.Context, root, binDir string, stderr io.Writer) error {
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	for _, name := range []string{"registry", "authserver"} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", filepath.Join(binDir, exe(name)), "./cmd/"+name)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/%s: %w", name, err)
		}
	}
	return nil
}

// hostList is the public name (the first --host, else localhost), then
// every name and address the certificates cover.
func hostList(o options) (public string, hosts []string) {
	hosts = append(hosts, o.hosts...)
	hosts = append(hosts, "localhost")
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, strings.ToLower(h))
	}
	hosts = append(hosts, "127.0.0.1", "::1")
	if o.listen != "" && !net.ParseIP(o.listen).IsUnspecified() {
		hosts = append(hosts, o.listen)
	}
	seen := map[string]bool{}
	var out []string
	for _, h := range hosts {
		if h = strings.TrimSpace(h); h != "" && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out[0], out
}

// prepare creates what is missing under the state directory and returns
// the state to serve.
func prepare(ctx context.Context, o options) (*state, error) {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return nil, err
	}
	l := layout{dir: dir}
	st := &state{
		l:            l,
		registryBin:  filepath.Join(bin, exe("registry")),
		authBin:      filepath.Join(bin, exe("authserver")),
		registryPort: o.registryPort,
		authPort:     o.authPort,
		registryAddr: o.addr(o.registryPort),
		authAddr:     o.addr(o.authPort),
		connectHost:  "127.0.0.1",
	}
	if o.listen != "" && !net.ParseIP(o.listen).IsUnspecified() {
		st.connectHost = o.listen
	}
	for _, b := range []string{st.registryBin, st.authBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%w (build it, or run without --no-build)", err)
		}
	}
	for _, d := range []string{certsDir, configDir, dataDir} {
		if err := os.MkdirAll(l.path(d), 0o700); err != nil {
			return nil, err
		}
	}

	public, hosts := hostList(o)
	st.public = public
	for _, name := range []string{"registry", "authserver"} {
		files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: l.path(certsDir), Name: name, Hosts: hosts}, false)
		if err != nil {
			return nil, err
		}
		if files.CACreated {
			st.created = append(st.created, "private CA "+files.CAFile)
		}
		if files.Issued != "" {
			st.created = append(st.created, fmt.Sprintf("%s certificate %s (%s)", name, files.CertFile, files.Issued))
		}
		st.caFile, st.fingerprint = files.CAFile, files.Fingerprint
	}

	if err := st.ensureTokenKey(ctx); err != nil {
		return nil, err
	}
	if err := st.ensureAdmin(ctx); err != nil {
		return nil, err
	}
	for rel, text := range map[string]string{registryConfig: registryYAML(), authConfig: authYAML()} {
		made, err := writeIfMissing(l.path(rel), []byte(text))
		if err != nil {
			return nil, err
		}
		if made {
			st.created = append(st.created, "configuration "+l.path(rel))
		}
	}
	return st, nil
}

// ensureTokenKey creates the token signing key and certificate unless both
// exist (ES256: small tokens, fast signatures).
func (st *state) ensureTokenKey(ctx context.Context) error {
	key, cert := st.l.path(tokenKey), st.l.path(tokenCert)
	keyOK, certOK := exists(key), exists(cert)
	switch {
	case keyOK && certOK:
		return nil
	case keyOK != certOK:
		return fmt.Errorf("only one of %s and %s exists: restore the other, or remove both to create a new signing key", key, cert)
	}
	if _, err := tool(ctx, st.authBin, "", "keys", "generate", "--key", key, "--certificate", cert, "--algorithm", "ES256"); err != nil {
		return err
	}
	st.created = append(st.created, "token signing key "+key)
	return nil
}

// ensureAdmin creates the htpasswd file with the user admin and a random
// password, unless the file exists.
func (st *state) ensureAdmin(ctx context.Context) error {
	file := st.l.path(htpasswdFile)
	if exists(file) {
		return nil
	}
	password := rand.Text()
	if _, err := tool(ctx, st.authBin, password+"\n", "user", "add", "admin", "--htpasswd", file, "--password-stdin"); err != nil {
		return err
	}
	st.password = password
	st.created = append(st.created, "users "+file)
	return nil
}

// tool runs one of the built programs and returns its output.
func tool(ctx context.Context, bin, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), args[0], err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// writeIfMissing creates path with data unless it exists; it reports
// whether it wrote.
func writeIfMissing(path string, data []byte) (bool, error) {
	err := osfile.WriteNew(path, data, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return err == nil, err
}

// registryYAML is the registry's configuration. Paths are relative to the
// state directory, the servers' working directory.
func registryYAML() string {
	return `# Berth registry, written by quickstart on its first run; edit freely, it is
# never overwritten. quickstart sets http.addr and auth.token.realm from its
# flags at every start (REGISTRY_HTTP_ADDR, REGISTRY_AUTH_TOKEN_REALM).
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: ` + dataDir + `
  delete:
    enabled: true
http:
  addr: :5000
  tls:
    certificate: ` + certsDir + `/registry.crt
    key: ` + certsDir + `/registry.key
auth:
  token:
    realm: https://localhost:5001/token
    service: ` + service + `
    issuer: ` + issuer + `
    rootcertbundle: ` + tokenCert + `
`
}

// authYAML is the auth server's configuration with the first policy:
// admin may do everything, including listing the catalog.
func authYAML() string {
	return `# Berth auth server, written by quickstart on its first run; edit freely (the
# access policy is below), it is never overwritten. quickstart sets
# server.addr from its flags at every start (AUTHSERVER_SERVER_ADDR).
# Users: bin/authserver user add NAME --htpasswd ` + htpasswdFile + `
server:
  addr: :5001
  certificate: ` + certsDir + `/authserver.crt
  key: ` + certsDir + `/authserver.key
token:
  issuer: ` + issuer + `
  services: [` + service + `]
  expiration: 300
  certificate: ` + tokenCert + `
  key: ` + tokenKey + `
users:
  htpasswd: ` + htpasswdFile + `
groups:
  admins: [admin]
  readers: []   # users who may pull every repository and push none
acl:
  - match: {group: admins, type: "*"}   # every repository and the catalog
    actions: ["*"]
  - match: {account: "*", name: "${account}/*"}   # everyone: their own namespace
    actions: [pull, push, delete]
  - match: {group: readers}
    actions: [pull]
# The first rule that matches a request decides.
`
}
