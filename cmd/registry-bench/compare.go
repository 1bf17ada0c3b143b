package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a registry process this program started.
type server struct {
	name string
	url  string
	root string // storage root on disk; empty on S3
	cmd  *exec.Cmd
	done chan error
	// how it was started, for restart
	wd, bin string
	env     []string
	args    []string
}

// serverSetup is what both registries of a comparison are started with.
type serverSetup struct {
	wd        string
	cert, key string // empty: plain HTTP
	// s3Endpoint, when set, is the S3 endpoint the registry keeps its data
	// at, in bucket, instead of a directory of wd.
	s3Endpoint string
	s3         *s3Store
	bucket     string
	debugAddr  string   // Berth's http.debug.addr (pprof); empty: none
	env        []string // Berth's extra environment (--berth-env)
}

// compareCmd starts Berth and CNCF Distribution on loopback with one
// certificate and data directories on one disk (or buckets of one S3
// store), runs each registry test on both alternately for some rounds, and
// prints the side-by-side table.
func compareCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opt := defaultOptions()
	opt.DiskDir = ""
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	berthBin := fs.String("berth", "", "Berth's registry binary (go build ./cmd/registry)")
	distBin := fs.String("distribution", "", "CNCF Distribution's registry binary")
	workdir := fs.String("workdir", "", "directory for the certificate, both data directories, logs and limit-disk (required; its disk is the one measured)")
	rounds := fs.Int("rounds", 3, "rounds of each test per registry")
	plain := fs.Bool("plain-http", false, "serve both registries over plain HTTP on loopback (pull-h2 is then left out)")
	s3URL := fs.String("s3", "", "S3 endpoint (http://127.0.0.1:9000, a MinIO) to keep both registries' data in, in buckets "+berthBucket+" and "+distributionBucket+" (created, or emptied), instead of the workdir")
	s3Key := fs.String("s3-accesskey", os.Getenv("REGISTRY_BENCH_S3_ACCESSKEY"), "S3 access key (env REGISTRY_BENCH_S3_ACCESSKEY)")
	s3Secret := fs.String("s3-secretkey", os.Getenv("REGISTRY_BENCH_S3_SECRETKEY"), "S3 secret key (env REGISTRY_BENCH_S3_SECRETKEY)")
	s3Count := fs.Bool("s3-count", false, "with --s3: count each registry's S3 requests per test through a proxy, and print them per operation (the proxy slows the store: take times from a run without it)")
	debugAddr := fs.String("berth-debug", "", "Berth's http.debug.addr, for profiling it during the run (e.g. 127.0.0.1:5005)")
	baseline := fs.String("baseline", "distribution", "the second registry: distribution (--distribution's binary), or berth (Berth again, without --berth-env: a feature's cost)")
	var berthEnv envList
	fs.Var(&berthEnv, "berth-env", "KEY=VALUE added to the first Berth's environment (repeatable); {sink} in VALUE is the URL of a webhook receiver this program runs, which answers 200 to every POST")
	commonFlags(fs, &opt)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *baseline {
	case "distribution":
	case "berth":
		*distBin = *berthBin
	default:
		return fmt.Errorf("--baseline %q: want distribution or berth", *baseline)
	}
	if *berthBin == "" || *distBin == "" || *workdir == "" {
		return errors.New("compare needs --berth, --distribution (or --baseline berth) and --workdir")
	}
	if *s3Count && *s3URL == "" {
		return errors.New("--s3-count needs --s3")
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
	setup := serverSetup{wd: wd, debugAddr: *debugAddr}
	if !*plain {
		if setup.cert, setup.key, err = genCert(filepath.Join(wd, "cert")); err != nil {
			return err
		}
		opt.CACert = setup.cert
	}
	tests := selected(opt.Only, registryTests)
	if *plain {
		tests = slices.DeleteFunc(tests, func(t string) bool { return t == "pull-h2" })
	}

	b := newBencher(opt)
	b.plain = *plain
	berthSetup, distSetup := setup, setup
	distSetup.debugAddr = "" // --berth-debug is the first Berth's only
	var counters []*s3Counter
	if *s3URL != "" {
		if b.s3, err = newS3Store(*s3URL, *s3Key, *s3Secret); err != nil {
			return err
		}
		for _, bucket := range []string{berthBucket, distributionBucket, limitBucket} {
			if err := b.s3.emptyBucket(ctx, bucket); err != nil {
				return err
			}
		}
		berthSetup.s3, berthSetup.s3Endpoint, berthSetup.bucket = b.s3, *s3URL, berthBucket
		distSetup.s3, distSetup.s3Endpoint, distSetup.bucket = b.s3, *s3URL, distributionBucket
		if *s3Count {
			for _, st := range []*serverSetup{&berthSetup, &distSetup} {
				c, err := startS3Counter(*s3URL)
				if err != nil {
					return err
				}
				defer c.close()
				st.s3Endpoint = c.url
				counters = append(counters, c)
			}
		}
	}
	limits := b.limits(stdout)

	var sink *sink
	if berthEnv.usesSink() {
		if sink, err = startSink(); err != nil {
			return err
		}
		defer func() {
			sink.close()
			fmt.Fprintf(stdout, "\nwebhook receiver: %d POSTs, %d events\n", sink.posts.Load(), sink.events.Load())
		}()
		berthSetup.env = berthEnv.with(sink.url)
	} else {
		berthSetup.env = berthEnv
	}
	berth, err := startBerth(ctx, *berthBin, "berth", berthSetup)
	if err != nil {
		return err
	}
	defer berth.stop()
	var dist *server
	if *baseline == "berth" {
		dist, err = startBerth(ctx, *distBin, "berth-baseline", distSetup)
	} else {
		dist, err = startDistribution(ctx, *distBin, distSetup)
	}
	if err != nil {
		return err
	}
	defer dist.stop()

	var targets []*target
	for i, s := range []*server{berth, dist} {
		if err := s.waitReady(ctx, opt.CACert); err != nil {
			return err
		}
		t, err := newTarget(opt, s.name, s.url)
		if err != nil {
			return err
		}
		t.pid, t.root = s.cmd.Process.Pid, s.root
		if b.s3 != nil {
			t.s3, t.bucket = b.s3, []string{berthBucket, distributionBucket}[i]
		}
		if counters != nil {
			t.counter = counters[i]
		}
		t.restart = func(ctx context.Context) (int, error) {
			if err := s.restart(ctx, opt.CACert); err != nil {
				return 0, err
			}
			t.c.close()
			t.h2.close()
			return s.cmd.Process.Pid, nil
		}
		defer t.close()
		targets = append(targets, t)
	}
	fmt.Fprintf(stderr, "berth %s (pid %d), %s %s (pid %d), %d rounds, size %s\n",
		berth.url, berth.cmd.Process.Pid, dist.name, dist.url, dist.cmd.Process.Pid, *rounds, (*byteSize)(&opt.Size))

	var cs []comparison
	var counts []countRow
	for _, test := range tests {
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
				if sink != nil {
					// The events of the last run are delivered first,
					// so neither registry's run pays for them.
					if waited := sink.waitIdle(ctx, time.Second, 10*time.Minute); waited > 2*time.Second {
						fmt.Fprintf(stderr, "waited %v for the webhook receiver to go idle before %s round %d on %s\n",
							waited.Round(time.Second), test, round, t.name)
					}
				}
				flushDirtyPages()
				r := b.run(ctx, t, test)
				r.Round, r.Load1 = round, load1()
				writeJSON(stdout, r)
				if t.counter != nil {
					row := countRow{Target: t.name, Test: test, Ops: r.Ops}
					row.Counts, row.Sent, row.Recv = t.counter.take()
					if r.Error == "" {
						counts = append(counts, row)
					}
				}
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
	writeComparison(stdout, berth.name, dist.name, cs)
	if counts != nil {
		fmt.Fprintln(stdout, "\nS3 requests per operation (a push or pull of one blob, a manifest PUT or GET; the timed part of each test)")
		writeCounts(stdout, counts)
	}
	return nil
}

// load1 is the 1-minute load average, 0 where the system does not say.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// boundLimit measures the machine limit that bounds a test: a push is
// bounded by durable disk writes, a pull by one core that receives,
// decrypts and hashes every byte. On S3 they are the store's: a client's
// PUT of the blob straight into it, and a GET that hashes it. ok is false
// for tests without such a bound.
func (b *bencher) boundLimit(test string) (r Result, ok bool) {
	switch {
	case test == "push-memory":
		return Result{}, false
	case b.s3 != nil && strings.HasPrefix(test, "push"):
		return b.limit("limit-s3put"), true
	case b.s3 != nil && strings.HasPrefix(test, "pull"):
		return b.limit("limit-s3get"), true
	case strings.HasPrefix(test, "push"):
		return b.limit("limit-disk"), true
	case strings.HasPrefix(test, "pull"):
		sha := b.limit("limit-sha256")
		gcm := math.Inf(1) // no TLS: nothing to decrypt
		if !b.plain {
			gcm = b.limit("limit-aesgcm").Value
		}
		recv := b.limit("limit-recv")
		return Result{Target: "machine", Test: "limit-pull", Unit: "MB/s", Value: pullBound(sha.Value, gcm, recv.Value)}, true
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

func (st serverSetup) scheme() string {
	if st.cert == "" {
		return "http://"
	}
	return "https://"
}

// startBerth starts Berth, under name (its log and data directory), with
// its defaults but for the storage, TLS, quiet logs and st.env. On S3 both
// registries get Distribution's defaults for the part size (10 MiB) and
// blobs served through the registry (Berth's default; Distribution is told
// to disable redirects).
func startBerth(ctx context.Context, bin, name string, st serverSetup) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{name: name, url: st.scheme() + addr}
	env := append(cleanEnv(),
		"REGISTRY_HTTP_ADDR="+addr,
		"REGISTRY_STORAGE_DELETE_ENABLED=true",
		"REGISTRY_LOG_LEVEL=warn",
		"REGISTRY_LOG_ACCESSLOG_DISABLED=true",
	)
	if st.s3Endpoint != "" {
		env = append(env,
			"REGISTRY_STORAGE_S3_REGIONENDPOINT="+st.s3Endpoint,
			"REGISTRY_STORAGE_S3_BUCKET="+st.bucket,
			"REGISTRY_STORAGE_S3_ACCESSKEY="+st.s3.accessKey,
			"REGISTRY_STORAGE_S3_SECRETKEY="+st.s3.secretKey,
			"REGISTRY_STORAGE_S3_REGION=us-east-1",
			"REGISTRY_STORAGE_S3_FORCEPATHSTYLE=true",
		)
	} else {
		s.root = filepath.Join(st.wd, name+"-data")
		env = append(env, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="+s.root)
	}
	if st.cert != "" {
		env = append(env, "REGISTRY_HTTP_TLS_CERTIFICATE="+st.cert, "REGISTRY_HTTP_TLS_KEY="+st.key)
	} else {
		env = append(env, "REGISTRY_HTTP_TLS_DISABLED=true")
	}
	if st.debugAddr != "" {
		env = append(env, "REGISTRY_HTTP_DEBUG_ADDR="+st.debugAddr)
	}
	env = append(env, st.env...)
	return s, s.start(ctx, st.wd, bin, env, "serve")
}

func startDistribution(ctx context.Context, bin string, st serverSetup) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{name: "distribution", url: st.scheme() + addr}
	var storage string
	if st.s3Endpoint != "" {
		storage = fmt.Sprintf(`  s3:
    regionendpoint: %q
    bucket: %q
    accesskey: %q
    secretkey: %q
    region: us-east-1
    forcepathstyle: true
    secure: false
    v4auth: true
  redirect:
    disable: true
`, st.s3Endpoint, st.bucket, st.s3.accessKey, st.s3.secretKey)
	} else {
		s.root = filepath.Join(st.wd, "distribution-data")
		storage = fmt.Sprintf("  filesystem:\n    rootdirectory: %q\n", s.root)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
%s  delete:
    enabled: true
http:
  addr: %q
`, storage, addr)
	if st.cert != "" {
		config += fmt.Sprintf("  tls:\n    certificate: %q\n    key: %q\n", st.cert, st.key)
	}
	cfgFile := filepath.Join(st.wd, "distribution.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		return nil, err
	}
	env := append(cleanEnv(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	return s, s.start(ctx, st.wd, bin, env, "serve", cfgFile)
}

// start runs the server with its output in <wd>/<name>.log. The process
// gets SIGTERM when stop is called or ctx ends, and SIGKILL 10 s later.
func (s *server) start(ctx context.Context, wd, bin string, env []string, args ...string) error {
	s.wd, s.bin, s.env, s.args = wd, bin, env, args
	if s.root != "" {
		if err := os.MkdirAll(s.root, 0o755); err != nil {
			return err
		}
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if s.cmd != nil {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND // a restart
	}
	logf, err := os.OpenFile(filepath.Join(wd, s.name+".log"), flags, 0o644)
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

// restart stops the server and starts it again, as it was started, on the
// same address and storage, and waits until it answers.
func (s *server) restart(ctx context.Context, caFile string) error {
	s.stop()
	if err := s.start(ctx, s.wd, s.bin, s.env, s.args...); err != nil {
		return err
	}
	return s.waitReady(ctx, caFile)
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
