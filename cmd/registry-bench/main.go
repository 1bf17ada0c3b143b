// Command registry-bench measures a container registry (Berth, CNCF
// Distribution, any OCI Distribution API server) and this machine's limits,
// and prints a table and one JSON line per measurement.
//
//	registry-bench --url https://127.0.0.1:5000 --cacert ca.crt [flags]
//	registry-bench compare --berth ./registry --distribution ./distribution-registry --workdir /tmp/bench
//	registry-bench mirror --berth ./registry --workdir /tmp/mirror [--rounds 5] [--layers 4] [--layer-size 32MiB]
//	registry-bench gencert --dir DIR
//	registry-bench gcdata --dir DIR [--repos 10000] [--blobs 100000] [--unreferenced 0.2] [--seed N]
//	registry-bench listdata --dir DIR [--repos 10000] [--tags 10000]
//	registry-bench listings --url http://127.0.0.1:5000 [--drop-caches]
//	registry-bench s3load --dir DIR --s3 http://127.0.0.1:9000 --bucket B [--blobs-of bench/tags]
//
// The tests: push-mono, push-chunked, push-parallel, push-memory, pull, pull-h2,
// manifest-put, manifest-get (the registry), token-basic, token-refresh
// (the auth server), limit-sha256, limit-aesgcm, limit-recv, limit-disk (the machine).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "registry-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "gencert":
			fs := flag.NewFlagSet("gencert", flag.ContinueOnError)
			fs.SetOutput(stderr)
			dir := fs.String("dir", ".", "directory for server.crt and server.key")
			if err := fs.Parse(args[1:]); err != nil {
				return err
			}
			cert, key, err := genCert(*dir)
			if err == nil {
				fmt.Fprintf(stdout, "wrote %s and %s (self-signed for 127.0.0.1, ::1, localhost; use the .crt as --cacert)\n", cert, key)
			}
			return err
		case "compare":
			return compareCmd(ctx, args[1:], stdout, stderr)
		case "mirror":
			return mirrorCmd(ctx, args[1:], stdout, stderr)
		case "gcdata":
			return gcDataCmd(ctx, args[1:], stdout, stderr)
		case "listdata":
			return listDataCmd(ctx, args[1:], stdout, stderr)
		case "listings":
			return listingsCmd(ctx, args[1:], stdout, stderr)
		case "s3load":
			return s3LoadCmd(ctx, args[1:], stdout, stderr)
		}
	}
	return benchCmd(ctx, args, stdout, stderr)
}

// defaultOptions are the flag defaults.
func defaultOptions() Options {
	return Options{
		Repo:     "bench",
		Size:     1 << 30,
		Chunk:    16 << 20,
		Parallel: 8,
		MemSize:  100 << 20,
		Duration: 5 * time.Second,
		User:     os.Getenv("REGISTRY_BENCH_USER"),
		Password: os.Getenv("REGISTRY_BENCH_PASSWORD"),
		DiskDir:  os.TempDir(),
	}
}

// commonFlags registers the flags both the single run and the comparison
// take.
func commonFlags(fs *flag.FlagSet, o *Options) {
	fs.StringVar(&o.CACert, "cacert", o.CACert, "PEM file of a CA to trust (added to the system roots)")
	fs.BoolVar(&o.HTTP2, "http2", o.HTTP2, "speak HTTP/2 (default HTTP/1.1; the pull-h2 test always uses HTTP/2)")
	fs.StringVar(&o.User, "user", o.User, "user for Basic auth or token requests (env REGISTRY_BENCH_USER)")
	fs.StringVar(&o.Password, "password", o.Password, "password (env REGISTRY_BENCH_PASSWORD)")
	fs.StringVar(&o.Repo, "repo", o.Repo, "repository prefix; tests use <repo>/<test>")
	fs.Var((*byteSize)(&o.Size), "size", "bytes of each blob test (1GiB, 256MiB, 8MiB …); push-parallel pushes size/parallel per client")
	fs.Var((*byteSize)(&o.Chunk), "chunk", "PATCH size of push-chunked")
	fs.IntVar(&o.Parallel, "parallel", o.Parallel, "concurrent clients of push-parallel, push-memory and the small-request tests")
	fs.Var((*byteSize)(&o.MemSize), "mem-size", "bytes of each upload of push-memory (one, then --parallel at once)")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "length of each small-request test")
	fs.IntVar(&o.Count, "count", o.Count, "requests per small-request test (overrides --duration)")
	fs.StringVar(&o.AuthURL, "auth-url", o.AuthURL, "token endpoint for token-basic/token-refresh (default: the registry's Bearer realm)")
	fs.StringVar(&o.Service, "service", o.Service, "service for token requests (default: the registry's Bearer challenge)")
	fs.StringVar(&o.Only, "only", o.Only, "comma-separated tests to run (default all)")
	fs.StringVar(&o.DiskDir, "disk-dir", o.DiskDir, "directory for limit-disk (put it on the registry's disk)")
}

func (o Options) validate() error {
	if o.Size < blockSize/1024 || o.Chunk <= 0 || o.Parallel <= 0 || o.MemSize <= 0 {
		return errors.New("--size, --chunk, --mem-size and --parallel must be positive (size at least 1KiB)")
	}
	if o.Duration <= 0 && o.Count <= 0 {
		return errors.New("set --duration or --count")
	}
	return checkOnly(o.Only)
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opt := defaultOptions()
	fs := flag.NewFlagSet("registry-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.URL, "url", "", "registry base URL, https://host:port (required unless only limit tests run)")
	fs.IntVar(&opt.PID, "pid", 0, "process ID of the server under test (registry, or auth server for the token tests), to report its peak RSS (VmHWM) per test")
	commonFlags(fs, &opt)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := opt.validate(); err != nil {
		return err
	}
	b := newBencher(opt)
	results := b.limits(stdout)
	regTests, authT := selected(opt.Only, registryTests), selected(opt.Only, authTests)
	if len(regTests)+len(authT) > 0 {
		if opt.URL == "" {
			return errors.New("--url is required")
		}
		t, err := newTarget(opt, opt.URL, opt.URL)
		if err != nil {
			return err
		}
		t.pid = opt.PID
		defer t.close()
		for _, test := range regTests {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r := b.run(ctx, t, test)
			writeJSON(stdout, r)
			results = append(results, r)
		}
		if len(authT) > 0 {
			authURL, service := opt.AuthURL, opt.Service
			if authURL == "" || service == "" {
				realm, svc := discoverAuth(ctx, t.c)
				authURL, service = cmp.Or(authURL, realm), cmp.Or(service, svc)
			}
			for _, test := range authT {
				reset := opt.PID > 0 && resetPeak(opt.PID)
				r := b.authTest(ctx, t.c, authURL, service, test)
				if opt.PID > 0 {
					r.PeakRSSKiB, r.PeakReset = readPeak(opt.PID), reset
				}
				writeJSON(stdout, r)
				results = append(results, r)
			}
		}
	}
	fmt.Fprintln(stdout)
	writeTable(stdout, results)
	return nil
}

func newTarget(opt Options, name, url string) (*target, error) {
	c, err := newClient(url, opt.CACert, opt.HTTP2, opt.User, opt.Password)
	if err != nil {
		return nil, err
	}
	h2, err := newClient(url, opt.CACert, true, opt.User, opt.Password)
	if err != nil {
		return nil, err
	}
	return &target{name: name, c: c, h2: h2}, nil
}

// limits runs the selected machine-limit tests, and adds the pull bound
// when the CPU limits ran.
func (b *bencher) limits(stdout io.Writer) []Result {
	var rs []Result
	var sha, gcm, recv float64
	tests := selected(b.opt.Only, limitTests)
	if b.s3 != nil {
		tests = append(tests, selected(b.opt.Only, s3LimitTests)...)
	}
	for _, test := range tests {
		r := b.limit(test)
		writeJSON(stdout, r)
		rs = append(rs, r)
		switch test {
		case "limit-sha256":
			sha = r.Value
		case "limit-aesgcm":
			gcm = r.Value
		case "limit-recv":
			recv = r.Value
		}
	}
	if v := pullBound(sha, gcm, recv); v > 0 {
		r := Result{Target: "machine", Test: "limit-pull", Unit: "MB/s", Value: v}
		writeJSON(stdout, r)
		rs = append(rs, r)
	}
	return rs
}

// byteSize is a flag value like 1GiB, 16MiB, 512KiB, 1G or 4096.
type byteSize int64

func (s *byteSize) String() string {
	v := int64(*s)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.n && v%u.n == 0 {
			return strconv.FormatInt(v/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10)
}

func (s *byteSize) Set(v string) error {
	n, err := parseSize(v)
	if err == nil {
		*s = byteSize(n)
	}
	return err
}

func parseSize(v string) (int64, error) {
	num := strings.TrimRight(v, "KkMmGgIiBb")
	unit := strings.ToLower(v[len(num):])
	mult := map[string]int64{"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1e3, "m": 1 << 20, "mib": 1 << 20, "mb": 1e6, "g": 1 << 30, "gib": 1 << 30, "gb": 1e9}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || mult == 0 || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", v)
	}
	return n * mult, nil
}
