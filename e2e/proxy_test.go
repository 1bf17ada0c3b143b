package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-registry/berth/tlsutil"
)

// TestDockerPullThroughCache drives the host's Docker engine against a
// Berth mirror. An upstream Berth with token auth holds an image the
// engine pushed; a second Berth mirrors it under the prefix hub/ (its
// proxy.upstreams, with a user of the upstream's auth server) and has
// token auth of its own. The engine pulls <mirror>/hub/team/app and gets
// the upstream's image; with the upstream stopped it pulls it again from
// the cache; a push into hub/ is refused while one beside it is taken.
//
// The registries run as processes of this test on an address of the host
// that is not loopback (the Docker bridge's, else another), so that the
// engine checks their certificate against /etc/docker/certs.d as it does
// for any remote registry (it does not on loopback). The engine is the
// only Docker part: TestDocker covers the images. The switches are
// TestDocker's (BERTH_E2E_DOCKER=1, BERTH_E2E_SKIP_DOCKER=1); it needs
// Linux and root for certs.d.
func TestDockerPullThroughCache(t *testing.T) {
	if os.Getenv("BERTH_E2E_DOCKER") != "1" {
		t.Skip("the Docker end-to-end tests run with BERTH_E2E_DOCKER=1")
	}
	d := &dockerClient{t: t, config: t.TempDir()}
	if version, err := d.run("", "version", "--format", "{{.Server.Version}}"); err != nil || version == "" {
		if os.Getenv("BERTH_E2E_SKIP_DOCKER") == "1" {
			say("SKIPPED pull-through cache: no Docker engine reachable and BERTH_E2E_SKIP_DOCKER=1")
			t.Skip("no Docker engine; skipped because BERTH_E2E_SKIP_DOCKER=1")
		}
		t.Fatalf("BERTH_E2E_DOCKER=1 but no Docker engine is reachable: %v %s", err, version)
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Fatalf("the Docker pull-through test needs Linux and root (it writes /etc/docker/certs.d); GOOS %s, euid %d", runtime.GOOS, os.Geteuid())
	}
	start := time.Now()
	if _, err := os.Stat("/etc/docker/certs.d"); err != nil {
		t.Cleanup(func() { os.Remove("/etc/docker/certs.d") })
	}
	root := repoRoot(t)
	tmp := t.TempDir()
	id := randomID(t)
	ip := hostAddress(t)
	// The token realm is a loopback IP address on a port of its own, which
	// go-containerregistry's token flow would refuse (not the registry's
	// host:port): the mirror's own answers the challenge. The engine, on
	// this host, reaches it there too.
	upstream, mirror := freeAddrOn(t, ip), freeAddrOn(t, ip)
	for mirror == upstream {
		mirror = freeAddrOn(t, ip)
	}
	authAddr := freeAddrOn(t, "127.0.0.1")
	_, authPort, _ := net.SplitHostPort(authAddr)
	realm := "https://127.0.0.1:" + authPort + "/token"
	say("pull-through cache: upstream %s, mirror %s, auth server %s", upstream, mirror, realm)

	// 1. Binaries, one certificate for the address, a token key, users.
	bin := filepath.Join(tmp, "bin")
	gobuild := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./cmd/registry", "./cmd/authserver")
	gobuild.Dir = root
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	certs := filepath.Join(tmp, "certs")
	if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: certs, Name: "server", Hosts: []string{ip, "127.0.0.1", "localhost"}}, false); err != nil {
		t.Fatal(err)
	}
	tool := func(stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "authserver"), args...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("authserver %v: %v\n%s", args, err, out)
		}
	}
	tool("", "keys", "generate", "--key", filepath.Join(certs, "token.key"), "--certificate", filepath.Join(certs, "token.crt"), "--algorithm", "ES256")
	htpasswd := filepath.Join(tmp, "htpasswd")
	adminPW, mirrorPW := "admin-"+id, "mirror-"+id
	tool(adminPW+"\n", "user", "add", "admin", "--htpasswd", htpasswd, "--password-stdin")
	tool(mirrorPW+"\n", "user", "add", "mirror", "--htpasswd", htpasswd, "--password-stdin")

	// 2. One auth server for both registries (each its own service): admin
	// may do anything; the mirror's account may only pull from team/.
	authCfg := fmt.Sprintf(`server:
  addr: %q
  certificate: %q
  key: %q
token:
  issuer: berth-auth
  services: [berth-upstream, berth-mirror]
  certificate: %q
  key: %q
users:
  htpasswd: %q
acl:
  - match: {account: admin, type: "*"}
    actions: ["*"]
  - match: {account: mirror, name: "team/*"}
    actions: [pull]
`, authAddr, filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"),
		filepath.Join(certs, "token.crt"), filepath.Join(certs, "token.key"), htpasswd)
	registryCfg := func(addr, service, data, extra string) string {
		return fmt.Sprintf(`version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: %q}
http:
  addr: %q
  tls: {certificate: %q, key: %q}
auth:
  token: {realm: %q, service: %s, issuer: berth-auth, rootcertbundle: %q}
%s`, data, addr, filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"), realm, service, filepath.Join(certs, "token.crt"), extra)
	}
	// tagcheck 0s (the default): the mirror asks the upstream on every pull
	// of a tag, so the pull with the upstream stopped is served by falling
	// back to the cache. ttl 0s: cached content is kept until removed. The
	// mirror trusts the upstream (and its token realm) through the
	// upstream's ca.
	caFile := filepath.Join(certs, "ca.crt")
	mirrorProxy := fmt.Sprintf(`proxy:
  ttl: 0s
  tagcheck: 0s
  upstreams:
    - {prefix: hub, remoteurl: "https://%s", username: mirror, password: %q, ca: %q}
`, upstream, mirrorPW, caFile)
	writeFile(t, filepath.Join(tmp, "authserver.yml"), authCfg)
	writeFile(t, filepath.Join(tmp, "upstream.yml"), registryCfg(upstream, "berth-upstream", filepath.Join(tmp, "upstream-data"), ""))
	writeFile(t, filepath.Join(tmp, "mirror.yml"), registryCfg(mirror, "berth-mirror", filepath.Join(tmp, "mirror-data"), mirrorProxy))
	startProcess(t, tmp, "authserver", nil, filepath.Join(bin, "authserver"), "serve", filepath.Join(tmp, "authserver.yml"))
	upProc := startProcess(t, tmp, "upstream", nil, filepath.Join(bin, "registry"), "serve", filepath.Join(tmp, "upstream.yml"))
	startProcess(t, tmp, "mirror", nil, filepath.Join(bin, "registry"), "serve", filepath.Join(tmp, "mirror.yml"))
	waitV2(t, caFile, upstream)
	waitV2(t, caFile, mirror)

	// 3. The engine checks the mirror's certificate: before the CA is
	// trusted, login fails. Then it trusts the CA for both registries
	// (and so for the token realm their challenges send it to).
	if out, err := d.run(adminPW+"\n", "login", mirror, "-u", "admin", "--password-stdin"); err == nil || !strings.Contains(out, "x509") && !strings.Contains(out, "certificate") {
		t.Fatalf("login to the mirror before trusting the CA: %v\n%s", err, out)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{upstream, mirror} {
		dir := filepath.Join("/etc/docker/certs.d", host)
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("%s exists already: not touching it", dir)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		writeFile(t, filepath.Join(dir, "ca.crt"), string(ca))
	}

	// 4. An image of two layers made locally, pushed by the engine to the
	// upstream.
	base, app := "berth-e2e/proxybase:"+id, upstream+"/team/app:"+id
	mirrored := mirror + "/hub/team/app:" + id
	refused, own := mirror+"/hub/team/pushed:"+id, mirror+"/team/own:"+id
	t.Cleanup(func() { d.run("", "rmi", "-f", app, base, mirrored, refused, own) })
	layerDir := filepath.Join(tmp, "layer")
	writeFile(t, filepath.Join(layerDir, "hello.txt"), "mirrored layer one "+id+"\n")
	tarball := filepath.Join(tmp, "layer.tar")
	if out, err := exec.Command("tar", "-C", layerDir, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	d.must("import", tarball, base)
	appCtx := filepath.Join(tmp, "app")
	writeFile(t, filepath.Join(appCtx, "second.txt"), "mirrored layer two "+id+"\n")
	writeFile(t, filepath.Join(appCtx, "Dockerfile"), "FROM "+base+"\nCOPY second.txt /second.txt\n")
	d.must("build", "--pull=false", "-t", app, appCtx)
	imageID := d.must("image", "inspect", "-f", "{{.Id}}", app)
	login := func(registry string) {
		t.Helper()
		if out, err := d.run(adminPW+"\n", "login", registry, "-u", "admin", "--password-stdin"); err != nil || !strings.Contains(out, "Login Succeeded") {
			t.Fatalf("docker login %s: %v %s", registry, err, out)
		}
	}
	login(upstream)
	d.must("push", app)
	var pushedDigests []string
	if err := json.Unmarshal([]byte(d.must("image", "inspect", "-f", "{{json .RepoDigests}}", app)), &pushedDigests); err != nil {
		t.Fatal(err)
	}
	upDigest := ""
	for _, rd := range pushedDigests {
		if v, ok := strings.CutPrefix(rd, upstream+"/team/app@"); ok {
			upDigest = v
		}
	}
	if upDigest == "" {
		t.Fatalf("no repository digest of the upstream after the push: %q", pushedDigests)
	}
	say("docker push %s: manifest %s, image %s", app, upDigest, imageID)
	d.must("rmi", app, base)

	// 5. The first pull through the mirror: the upstream's image, its
	// blobs now in the mirror's storage.
	login(mirror)
	if out := d.must("pull", mirrored); !strings.Contains(out, "Downloaded newer image") {
		t.Fatalf("pull through the mirror did not download: %s", out)
	}
	checkPulled(t, d, mirrored, imageID, mirror+"/hub/team/app@"+upDigest)
	// The manifest as the upstream stores it, and each blob it names,
	// are in the mirror's storage.
	blobPath := func(data string, dg v1.Hash) string {
		return filepath.Join(data, "docker", "registry", "v2", "blobs", dg.Algorithm, dg.Hex[:2], dg.Hex, "data")
	}
	upHash, err := v1.NewHash(upDigest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(blobPath(filepath.Join(tmp, "upstream-data"), upHash))
	if err != nil {
		t.Fatalf("the upstream's manifest: %v", err)
	}
	layers, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	for _, dg := range append([]v1.Hash{upHash, layers.Config.Digest}, digestsOf(layers.Layers)...) {
		if _, err := os.Stat(blobPath(filepath.Join(tmp, "mirror-data"), dg)); err != nil {
			t.Errorf("blob %s is not in the mirror's storage: %v", dg, err)
		}
	}
	say("docker pull %s: image %s, manifest %s, as pushed upstream; the manifest, the config and %d layers stored in the mirror", mirrored, imageID, upDigest, len(layers.Layers))

	// 6. The upstream stops: the mirror serves its cache.
	upProc.stop(t)
	if c, err := net.DialTimeout("tcp", upstream, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("the upstream %s still answers", upstream)
	}
	d.must("rmi", mirrored)
	if _, err := d.run("", "image", "inspect", mirrored); err == nil {
		t.Fatal("image still present after rmi")
	}
	if out := d.must("pull", mirrored); !strings.Contains(out, "Downloaded newer image") {
		t.Fatalf("pull from the cache did not download: %s", out)
	}
	checkPulled(t, d, mirrored, imageID, mirror+"/hub/team/app@"+upDigest)
	say("upstream stopped: docker pull %s again from the cache: image %s", mirrored, imageID)

	// 7. A push into the mirrored prefix is refused by the mirror (admin
	// may push anywhere); beside it, the mirror takes pushes.
	d.must("tag", mirrored, refused)
	if out, err := d.run("", "push", refused); err == nil {
		t.Fatalf("a push into hub/ succeeded: %s", out)
	} else if !strings.Contains(strings.ToLower(out), "pull-through cache") && !strings.Contains(strings.ToLower(out), "unsupported") {
		t.Fatalf("a push into hub/ failed, but not as refused by the mirror: %s", out)
	} else {
		say("docker push %s: refused: %s", refused, lastLine(out))
	}
	d.must("tag", mirrored, own)
	out := d.must("push", own)
	say("docker push %s beside the prefix: %s", own, lastLine(out))
	say("pull-through cache: PASSED in %s", time.Since(start).Round(time.Second))
}

func digestsOf(descs []v1.Descriptor) []v1.Hash {
	var hs []v1.Hash
	for _, d := range descs {
		hs = append(hs, d.Digest)
	}
	return hs
}

// checkPulled checks that ref is the image imageID with repoDigest among
// its repository digests.
func checkPulled(t *testing.T, d *dockerClient, ref, imageID, repoDigest string) {
	t.Helper()
	if got := d.must("image", "inspect", "-f", "{{.Id}}", ref); got != imageID {
		t.Fatalf("%s is image %s, want %s", ref, got, imageID)
	}
	if digests := d.must("image", "inspect", "-f", "{{json .RepoDigests}}", ref); !strings.Contains(digests, `"`+repoDigest+`"`) {
		t.Fatalf("%s: repository digests %s, want %s", ref, digests, repoDigest)
	}
}

// hostAddress returns an IPv4 address of this host that is not loopback:
// the Docker bridge's (docker0) where there is one, else the first other.
func hostAddress(t *testing.T) string {
	t.Helper()
	pick := func(addrs []net.Addr) string {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
		return ""
	}
	if ifc, err := net.InterfaceByName("docker0"); err == nil {
		if addrs, err := ifc.Addrs(); err == nil && pick(addrs) != "" {
			return pick(addrs)
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	ip := pick(addrs)
	if ip == "" {
		t.Fatal("this host has no IPv4 address but loopback: the engine would not check the registries' certificates")
	}
	return ip
}

// freeAddrOn returns ip with a port that was free a moment ago.
func freeAddrOn(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is a server this test started; its output is in a log file.
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan error
	stopped   bool
}

// startProcess runs bin with args in dir, its output in <dir>/<name>.log,
// with env added; it is stopped at the end, and its log printed if the
// test failed.
func startProcess(t *testing.T, dir, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: filepath.Join(dir, name+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("%s log (last lines):\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	return p
}

// stop sends SIGTERM and waits for the process, killing it after 15 s.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Errorf("%s: %v", p.name, err)
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 15 s of SIGTERM", p.name)
	}
}
