package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

// TestComposeScaleOut runs compose.scale.yml: MinIO, the auth server and
// two registry replicas on one bucket, with images built from static
// binaries (MinIO's from $BERTH_MINIO_BIN). A client logs in through the
// auth server, pushes through one replica and pulls through the other,
// splits one chunked upload across both, and pushes and pulls through a
// load balancer (the test's stand-in for HAProxy in TCP mode); inside the
// network the name registry reaches both. Each replica's log must show
// the requests it served.
func TestComposeScaleOut(t *testing.T) {
	if os.Getenv("BERTH_E2E_DOCKER") != "1" {
		t.Skip("the Docker end-to-end tests run with BERTH_E2E_DOCKER=1")
	}
	d := &dockerClient{t: t, config: t.TempDir()}
	if version, err := d.run("", "version", "--format", "{{.Server.Version}}"); err != nil {
		if os.Getenv("BERTH_E2E_SKIP_DOCKER") == "1" {
			say("SKIPPED scale-out: no Docker engine reachable and BERTH_E2E_SKIP_DOCKER=1")
			t.Skip("no Docker engine; skipped because BERTH_E2E_SKIP_DOCKER=1")
		}
		t.Fatalf("BERTH_E2E_DOCKER=1 but no Docker engine is reachable: %v %s", err, version)
	}
	minioBin := staticMinIO(t)
	start := time.Now()
	root := repoRoot(t)
	tmp := t.TempDir()
	id := randomID(t)
	project, tag := "berth-scale-"+id, "e2e-"+id

	// 1. Static binaries where the compose file's prebuilt targets find
	// them: a folder of the test's own under bin/docker (which
	// .dockerignore lets into the build context).
	prebuilt := "bin/docker/e2e-" + id
	binDir := filepath.Join(root, filepath.FromSlash(prebuilt))
	t.Cleanup(func() {
		os.RemoveAll(binDir)
		os.Remove(filepath.Dir(binDir)) // bin/docker and bin, when empty
		os.Remove(filepath.Dir(filepath.Dir(binDir)))
	})
	arch := runtime.GOARCH
	if a, err := d.run("", "version", "--format", "{{.Server.Arch}}"); err == nil && a != "" {
		arch = a
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-o", binDir+string(filepath.Separator), "./cmd/registry", "./cmd/authserver")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Link(minioBin, filepath.Join(binDir, "minio")); err != nil {
		copyFile(t, minioBin, filepath.Join(binDir, "minio"))
	}
	say("scale-out: static binaries in %s (%s)", prebuilt, time.Since(start).Round(time.Second))

	// 2. What quickstart would have made under ./berth: the CA and the
	// certificates (one for every replica, naming what clients use:
	// localhost here, registry inside the network), the token signing
	// key, a user, both configuration files.
	state := filepath.Join(tmp, "berth")
	certs, config := filepath.Join(state, "certs"), filepath.Join(state, "config")
	for _, c := range []struct {
		name  string
		hosts []string
	}{{"registry", []string{"localhost", "127.0.0.1", "registry"}}, {"authserver", []string{"localhost", "127.0.0.1", "auth"}}} {
		if _, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: certs, Name: c.name, Hosts: c.hosts}, false); err != nil {
			t.Fatal(err)
		}
	}
	authBin := filepath.Join(binDir, "authserver")
	if arch != runtime.GOARCH {
		t.Fatalf("engine is %s, this machine %s: the test runs the built authserver here", arch, runtime.GOARCH)
	}
	tool := func(stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(authBin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("authserver %v: %v\n%s", args, err, out)
		}
	}
	tool("", "keys", "generate", "--key", filepath.Join(certs, "token.key"), "--certificate", filepath.Join(certs, "token.crt"), "--algorithm", "ES256")
	password := "admin-" + id
	tool(password+"\n", "user", "add", "admin", "--htpasswd", filepath.Join(config, "htpasswd"), "--password-stdin")
	writeFile(t, filepath.Join(config, "registry.yml"), `version: 0.1
http:
  tls: {certificate: /certs/registry.crt, key: /certs/registry.key}
auth:
  token: {realm: "https://localhost:5001/token", service: berth-registry, issuer: berth-auth, rootcertbundle: /certs/token.crt}
`)
	writeFile(t, filepath.Join(config, "authserver.yml"), `server: {certificate: /certs/authserver.crt, key: /certs/authserver.key}
token: {issuer: berth-auth, services: [berth-registry], certificate: /certs/token.crt, key: /certs/token.key}
users: {htpasswd: /config/htpasswd}
groups: {admins: [admin]}
acl:
  - match: {group: admins, type: "*"}
    actions: ["*"]
`)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65532, 65532
		if out, err := exec.Command("chown", "-R", "65532:65532", certs, config).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}

	// 3. Up, on free ports.
	ports := freePorts(t, 3)
	authPort, portA, portB := ports[0], ports[1], ports[2]
	env := append(os.Environ(),
		"BERTH_TAG="+tag, "BERTH_DIR="+state, "BERTH_HOST=localhost",
		"BERTH_UID="+strconv.Itoa(uid), "BERTH_GID="+strconv.Itoa(gid),
		"BERTH_AUTH_PORT="+strconv.Itoa(authPort),
		"BERTH_REGISTRY_A_PORT="+strconv.Itoa(portA), "BERTH_REGISTRY_B_PORT="+strconv.Itoa(portB),
		"BERTH_BUILD_TARGET=prebuilt", "BERTH_PREBUILT="+prebuilt,
		"BERTH_S3_SECRETKEY=secret-"+id)
	compose := func(args ...string) (string, error) {
		cmd := composeCommand(append([]string{"-f", filepath.Join(root, "compose.scale.yml"), "-p", project}, args...))
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := compose("logs", "--no-color", "--tail", "40")
			t.Logf("compose logs:\n%s", logs)
		}
		if out, err := compose("down", "--rmi", "all", "-v"); err != nil {
			t.Errorf("compose down: %v %s", err, out)
		}
	})
	// Both replicas run one image: built once (up --build would build it
	// for each, from a context that holds MinIO's 150 MB binary).
	if out, err := compose("build", "--parallel", "minio", "auth", "registry-a"); err != nil {
		t.Fatalf("compose build: %v\n%s", err, out)
	}
	if out, err := compose("up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	say("scale-out: images built, containers started (%s)", time.Since(start).Round(time.Second))
	containers := map[string]string{}
	for _, svc := range []string{"minio", "auth", "registry-a", "registry-b"} {
		out, err := compose("ps", "-q", svc)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("compose ps %s: %v %s", svc, err, out)
		}
		containers[svc] = strings.TrimSpace(out)
	}
	ca := filepath.Join(certs, "ca.crt")
	regA, regB := "localhost:"+strconv.Itoa(portA), "localhost:"+strconv.Itoa(portB)
	waitV2(t, ca, regA)
	waitV2(t, ca, regB)
	restarts := d.must("inspect", "-f", "{{.RestartCount}}", containers["registry-a"], containers["registry-b"])
	say("scale-out: both replicas answer, restarted %s times while MinIO started (%s)",
		strings.Join(strings.Fields(restarts), " and "), time.Since(start).Round(time.Second))

	tc, err := tlsutil.ClientConfig(ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Each client its own connections: a pull must not reuse the push's.
	opts := func() []remote.Option {
		tr := &http.Transport{TLSClientConfig: tc.Clone()}
		t.Cleanup(tr.CloseIdleConnections)
		return []remote.Option{remote.WithAuth(&authn.Basic{Username: "admin", Password: password}),
			remote.WithTransport(tr), remote.WithContext(ctx)}
	}

	// 4. Push through replica A, pull through replica B.
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	pushOpts := opts()
	if err := remote.Write(mustRef(t, regA+"/team/app:v1"), img, pushOpts...); err != nil {
		t.Fatalf("push via replica A: %v", err)
	}
	pullOpts := opts()
	pullAll(t, mustRef(t, regB+"/team/app:v1"), img, pullOpts)
	say("scale-out: pushed through replica A, pulled the same image and its blobs through replica B")

	// 5. One chunked upload, begun on A, continued on B, then A, finished
	// on B: the session, its hash state and its multipart upload live in
	// the bucket. 13 MiB: with the default 10 MiB chunk size the S3 upload
	// has a whole part and a pending tail.
	blob := make([]byte, 13<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	realm := "https://localhost:" + strconv.Itoa(authPort) + "/token"
	splitUpload(ctx, t, tc, realm, password, []string{regA, regB, regA, regB}, "team/split", blob)
	say("scale-out: one chunked upload begun on A, continued on B and A, completed on B")

	// 6. Through a load balancer: each connection goes to the next
	// replica, TLS passing through.
	lb := startBalancer(t, regA, regB)
	img2, err := random.Image(32<<10, 5)
	if err != nil {
		t.Fatal(err)
	}
	lbPush := opts()
	ref2 := mustRef(t, lb.addr+"/team/lb:v1")
	if err := remote.Write(ref2, img2, lbPush...); err != nil {
		t.Fatalf("push through the load balancer: %v", err)
	}
	lbPull := opts()
	pullAll(t, ref2, img2, lbPull)
	if a, b := lb.served[0].Load(), lb.served[1].Load(); a == 0 || b == 0 {
		t.Fatalf("the load balancer sent %d connections to A and %d to B", a, b)
	}
	say("scale-out: push and pull through the load balancer (%d connections to A, %d to B)", lb.served[0].Load(), lb.served[1].Load())

	// 7. Inside the network the name registry is both replicas: a client
	// there (the auth server's own healthcheck) asks https://registry:5000
	// until each replica has answered it.
	authIP := d.must("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", containers["auth"])
	fromAuth := regexp.MustCompile(`remote=` + regexp.QuoteMeta(authIP) + ` path=/healthz`)
	for i := 0; ; i++ {
		if out, err := d.run("", "exec", "-e", "AUTHSERVER_SERVER_ADDR=registry:5000", containers["auth"], "/usr/local/bin/authserver", "healthcheck"); err != nil {
			t.Fatalf("healthcheck of https://registry:5000 from the auth server's container: %v %s", err, out)
		}
		logsA, logsB := d.must("logs", containers["registry-a"]), d.must("logs", containers["registry-b"])
		if fromAuth.MatchString(logsA) && fromAuth.MatchString(logsB) {
			say("scale-out: inside the network, registry:5000 reached both replicas in %d requests", i+1)
			break
		}
		if i == 30 {
			t.Fatalf("after %d requests to registry:5000 from %s, not both replicas answered", i+1, authIP)
		}
	}

	// 8. Each replica's log shows what it served.
	logsA, logsB := d.must("logs", containers["registry-a"]), d.must("logs", containers["registry-b"])
	for _, c := range []struct {
		logs, replica, what string
		re                  string
	}{
		{logsA, "A", "the manifest push", `method=PUT status=201 .*route=manifest repository=team/app user=admin`},
		{logsB, "B", "the manifest pull", `method=GET status=200 .*route=manifest repository=team/app user=admin`},
		{logsB, "B", "blob pulls", `method=GET status=200 .*route=blob repository=team/app user=admin`},
		{logsA, "A", "the upload's start", `method=POST status=202 .*route=upload-start repository=team/split`},
		{logsB, "B", "a chunk of the upload", `method=PATCH status=202 .*route=upload repository=team/split`},
		{logsA, "A", "a chunk of the upload", `method=PATCH status=202 .*route=upload repository=team/split`},
		{logsB, "B", "the upload's completion", `method=PUT status=201 .*route=upload repository=team/split`},
		{logsA, "A", "load-balanced requests", `route=\S+ repository=team/lb`},
		{logsB, "B", "load-balanced requests", `route=\S+ repository=team/lb`},
	} {
		if !regexp.MustCompile(c.re).MatchString(c.logs) {
			t.Errorf("replica %s's log does not show %s (%s)", c.replica, c.what, c.re)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, svc := range []string{"auth", "registry-a", "registry-b"} {
		waitHealthy(t, d, containers[svc])
	}
	say("scale-out: PASSED in %s", time.Since(start).Round(time.Second))
}

// TestMinIOImageVersion keeps Dockerfile.minio's source build at the MinIO
// the tests run against.
func TestMinIOImageVersion(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile.minio"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "ARG MINIO_VERSION=" + miniotest.Version + "\n"; !strings.Contains(string(data), want) {
		t.Fatalf("Dockerfile.minio does not build MinIO %s (no line %q)", miniotest.Version, strings.TrimSpace(want))
	}
}

// staticMinIO returns the MinIO binary to build the image from:
// $BERTH_MINIO_BIN, else where CI installs it. It must be static (the image
// is FROM scratch). Missing or dynamic, the test is skipped, except in CI.
func staticMinIO(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("BERTH_MINIO_BIN")
	if bin == "" {
		bin = "/tmp/berth-tools/minio"
	}
	why := ""
	if f, err := elf.Open(bin); err != nil {
		why = fmt.Sprintf("no MinIO binary at %s ($BERTH_MINIO_BIN): %v", bin, err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				why = bin + " is dynamically linked (built with cgo); the image is FROM scratch"
			}
		}
		f.Close()
	}
	if why == "" {
		return bin
	}
	why += "; build a static one with: " + miniotest.Install
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	say("SKIPPED scale-out: %s", why)
	t.Skip(why)
	return ""
}

// composeCommand is `docker compose` where the plugin is installed, else
// docker-compose, with args.
func composeCommand(args []string) *exec.Cmd {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return exec.Command("docker", append([]string{"compose"}, args...)...)
	}
	return exec.Command("docker-compose", args...)
}

// freePorts returns n distinct free ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		if p := testutil.FreePort(t); !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// pullAll pulls ref, checks it is want and reads every layer through its
// digest check.
func pullAll(t *testing.T, ref name.Reference, want v1.Image, opts []remote.Option) {
	t.Helper()
	got, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if a, b := digest(t, got), digest(t, want); a != b {
		t.Fatalf("pulled %s from %s, pushed %s", a, ref, b)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("pull %s: layer: %v", ref, err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("pull %s: layer: %v", ref, err)
		}
	}
}

// splitUpload pushes blob to repo as a chunked upload whose requests go to
// the registries in hosts in turn: the start, two chunks, and the final PUT
// with the last chunk. It then reads the blob back through every host.
func splitUpload(ctx context.Context, t *testing.T, tc *tls.Config, realm, password string, hosts []string, repo string, blob []byte) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.Clone()}}
	defer client.CloseIdleConnections()
	do := func(method, target string, body []byte, header http.Header, want int) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		if resp.StatusCode != want {
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("%s %s: %s, want %d: %s", method, target, resp.Status, want, msg)
		}
		return resp
	}

	// A token for the repository, as a client gets it after the challenge.
	q := url.Values{"service": {"berth-registry"}, "scope": {"repository:" + repo + ":push,pull"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	var tok struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || tok.Token == "" {
		t.Fatalf("token: %s %v", resp.Status, err)
	}
	auth := http.Header{"Authorization": {"Bearer " + tok.Token}}
	withAuth := func(kv ...string) http.Header {
		h := auth.Clone()
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}

	resp = do(http.MethodPost, "https://"+hosts[0]+"/v2/"+repo+"/blobs/uploads/", nil, auth, http.StatusAccepted)
	resp.Body.Close()
	location := resp.Header.Get("Location")
	chunks := [][]byte{blob[:6<<20], blob[6<<20 : 12<<20], blob[12<<20:]}
	offset := 0
	for i, chunk := range chunks[:2] {
		u, err := url.Parse(location)
		if err != nil {
			t.Fatalf("Location %q: %v", location, err)
		}
		rng := fmt.Sprintf("%d-%d", offset, offset+len(chunk)-1)
		resp := do(http.MethodPatch, "https://"+hosts[1+i]+u.RequestURI(), chunk,
			withAuth("Content-Type", "application/octet-stream", "Content-Range", rng), http.StatusAccepted)
		resp.Body.Close()
		if got := resp.Header.Get("Range"); got != "0-"+strconv.Itoa(offset+len(chunk)-1) {
			t.Fatalf("chunk %d on %s: Range %q", i+1, hosts[1+i], got)
		}
		offset += len(chunk)
		location = resp.Header.Get("Location")
	}
	sum := sha256.Sum256(blob)
	dg := "sha256:" + hex.EncodeToString(sum[:])
	u, err := url.Parse(location)
	if err != nil {
		t.Fatalf("Location %q: %v", location, err)
	}
	v := u.Query()
	v.Set("digest", dg)
	u.RawQuery = v.Encode()
	resp = do(http.MethodPut, "https://"+hosts[3]+u.RequestURI(), chunks[2],
		withAuth("Content-Type", "application/octet-stream"), http.StatusCreated)
	resp.Body.Close()
	for _, h := range hosts[:2] {
		resp := do(http.MethodGet, "https://"+h+"/v2/"+repo+"/blobs/"+dg, nil, auth, http.StatusOK)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("blob read back through %s: %d bytes, %v", h, len(got), err)
		}
	}
}

// balancer is the test's stand-in for the load balancer a deployment puts
// in front of the replicas (HAProxy or nginx in TCP mode, a cloud network
// load balancer): it hands each connection to the next replica in turn and
// copies bytes both ways, so TLS runs from the client to the replica.
type balancer struct {
	addr     string
	backends []string
	next     atomic.Uint64
	served   []atomic.Int64
}

func startBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{addr: "localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), backends: backends, served: make([]atomic.Int64, len(backends))}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(b.next.Add(1)-1) % len(backends)
			go b.pipe(c, i)
		}
	}()
	return b
}

func (b *balancer) pipe(c net.Conn, i int) {
	defer c.Close()
	up, err := net.Dial("tcp", strings.Replace(b.backends[i], "localhost", "127.0.0.1", 1))
	if err != nil {
		return
	}
	defer up.Close()
	b.served[i].Add(1)
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}
