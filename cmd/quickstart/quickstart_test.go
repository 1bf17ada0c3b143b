package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.yaml.in/yaml/v3"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

// The access policy quickstart writes: admin everything, readers pull,
// everyone their own namespace.
func TestFirstPolicy(t *testing.T) {
	var cfg struct {
		Groups map[string][]string `yaml:"groups"`
		ACL    []auth.Rule         `yaml:"acl"`
	}
	if err := yaml.Unmarshal([]byte(authYAML()), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Groups["readers"] = append(cfg.Groups["readers"], "reader")
	p, err := auth.NewPolicy(cfg.ACL, cfg.Groups)
	if err != nil {
		t.Fatal(err)
	}
	repo := func(n string) auth.Scope {
		return auth.Scope{Type: "repository", Name: n, Actions: []string{"pull", "push", "delete"}}
	}
	for _, c := range []struct {
		account string
		scope   auth.Scope
		want    []string
	}{
		{"admin", repo("team/app"), []string{"pull", "push", "delete"}},
		{"admin", auth.Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}, []string{"*"}},
		{"reader", repo("team/app"), []string{"pull"}},
		{"reader", repo("reader/own"), []string{"pull", "push", "delete"}},
		{"reader", auth.Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}, nil},
		{"alice", repo("team/app"), nil},
		{"alice", repo("alice/tool"), []string{"pull", "push", "delete"}},
		{"", repo("team/app"), nil},
	} {
		got := p.Allowed(c.account, c.scope)
		slices.Sort(got)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%q on %s:%s: %v, want %v", c.account, c.scope.Type, c.scope.Name, got, want)
		}
	}
}

func TestHostList(t *testing.T) {
	public, hosts := hostList(options{})
	if public != "localhost" || !slices.Contains(hosts, "127.0.0.1") || !slices.Contains(hosts, "::1") {
		t.Fatalf("default: %s %v", public, hosts)
	}
	public, hosts = hostList(options{hosts: []string{"registry.example", "10.0.0.5", "localhost"}, listen: "10.0.0.6"})
	if public != "registry.example" || !slices.Contains(hosts, "10.0.0.5") || !slices.Contains(hosts, "10.0.0.6") {
		t.Fatalf("with --host: %s %v", public, hosts)
	}
	if n := strings.Count(strings.Join(hosts, " "), "localhost"); n != 1 {
		t.Fatalf("localhost %d times in %v", n, hosts)
	}
	if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: t.TempDir(), Hosts: hosts}, false); err != nil {
		t.Fatalf("hosts not accepted by tlsutil: %v", err)
	}
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	w := &prefixWriter{prefix: "x | ", out: &out}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\nthree"))
	w.flush()
	if got := out.String(); got != "x | one\nx | two\nx | three\n" {
		t.Fatalf("%q", got)
	}
}

// quickstartRun is one running quickstart process.
type quickstartRun struct {
	cmd    *exec.Cmd
	out    string // stdout up to and including the banner
	stderr *testutil.Buffer
	done   chan error
}

// startQuickstart runs the quickstart binary with args until it has
// printed its banner (both servers answer).
func startQuickstart(t *testing.T, bin string, args ...string) *quickstartRun {
	t.Helper()
	r := &quickstartRun{stderr: &testutil.Buffer{}, done: make(chan error, 1)}
	r.cmd = exec.Command(bin, args...)
	r.cmd.Stderr = r.stderr
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if !sent && strings.HasPrefix(sc.Text(), "Policy: ") {
				banner <- b.String()
				sent = true
			}
		}
		if !sent {
			banner <- b.String()
		}
		r.done <- r.cmd.Wait()
	}()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("quickstart stderr:\n%s", r.stderr.String())
		}
	})
	select {
	case r.out = <-banner:
	case <-time.After(4 * time.Minute):
		t.Fatalf("no banner within 4 minutes; stderr:\n%s", r.stderr.String())
	}
	if !strings.Contains(r.out, "Berth is running") {
		t.Fatalf("quickstart did not start:\n%s\nstderr:\n%s", r.out, r.stderr.String())
	}
	return r
}

// stop sends sig and checks that quickstart and both servers exit cleanly.
func (r *quickstartRun) stop(t *testing.T, sig os.Signal, ports ...int) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal: %v", err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("quickstart after %v: %v\nstderr:\n%s", sig, err, r.stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("quickstart did not exit after %v", sig)
	}
	for _, s := range []string{"registry", "authserver"} {
		if !strings.Contains(r.stderr.String(), s) || !strings.Contains(r.stderr.String(), "shutting down") {
			t.Errorf("%s did not shut down gracefully:\n%s", s, r.stderr.String())
		}
	}
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still open after quickstart exited", p)
		}
	}
}

func passwordFrom(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "password: "); ok {
			return v
		}
	}
	return ""
}

// TestQuickstart is the one-command start end to end: quickstart builds both
// servers, creates the CA, keys, admin user and configuration in a fresh
// directory, and go-containerregistry logs in (the token dance with Basic
// credentials), pushes and pulls over TLS that trusts only the new CA.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs both servers")
	}
	if runtime.GOOS == "windows" {
		// A test cannot press Ctrl-C in a child's console.
		t.Skip("stopping quickstart needs a console Ctrl-C on Windows")
	}
	tmp := t.TempDir()
	qs := filepath.Join(tmp, exe("quickstart"))
	if out, err := exec.Command(goTool(), "build", "-o", qs, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir, bin := filepath.Join(tmp, "berth"), filepath.Join(tmp, "bin")
	regPort, authPort := testutil.FreePort(t), testutil.FreePort(t)
	for regPort == authPort {
		authPort = testutil.FreePort(t)
	}
	args := []string{"--dir", dir, "--bin", bin, "--listen", "127.0.0.1",
		"--registry-port", strconv.Itoa(regPort), "--auth-port", strconv.Itoa(authPort)}

	// First run: everything is created, the password printed once.
	run1 := startQuickstart(t, qs, args...)
	password := passwordFrom(run1.out)
	if len(password) < 20 {
		t.Fatalf("no admin password in the banner:\n%s", run1.out)
	}
	for _, want := range []string{"docker login localhost:" + strconv.Itoa(regPort) + " -u admin",
		"/etc/docker/certs.d/localhost:" + strconv.Itoa(regPort) + "/ca.crt", `certs.d\localhost` + strconv.Itoa(regPort),
		"Import-Certificate", "add-trusted-cert", "https://localhost:" + strconv.Itoa(authPort) + "/token"} {
		if !strings.Contains(run1.out, want) {
			t.Errorf("banner lacks %q:\n%s", want, run1.out)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "config", "htpasswd")); bytes.Contains(data, []byte(password)) {
		t.Fatal("the password is stored in clear text")
	}
	keep := map[string][]byte{}
	for _, f := range []string{"certs/ca.crt", "certs/ca.key", "certs/token.key", "certs/registry.crt", "config/htpasswd"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("quickstart did not create %s: %v", f, err)
		}
		keep[f] = data
	}

	tc, err := tlsutil.ClientConfig(filepath.Join(dir, "certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	host := "localhost:" + strconv.Itoa(regPort)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	as := func(user, pw string) []remote.Option {
		var a authn.Authenticator = authn.Anonymous
		if user != "" {
			a = &authn.Basic{Username: user, Password: pw}
		}
		return []remote.Option{remote.WithAuth(a), remote.WithTransport(tr), remote.WithContext(ctx)}
	}
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(host + "/" + s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if err := remote.Write(ref("team/app:v1"), img, as("admin", password)...); err != nil {
		t.Fatalf("push as admin: %v", err)
	}
	pullAndCompare := func(user, pw string) {
		t.Helper()
		got, err := remote.Image(ref("team/app:v1"), as(user, pw)...)
		if err != nil {
			t.Fatalf("pull as %s: %v", user, err)
		}
		if d, _ := got.Digest(); d != want {
			t.Fatalf("pulled %s, pushed %s", d, want)
		}
		gl, _ := got.Layers()
		wl, _ := img.Layers()
		if len(gl) != 2 || len(wl) != 2 {
			t.Fatalf("layers: %d, want 2", len(gl))
		}
		for i := range gl {
			if !sameLayer(t, gl[i], wl[i]) {
				t.Fatalf("layer %d differs", i)
			}
		}
	}
	pullAndCompare("admin", password)
	repos, err := remote.Catalog(ctx, ref("team/app:v1").Context().Registry, as("admin", password)...)
	if err != nil || !slices.Contains(repos, "team/app") {
		t.Fatalf("catalog as admin: %v %v", repos, err)
	}

	// A wrong password gets nothing, and writes nothing.
	other, _ := random.Image(1024, 1)
	if err := remote.Write(ref("team/app:bad"), other, as("admin", password+"x")...); err == nil {
		t.Fatal("push with a wrong password succeeded")
	}
	if _, err := remote.Image(ref("team/app:v1"), as("admin", "wrong")...); err == nil {
		t.Fatal("pull with a wrong password succeeded")
	}
	if _, err := remote.Head(ref("team/app:bad"), as("admin", password)...); err == nil {
		t.Fatal("team/app:bad exists after a refused push")
	}
	// Without credentials the private repository is refused.
	if _, err := remote.Image(ref("team/app:v1"), as("", "")...); err == nil {
		t.Fatal("anonymous pull succeeded")
	}
	tr.CloseIdleConnections()
	run1.stop(t, syscall.SIGTERM, regPort, authPort)

	// A second user, pull-only by the policy file; the second run must keep
	// the keys, the password, the data and the edited policy.
	add := exec.Command(filepath.Join(bin, exe("authserver")), "user", "add", "reader", "--htpasswd", filepath.Join(dir, "config", "htpasswd"), "--password-stdin")
	add.Stdin = strings.NewReader("reader-pw\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	policyFile := filepath.Join(dir, "config", "authserver.yml")
	policy, err := os.ReadFile(policyFile)
	if err != nil || !bytes.Contains(policy, []byte("readers: []")) {
		t.Fatalf("policy file: %v\n%s", err, policy)
	}
	if err := os.WriteFile(policyFile, bytes.Replace(policy, []byte("readers: []"), []byte("readers: [reader]"), 1), 0o600); err != nil {
		t.Fatal(err)
	}

	run2 := startQuickstart(t, qs, append(args, "--no-build")...)
	if p := passwordFrom(run2.out); p != "" {
		t.Fatalf("second run printed a password: %s", run2.out)
	}
	for f, before := range keep {
		after, _ := os.ReadFile(filepath.Join(dir, f))
		if f == "config/htpasswd" {
			after = after[:min(len(after), len(before))]
		}
		if !bytes.Equal(before, after) {
			t.Errorf("second run changed %s", f)
		}
	}
	if data, _ := os.ReadFile(policyFile); !bytes.Contains(data, []byte("readers: [reader]")) {
		t.Fatal("second run overwrote the edited policy")
	}
	pullAndCompare("admin", password)
	pullAndCompare("reader", "reader-pw")
	if err := remote.Write(ref("team/app:v2"), other, as("reader", "reader-pw")...); err == nil {
		t.Fatal("the pull-only user pushed to team/app")
	}
	if _, err := remote.Head(ref("team/app:v2"), as("admin", password)...); err == nil {
		t.Fatal("team/app:v2 exists after a refused push")
	}
	// The refusal is the policy's: the same user may push to its own
	// namespace.
	if err := remote.Write(ref("reader/own:v1"), other, as("reader", "reader-pw")...); err != nil {
		t.Fatalf("push to the reader's own namespace: %v", err)
	}
	if _, err := remote.Catalog(ctx, ref("team/app:v1").Context().Registry, as("reader", "reader-pw")...); err == nil {
		t.Fatal("the reader listed the catalog")
	}
	tr.CloseIdleConnections()
	run2.stop(t, os.Interrupt, regPort, authPort)
}

func sameLayer(t *testing.T, a, b v1.Layer) bool {
	t.Helper()
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, _ := b.Digest()
	if da != db {
		return false
	}
	rc, err := a.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	rc2, _ := b.Compressed()
	defer rc2.Close()
	var w bytes.Buffer
	w.ReadFrom(rc2)
	return bytes.Equal(got.Bytes(), w.Bytes())
}
