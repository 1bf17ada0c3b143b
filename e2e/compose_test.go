package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

// TestComposeQuickstart is the one command with Docker: quickstart --docker
// creates the state directory, builds both images from static binaries and
// runs compose.yml; both containers must become healthy by their own
// checks, and a client logs in, pushes and pulls.
func TestComposeQuickstart(t *testing.T) {
	if os.Getenv("BERTH_E2E_DOCKER") != "1" {
		t.Skip("the Docker end-to-end tests run with BERTH_E2E_DOCKER=1")
	}
	d := &dockerClient{t: t, config: t.TempDir()}
	if version, err := d.run("", "version", "--format", "{{.Server.Version}}"); err != nil {
		if os.Getenv("BERTH_E2E_SKIP_DOCKER") == "1" {
			say("SKIPPED compose: no Docker engine reachable and BERTH_E2E_SKIP_DOCKER=1")
			t.Skip("no Docker engine; skipped because BERTH_E2E_SKIP_DOCKER=1")
		}
		t.Fatalf("BERTH_E2E_DOCKER=1 but no Docker engine is reachable: %v %s", err, version)
	}
	start := time.Now()
	root := repoRoot(t)
	tmp := t.TempDir()
	id := randomID(t)
	project, tag := "berth-e2e-"+id, "e2e-"+id
	regPort, authPort := testutil.FreePort(t), testutil.FreePort(t)
	for authPort == regPort {
		authPort = testutil.FreePort(t)
	}

	qsBin := filepath.Join(tmp, "quickstart")
	build := exec.Command("go", "build", "-o", qsBin, "./cmd/quickstart")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v %s", err, out)
	}
	qs := exec.Command(qsBin, "--docker", "--dir", filepath.Join(tmp, "berth"), "--bin", filepath.Join(tmp, "bin"),
		"--registry-port", strconv.Itoa(regPort), "--auth-port", strconv.Itoa(authPort))
	qs.Dir = root
	qs.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+project, "BERTH_TAG="+tag)
	var stderr testutil.Buffer
	qs.Stderr = &stderr
	stdout, err := qs.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("quickstart stderr:\n%s", stderr.String())
		}
		args := []string{"-f", filepath.Join(root, "compose.yml"), "-p", project, "down", "--rmi", "all", "-v"}
		cmd := exec.Command("docker-compose", args...)
		if exec.Command("docker", "compose", "version").Run() == nil {
			cmd = exec.Command("docker", append([]string{"compose"}, args...)...)
		}
		cmd.Env = append(os.Environ(), "BERTH_TAG="+tag, "BERTH_DIR="+filepath.Join(tmp, "berth"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("compose down: %v %s", err, out)
		}
	})
	if err := qs.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Policy: ") {
				banner <- b.String()
			}
		}
		banner <- b.String()
		done <- qs.Wait()
	}()
	t.Cleanup(func() {
		if qs.ProcessState == nil {
			qs.Process.Kill()
		}
	})
	var out string
	select {
	case out = <-banner:
	case <-time.After(4 * time.Minute):
		t.Fatal("quickstart --docker: no banner within 4 minutes")
	}
	password := ""
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "password: "); ok {
			password = v
		}
	}
	if !strings.Contains(out, "Berth is running") || password == "" {
		t.Fatalf("quickstart --docker did not start:\n%s", out)
	}
	say("quickstart --docker: both containers answer (%s)", time.Since(start).Round(time.Second))

	for _, svc := range []string{"auth", "registry"} {
		waitHealthy(t, d, project+"_"+svc+"_1")
	}

	tc, err := tlsutil.ClientConfig(filepath.Join(tmp, "berth", "certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := []remote.Option{remote.WithAuth(&authn.Basic{Username: "admin", Password: password}), remote.WithTransport(tr), remote.WithContext(ctx)}
	ref, err := name.ParseReference("localhost:" + strconv.Itoa(regPort) + "/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(2048, 2)
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("push: %v", err)
	}
	got, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := digest(t, got), digest(t, img); a != b {
		t.Fatalf("pulled %s, pushed %s", a, b)
	}
	bad := []remote.Option{remote.WithAuth(&authn.Basic{Username: "admin", Password: "wrong"}), remote.WithTransport(tr), remote.WithContext(ctx)}
	if _, err := remote.Image(ref, bad...); err == nil {
		t.Fatal("pull with a wrong password succeeded")
	}
	say("compose: push and pull as admin through the containers, wrong password refused")

	// The web page signs admin in at the auth server across the network
	// (ui.tokenaddr) and then lists what admin pushed.
	uiSignIn(ctx, t, tr, "https://localhost:"+strconv.Itoa(regPort), password, "team/app")
	say("compose: the web page signs admin in through the auth container and lists team/app")

	tr.CloseIdleConnections()
	if err := qs.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("quickstart --docker after SIGINT: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("quickstart --docker did not exit after SIGINT")
	}
	if status, _ := d.run("", "inspect", "-f", "{{.State.Status}}", project+"_registry_1"); status != "exited" {
		t.Fatalf("registry container after Ctrl-C: %s", status)
	}
	say("compose: PASSED in %s", time.Since(start).Round(time.Second))
}

func digest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// uiSignIn signs user admin in on the registry's web page at base, as a
// browser does (the sign-in form's CSRF value, the session cookie), and
// checks that the repositories page then lists repo.
func uiSignIn(ctx context.Context, t *testing.T, tr http.RoundTripper, base, password, repo string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: tr, Jar: jar}
	get := func(u string) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", u, resp.StatusCode, b)
		}
		return string(b)
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(get(base + "/ui/login"))
	if m == nil {
		t.Fatal("the sign-in page has no csrf field")
	}
	form := url.Values{"username": {"admin"}, "password": {password}, "csrf": {m[1]}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/ui/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/ui/" {
		t.Fatalf("sign-in: %d at %s\n%s", resp.StatusCode, resp.Request.URL, b)
	}
	page := string(b)
	if !strings.Contains(page, `id="user"`) || !strings.Contains(page, `data-repository="`+repo+`"`) {
		t.Fatalf("after sign-in the repositories page does not show admin and %s:\n%s", repo, page)
	}
}
