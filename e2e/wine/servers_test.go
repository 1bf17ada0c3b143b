package wine

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/internal/winetest"
	"github.com/berth-registry/berth/tlsutil"
)

// site is a directory laid out as the servers expect it (certs, config,
// data), their Windows programs, and the ports they listen on.
type site struct {
	w                      *winetest.Wine
	dir, bin               string
	registryPort, authPort int
	caFile                 string
	tls                    *tls.Config
}

// newSite builds registry.exe and authserver.exe and issues the CA and
// the server certificates (for localhost and 127.0.0.1).
func newSite(t *testing.T, w *winetest.Wine) *site {
	t.Helper()
	s := &site{w: w, dir: t.TempDir(), bin: t.TempDir(), registryPort: testutil.FreePort(t), authPort: testutil.FreePort(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := w.Go(ctx, moduleRoot(t), "build", "-o", s.bin+string(filepath.Separator), "./cmd/registry", "./cmd/authserver"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"certs", "config", "data"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"registry", "authserver"} {
		files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: filepath.Join(s.dir, "certs"), Name: name, Hosts: []string{"localhost", "127.0.0.1"}}, false)
		if err != nil {
			t.Fatal(err)
		}
		s.caFile = files.CAFile
	}
	tc, err := tlsutil.ClientConfig(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	s.tls = tc
	return s
}

func (s *site) registryHost() string { return "localhost:" + strconv.Itoa(s.registryPort) }

func (s *site) write(t *testing.T, rel, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, rel), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeRegistryConfig writes config/registry.yml: storage in data with
// deletes allowed, TLS on the site's port, then extra (an auth section).
func (s *site) writeRegistryConfig(t *testing.T, extra string) {
	t.Helper()
	s.write(t, "config/registry.yml", fmt.Sprintf(`version: 0.1
storage:
  filesystem:
    rootdirectory: data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
  tls:
    certificate: certs/registry.crt
    key: certs/registry.key
`, s.registryPort)+extra)
}

// tool runs one of the Windows programs to completion, in the site's
// directory, and returns its output.
func (s *site) tool(t *testing.T, stdin, exe string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := s.w.Command(ctx, filepath.Join(s.bin, exe), args...)
	cmd.Dir = s.dir
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", exe, args, err, out)
	}
	return string(out)
}

// server is one of the Windows programs serving under Wine.
type server struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *testutil.Buffer
	done chan struct{}
	err  error
}

// start runs exe serve config under Wine in the site's directory and
// waits until ready answers true.
func (s *site) start(t *testing.T, exe, config string, ready func(*http.Client) bool) *server {
	t.Helper()
	srv := &server{t: t, name: exe, log: &testutil.Buffer{}, done: make(chan struct{})}
	srv.cmd = s.w.Command(context.Background(), filepath.Join(s.bin, exe), "serve", config)
	srv.cmd.Dir = s.dir
	srv.cmd.Stdout, srv.cmd.Stderr = srv.log, srv.log
	if err := srv.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { srv.err = srv.cmd.Wait(); close(srv.done) }()
	t.Cleanup(srv.kill)
	client := s.client(2 * time.Second)
	deadline := time.Now().Add(90 * time.Second)
	for !ready(client) {
		select {
		case <-srv.done:
			t.Fatalf("%s exited while starting: %v\n%s", exe, srv.err, srv.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become ready\n%s", exe, srv.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return srv
}

// kill ends the server at once, as a crash or a power cut would (the
// Windows process is the Wine process: SIGKILL is TerminateProcess).
//
// Unlike Windows, Wine keeps a killed process's TCP connections open for a
// while (wineserver holds the socket handles, seen with ss), so a client
// that kept connections to it waits for answers that never come: after a
// kill, talk to the new process with a new client.
func (srv *server) kill() {
	select {
	case <-srv.done:
		return
	default:
	}
	_ = srv.cmd.Process.Kill()
	<-srv.done
}

// client is an HTTP client that trusts the site's CA.
func (s *site) client(timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.tls.Clone(), ForceAttemptHTTP2: true}, Timeout: timeout}
}

// answers returns a readiness check: GET url answers with status want.
func answers(url string, want int) func(*http.Client) bool {
	return func(c *http.Client) bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == want
	}
}

func (s *site) startRegistry(t *testing.T, config string, want int) *server {
	return s.start(t, "registry.exe", config, answers(fmt.Sprintf("https://%s/v2/", s.registryHost()), want))
}
