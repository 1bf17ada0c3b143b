package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// server is a registry process this program started.
type server struct {
	name string
	url  string
	root string // storage root
	cmd  *exec.Cmd
	done chan error
}

// compareCmd starts Berth and CNCF Distribution on loopback with one
// certificate and data directories on one disk, runs each registry test
// on both alternately for some rounds, and prints the side-by-side table.
func compareCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opt := defaultOptions()
	opt.DiskDir = ""
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	berthBin := fs.String("berth", "", "Berth's registry binary (go build ./cmd/registry)")
	distBin := fs.String("distribution", "", "CNCF Distribution's registry binary")
	workdir := fs.String("workdir", "", "directory for the certificate, both data directories, logs and limit-disk (required; its disk is the one measured)")
	rounds := fs.Int("rounds", 3, "rounds of each test per registry")
	commonFlags(fs, &opt)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *berthBin == "" || *distBin == "" || *workdir == "" {
		return errors.New("compare needs --berth, --distribution and --workdir")
	}
	if err := opt.validate(); err != nil {
		return err
	}
	wd, err := filepath.Abs(*workdir)
	if err != nil {
		return err
	}
	for _, bin := range []*string{berthBin, distBin} {
		if *bin, err = exec.LookPath(*bin); err != nil {
			return err
		}
		if *bin, err = filepath.Abs(*bin); err != nil {
			return err
		}
	}
	opt.DiskDir = cmp.Or(opt.DiskDir, wd)
	cert, key, err := genCert(filepath.Join(wd, "cert"))
	if err != nil {
		return err
	}
	opt.CACert = cert

	b := newBencher(opt)
	limits := b.limits(stdout)

	berth, err := startBerth(ctx, *berthBin, wd, cert, key)
	if err != nil {
		return err
	}
	defer berth.stop()
	dist, err := startDistribution(ctx, *distBin, wd, cert, key)
	if err != nil {
		return err
	}
	defer dist.stop()

	var targets []*target
	for _, s := range []*server{berth, dist} {
		if err := s.waitReady(ctx, opt.CACert); err != nil {
			return err
		}
		t, err := newTarget(opt, s.name, s.url)
		if err != nil {
			return err
		}
		t.pid, t.root = s.cmd.Process.Pid, s.root
		defer t.close()
		targets = append(targets, t)
	}
	fmt.Fprintf(stderr, "berth %s (pid %d), distribution %s (pid %d), %d rounds, size %s\n",
		berth.url, berth.cmd.Process.Pid, dist.url, dist.cmd.Process.Pid, *rounds, (*byteSize)(&opt.Size))

	var cs []comparison
	for _, test := range selected(opt.Only, registryTests) {
		c := comparison{Test: test}
		for round := 1; round <= *rounds; round++ {
			// Alternate who goes first, and flush dirty pages between
			// tests, so neither registry pays for the other's writeback.
			order := targets
			if round%2 == 0 {
				order = []*target{targets[1], targets[0]}
			}
			for _, t := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// The disk and the cores are shared with other work:
				// measure the limit that bounds the test right before
				// Berth's run, so each round's fraction is its own.
				if t == targets[0] {
					if r, ok := b.boundLimit(test); ok {
						r.Round = round
						writeJSON(stdout, r)
						c.Bound = strings.TrimPrefix(r.Test, "limit-")
						c.Bounds = append(c.Bounds, r.Value)
					}
				}
				flushDirtyPages()
				r := b.run(ctx, t, test)
				r.Round = round
				writeJSON(stdout, r)
				if t == targets[0] {
					c.A = append(c.A, r)
				} else {
					c.B = append(c.B, r)
				}
				c.Unit = cmp.Or(c.Unit, r.Unit)
			}
		}
		cs = append(cs, c)
	}
	fmt.Fprintln(stdout, "\nmachine limits at the start (below: the median of the bounds measured before each of Berth's rounds, and of Berth's per-round fractions of them)")
	writeTable(stdout, limits)
	fmt.Fprintln(stdout)
	writeComparison(stdout, "berth", "distribution", cs)
	return nil
}

// boundLimit measures the machine limit that bounds a test: a push is
// bounded by durable disk writes, a pull by one core that receives,
// decrypts and hashes every byte. ok is false for tests without such a bound.
func (b *bencher) boundLimit(test string) (r Result, ok bool) {
	switch {
	case strings.HasPrefix(test, "push"):
		return b.limit("limit-disk"), true
	case strings.HasPrefix(test, "pull"):
		sha := b.limit("limit-sha256")
		gcm := b.limit("limit-aesgcm")
		recv := b.limit("limit-recv")
		return Result{Target: "machine", Test: "limit-pull", Unit: "MB/s", Value: pullBound(sha.Value, gcm.Value, recv.Value)}, true
	}
	return Result{}, false
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// cleanEnv is this process's environment without variables that configure
// either registry.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

func startBerth(ctx context.Context, bin, wd, cert, key string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{name: "berth", url: "https://" + addr, root: filepath.Join(wd, "berth-data")}
	env := append(cleanEnv(),
		"REGISTRY_HTTP_ADDR="+addr,
		"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="+s.root,
		"REGISTRY_STORAGE_DELETE_ENABLED=true",
		"REGISTRY_HTTP_TLS_CERTIFICATE="+cert,
		"REGISTRY_HTTP_TLS_KEY="+key,
		"REGISTRY_LOG_LEVEL=warn",
		"REGISTRY_LOG_ACCESSLOG_DISABLED=true",
	)
	return s, s.start(ctx, wd, bin, env, "serve")
}

func startDistribution(ctx context.Context, bin, wd, cert, key string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{name: "distribution", url: "https://" + addr, root: filepath.Join(wd, "distribution-data")}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
http:
  addr: %q
  tls:
    certificate: %q
    key: %q
`, s.root, addr, cert, key)
	cfgFile := filepath.Join(wd, "distribution.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		return nil, err
	}
	env := append(cleanEnv(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	return s, s.start(ctx, wd, bin, env, "serve", cfgFile)
}

// start runs the server with its output in <wd>/<name>.log. The process
// gets SIGTERM when stop is called or ctx ends, and SIGKILL 10 s later.
func (s *server) start(ctx context.Context, wd, bin string, env []string, args ...string) error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(wd, s.name+".log"))
	if err != nil {
		return err
	}
	s.cmd = exec.CommandContext(ctx, bin, args...)
	s.cmd.Env, s.cmd.Dir = env, wd
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Cancel = func() error { return s.cmd.Process.Signal(syscall.SIGTERM) }
	s.cmd.WaitDelay = 10 * time.Second
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", s.name, err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait(); logf.Close() }()
	return nil
}

// stop asks the server to exit and waits for it.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// waitReady polls GET /v2/ until the server answers, for 30 s at most.
func (s *server) waitReady(ctx context.Context, caFile string) error {
	c, err := newClient(s.url, caFile, false, "", "")
	if err != nil {
		return err
	}
	defer c.close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := c.hc.Do(req)
		if err == nil {
			drain(resp)
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case e := <-s.done:
			s.done <- e
			return fmt.Errorf("%s exited at start (%v); see its log in the workdir", s.name, e)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within 30 s: %v", s.name, s.url, err)
		}
	}
}
