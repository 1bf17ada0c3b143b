// Package e2e holds end-to-end tests that drive Berth with real clients.
//
// TestDocker runs only when BERTH_E2E_DOCKER=1: it builds both images
// (Dockerfile.registry and Dockerfile.auth, target prebuilt, pulling
// nothing), runs them as two containers on a user-defined network, and uses
// the host's docker CLI and engine against the registry's address on that
// network, so that the engine checks the registry's certificate (it does
// not on loopback). It needs root (for /etc/docker/certs.d). When asked to
// run and no engine answers it fails, unless BERTH_E2E_SKIP_DOCKER=1.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/tlsutil"
)

// dockerClient runs the docker CLI with a configuration directory of the
// test's own, so the user's credentials are neither read nor changed.
type dockerClient struct {
	t      *testing.T
	config string
}

func (d *dockerClient) run(stdin string, args ...string) (string, error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+d.config)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// must runs docker and fails the test when it fails.
func (d *dockerClient) must(args ...string) string {
	d.t.Helper()
	out, err := d.run("", args...)
	if err != nil {
		d.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// say prints to the test binary's output whether or not -v is given, so
// CI shows what the test did.
func say(format string, args ...any) {
	fmt.Printf("e2e: "+format+"\n", args...)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Dockerfile.registry")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestDocker(t *testing.T) {
	if os.Getenv("BERTH_E2E_DOCKER") != "1" {
		t.Skip("the Docker end-to-end test runs with BERTH_E2E_DOCKER=1")
	}
	start := time.Now()
	d := &dockerClient{t: t, config: t.TempDir()}
	version, err := d.run("", "version", "--format", "{{.Server.Version}}")
	if err != nil || version == "" {
		if os.Getenv("BERTH_E2E_SKIP_DOCKER") == "1" {
			say("SKIPPED: no Docker engine reachable (%v: %s) and BERTH_E2E_SKIP_DOCKER=1", err, version)
			t.Skip("no Docker engine; skipped because BERTH_E2E_SKIP_DOCKER=1")
		}
		t.Fatalf("BERTH_E2E_DOCKER=1 but no Docker engine is reachable (%v: %s); set BERTH_E2E_SKIP_DOCKER=1 to skip on purpose", err, version)
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Fatalf("the Docker end-to-end test needs Linux and root (it writes /etc/docker/certs.d); GOOS %s, euid %d", runtime.GOOS, os.Geteuid())
	}
	say("RUNNING against Docker engine %s", version)
	// The engine may create /etc/docker/certs.d when it first looks there:
	// if it does not exist now, remove it again at the end when empty.
	if _, err := os.Stat("/etc/docker/certs.d"); err != nil {
		t.Cleanup(func() { os.Remove("/etc/docker/certs.d") })
	}
	root := repoRoot(t)
	tmp := t.TempDir()
	id := randomID(t)

	// 1. Static binaries and a build context holding only what the
	// prebuilt target reads.
	buildCtx := filepath.Join(tmp, "context")
	if err := os.MkdirAll(filepath.Join(buildCtx, "docker", "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(buildCtx, "bin")+string(filepath.Separator), "./cmd/registry", "./cmd/authserver")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	regImage, authImage := "berth-e2e/registry:"+id, "berth-e2e/authserver:"+id
	for _, b := range []struct{ dockerfile, image, bin, port, volumes string }{
		{"Dockerfile.registry", regImage, "registry", "5000/tcp", `{"/certs":{},"/config":{},"/data":{}}`},
		{"Dockerfile.auth", authImage, "authserver", "5001/tcp", `{"/certs":{},"/config":{}}`},
	} {
		t.Cleanup(func() { d.run("", "rmi", "-f", b.image) })
		d.must("build", "--pull=false", "-f", filepath.Join(root, b.dockerfile), "--target", "prebuilt", "-t", b.image, buildCtx)
		cfg := d.must("image", "inspect", "-f", "{{.Config.User}} {{json .Config.ExposedPorts}} {{json .Config.Healthcheck.Test}} {{json .Config.Volumes}}", b.image)
		for _, want := range []string{"65532:65532 ", `"` + b.port + `"`, `["CMD","/usr/local/bin/` + b.bin + `","healthcheck"]`, b.volumes} {
			if !strings.Contains(cfg, want) {
				t.Fatalf("%s: config %s lacks %s", b.image, cfg, want)
			}
		}
	}
	say("built %s and %s from prebuilt binaries, FROM scratch (%s)", regImage, authImage, time.Since(start).Round(time.Second))

	// 2. A user-defined network with a subnet of the test's choosing.
	netName := "berth-e2e-" + id
	var subnet string
	for try := 0; ; try++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(200))
		subnet = fmt.Sprintf("10.213.%d.0/24", 20+n.Int64())
		out, err := d.run("", "network", "create", "--driver", "bridge", "--subnet", subnet, netName)
		if err == nil {
			break
		}
		if try == 5 {
			t.Fatalf("network create: %v %s", err, out)
		}
	}
	t.Cleanup(func() { d.run("", "network", "rm", netName) })
	prefix := strings.TrimSuffix(subnet, "0/24")
	regIP, authIP := prefix+"10", prefix+"11"
	registry := regIP + ":5000"
	say("network %s %s: registry %s, auth server %s:5001", netName, subnet, regIP, authIP)

	// 3. Certificates for those addresses, a token key, users and a
	// policy, readable by the containers' user.
	certs, config := filepath.Join(tmp, "certs"), filepath.Join(tmp, "config")
	for _, c := range []struct {
		name  string
		hosts []string
	}{{"registry", []string{regIP, "registry"}}, {"authserver", []string{authIP, "auth"}}} {
		if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: certs, Name: c.name, Hosts: c.hosts}, false); err != nil {
			t.Fatal(err)
		}
	}
	authBin := filepath.Join(buildCtx, "bin", "authserver")
	tool := func(stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(authBin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("authserver %v: %v\n%s", args, err, out)
		}
	}
	tool("", "keys", "generate", "--key", filepath.Join(certs, "token.key"), "--certificate", filepath.Join(certs, "token.crt"), "--algorithm", "ES256")
	htpasswd := filepath.Join(config, "htpasswd")
	adminPW, readerPW := "admin-"+id, "reader-"+id
	tool(adminPW+"\n", "user", "add", "admin", "--htpasswd", htpasswd, "--password-stdin")
	tool(readerPW+"\n", "user", "add", "reader", "--htpasswd", htpasswd, "--password-stdin")
	policy := `server:
  certificate: /certs/authserver.crt
  key: /certs/authserver.key
token:
  issuer: berth-auth
  services: [berth-registry]
  certificate: /certs/token.crt
  key: /certs/token.key
users:
  htpasswd: /config/htpasswd
groups:
  admins: [admin]
  readers: [reader]
acl:
  - match: {group: admins, type: "*"}
    actions: ["*"]
  - match: {group: readers}
    actions: [pull]
`
	if err := os.WriteFile(filepath.Join(config, "authserver.yml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{certs, config} {
		if out, err := exec.Command("chown", "-R", "65532:65532", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}

	// 4. The two containers, with fixed addresses; data on a named volume,
	// which starts as the image's /data (owned by the non-root user).
	volume := "berth-e2e-data-" + id
	authName, regName := "berth-e2e-auth-"+id, "berth-e2e-registry-"+id
	t.Cleanup(func() { d.run("", "volume", "rm", "-f", volume) })
	for _, c := range []string{authName, regName} {
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := d.run("", "logs", "--tail", "40", c)
				t.Logf("%s logs:\n%s", c, logs)
			}
			d.run("", "rm", "-f", "-v", c)
		})
	}
	d.must("run", "-d", "--name", authName, "--network", netName, "--ip", authIP, "--health-interval", "1s",
		"-v", certs+":/certs:ro", "-v", config+":/config:ro", authImage, "serve", "/config/authserver.yml")
	d.must("run", "-d", "--name", regName, "--network", netName, "--ip", regIP, "--health-interval", "1s",
		"-v", certs+":/certs:ro", "-v", volume+":/data",
		"-e", "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/registry.crt", "-e", "REGISTRY_HTTP_TLS_KEY=/certs/registry.key",
		"-e", "REGISTRY_AUTH_TOKEN_REALM=https://"+authIP+":5001/token", "-e", "REGISTRY_AUTH_TOKEN_SERVICE=berth-registry",
		"-e", "REGISTRY_AUTH_TOKEN_ISSUER=berth-auth", "-e", "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE=/certs/token.crt",
		regImage)
	waitHealthy(t, d, authName)
	if out, err := exec.Command(filepath.Join(buildCtx, "bin", "registry"), "help", "healthcheck").CombinedOutput(); err == nil && strings.Contains(string(out), "healthcheck") {
		waitHealthy(t, d, regName)
	} else {
		say("registry has no healthcheck subcommand yet: its HEALTHCHECK is not checked")
	}
	waitV2(t, filepath.Join(certs, "ca.crt"), registry)
	say("both containers up (%s)", time.Since(start).Round(time.Second))

	// 5. An image of two layers, made locally: docker import of a tarball,
	// then a build FROM it (a local image: nothing is pulled).
	base, app := "berth-e2e/base:"+id, registry+"/team/app:"+id
	t.Cleanup(func() { d.run("", "rmi", "-f", app, base, registry+"/team/denied:"+id) })
	layerDir := filepath.Join(tmp, "layer")
	writeFile(t, filepath.Join(layerDir, "hello.txt"), "layer one "+id+"\n")
	tarball := filepath.Join(tmp, "layer.tar")
	if out, err := exec.Command("tar", "-C", layerDir, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	d.must("import", tarball, base)
	appCtx := filepath.Join(tmp, "app")
	writeFile(t, filepath.Join(appCtx, "second.txt"), "layer two "+id+"\n")
	writeFile(t, filepath.Join(appCtx, "Dockerfile"), "FROM "+base+"\nCOPY second.txt /second.txt\n")
	d.must("build", "--pull=false", "-t", app, appCtx)
	imageID := d.must("image", "inspect", "-f", "{{.Id}}", app)
	if layers := d.must("image", "inspect", "-f", "{{len .RootFS.Layers}}", app); layers != "2" {
		t.Fatalf("image has %s layers, want 2", layers)
	}

	// 6. TLS is really checked: before the CA is trusted, login fails.
	out, err := d.run(adminPW+"\n", "login", registry, "-u", "admin", "--password-stdin")
	if err == nil || !strings.Contains(out, "x509") && !strings.Contains(out, "certificate") {
		t.Fatalf("login before trusting the CA: %v\n%s", err, out)
	}
	say("before trusting the CA: docker login refused: %s", lastLine(out))
	certsD := filepath.Join("/etc/docker/certs.d", registry)
	if _, err := os.Stat(certsD); err == nil {
		t.Fatalf("%s exists already: not touching it", certsD)
	}
	t.Cleanup(func() { os.RemoveAll(certsD) })
	ca, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(certsD, "ca.crt"), string(ca))

	// 7. Wrong password, then the right one.
	if out, err := d.run(adminPW+"x\n", "login", registry, "-u", "admin", "--password-stdin"); err == nil {
		t.Fatalf("login with a wrong password succeeded: %s", out)
	} else {
		say("wrong password: %s", lastLine(out))
	}
	if out, err := d.run(adminPW+"\n", "login", registry, "-u", "admin", "--password-stdin"); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("login: %v %s", err, out)
	}
	say("docker login %s as admin: Login Succeeded", registry)

	// 8. Push, remove locally, pull, compare.
	out = d.must("push", app)
	say("docker push %s: %s", app, lastLine(out))
	d.must("rmi", app, base)
	if _, err := d.run("", "image", "inspect", app); err == nil {
		t.Fatal("image still present after rmi")
	}
	if out := d.must("pull", app); !strings.Contains(out, "Downloaded newer image") {
		t.Fatalf("pull did not download: %s", out)
	}
	pulledID := d.must("image", "inspect", "-f", "{{.Id}}", app)
	if pulledID != imageID {
		t.Fatalf("pulled image %s, pushed %s", pulledID, imageID)
	}
	say("docker pull %s: image ID %s equals the pushed one", app, pulledID)

	// 9. A pull-only user pulls and cannot push.
	d.must("logout", registry)
	if out, err := d.run(readerPW+"\n", "login", registry, "-u", "reader", "--password-stdin"); err != nil {
		t.Fatalf("login as reader: %v %s", err, out)
	}
	d.must("rmi", app)
	d.must("pull", app)
	denied := registry + "/team/denied:" + id
	d.must("tag", app, denied)
	if out, err := d.run("", "push", denied); err == nil {
		t.Fatalf("the pull-only user pushed: %s", out)
	} else {
		say("pull-only user: pull works, push refused: %s", lastLine(out))
	}

	// 10. Logged out, the private repository is refused.
	d.must("logout", registry)
	d.must("rmi", app, denied)
	if out, err := d.run("", "pull", app); err == nil {
		t.Fatalf("pull after logout succeeded: %s", out)
	} else {
		say("after docker logout: pull refused: %s", lastLine(out))
	}
	say("PASSED in %s", time.Since(start).Round(time.Second))
}

// waitHealthy waits for the container's HEALTHCHECK to report healthy.
func waitHealthy(t *testing.T, d *dockerClient, container string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, _ := d.run("", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", container)
		if status == "running healthy" {
			say("%s: %s (its own healthcheck subcommand)", container, status)
			return
		}
		if !strings.HasPrefix(status, "running") || time.Now().After(deadline) {
			logs, _ := d.run("", "logs", "--tail", "30", container)
			t.Fatalf("%s: %s\n%s", container, status, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitV2 waits until the registry answers /v2/ over TLS with the CA as the
// only root (401: authentication required).
func waitV2(t *testing.T, caFile, registry string) {
	t.Helper()
	tc, err := tlsutil.ClientConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("https://" + registry + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				return
			}
			err = fmt.Errorf("status %s, challenge %q", resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry at %s: %v", registry, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
