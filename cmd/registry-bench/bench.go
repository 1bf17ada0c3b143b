package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options are the settings of a run; the flags in main.go fill them.
type Options struct {
	URL      string
	CACert   string
	HTTP2    bool
	User     string
	Password string
	Repo     string // repository prefix
	Size     int64  // bytes per blob test
	Chunk    int64  // PATCH size of the chunked push
	Parallel int
	MemSize  int64         // bytes of each upload of push-memory
	Duration time.Duration // of each small-request test, unless Count is set
	Count    int           // total requests of each small-request test
	PID      int           // the server's, for VmHWM
	AuthURL  string
	Service  string
	Only     string // comma-separated test names; empty runs all
	DiskDir  string
}

// The tests, in the order they run.
var (
	registryTests = []string{"push-mono", "push-chunked", "push-parallel", "push-memory", "pull", "pull-h2", "manifest-put", "manifest-get"}
	authTests     = []string{"token-basic", "token-refresh"}
	limitTests    = []string{"limit-sha256", "limit-aesgcm", "limit-recv", "limit-disk"}
	// s3LimitTests run where a comparison has an S3 store.
	s3LimitTests = []string{"limit-s3put", "limit-s3get"}
)

// selected returns the tests of group that only (comma-separated, empty
// for all) selects.
func selected(only string, group []string) []string {
	if only == "" {
		return group
	}
	var out []string
	for _, t := range group {
		for _, o := range strings.Split(only, ",") {
			if strings.TrimSpace(o) == t {
				out = append(out, t)
			}
		}
	}
	return out
}

func checkOnly(only string) error {
	if only == "" {
		return nil
	}
	all := slices.Concat(registryTests, authTests, limitTests, s3LimitTests)
	for _, o := range strings.Split(only, ",") {
		found := false
		for _, t := range all {
			found = found || strings.TrimSpace(o) == t
		}
		if !found {
			return fmt.Errorf("--only: unknown test %q (tests: %s)", o, strings.Join(all, ", "))
		}
	}
	return nil
}

// bencher runs tests; its nonce makes every blob of the run unique.
type bencher struct {
	opt   Options
	nonce [24]byte
	seq   atomic.Uint64
	s3    *s3Store // the store of a comparison on S3, for its limits
	plain bool     // plain HTTP: a pull's bound has no decryption
}

func newBencher(opt Options) *bencher {
	b := &bencher{opt: opt}
	_, _ = rand.Read(b.nonce[:])
	return b
}

// newBlob returns a blob no registry has seen.
func (b *bencher) newBlob(size int64) *Blob {
	var seed [32]byte
	copy(seed[:], b.nonce[:])
	binary.LittleEndian.PutUint64(seed[24:], b.seq.Add(1))
	return newBlob(seed, size)
}

// target is one registry under test.
type target struct {
	name string
	c    *Client // HTTP/1.1, or HTTP/2 with --http2
	h2   *Client // HTTP/2 (pull-h2)
	pid  int
	// root is the registry's storage root when this program started it:
	// blob data is then removed from disk after each test (a registry's
	// DELETE only unlinks; the data waits for garbage collection).
	root string

	// s3 and bucket are the store and bucket of a registry on S3 that this
	// program started: blob data is removed from there instead.
	s3     *s3Store
	bucket string
	// counter, when set, counts the registry's S3 requests; the count
	// restarts where a test's timed part starts.
	counter *s3Counter
	// restart, when set, replaces the server with a fresh process on the
	// same address and storage, and returns its pid: push-memory measures
	// each of its peaks from a fresh start.
	restart func(ctx context.Context) (int, error)

	pullRepo string
	pullBlob *Blob
	manifest *manifestBase
}

// timed marks the start of the timed part of a test.
func (t *target) timed() {
	if t.counter != nil {
		_, _, _ = t.counter.take()
	}
}

func (t *target) close() {
	if t.pullBlob != nil {
		t.removeBlobs(t.pullRepo, t.pullBlob)
	}
	t.c.close()
	t.h2.close()
}

func scopeFor(repo string) string { return "repository:" + repo + ":pull,push" }

// run runs one registry test on t and measures the server's peak RSS.
func (b *bencher) run(ctx context.Context, t *target, test string) Result {
	reset := false
	if t.pid > 0 {
		reset = resetPeak(t.pid)
	}
	repo := b.opt.Repo + "/" + test
	var r Result
	var err error
	switch test {
	case "push-mono":
		r, err = b.pushTest(ctx, t, repo, 1, b.opt.Size, false)
	case "push-chunked":
		r, err = b.pushTest(ctx, t, repo, 1, b.opt.Size, true)
	case "push-parallel":
		r, err = b.pushTest(ctx, t, repo, b.opt.Parallel, b.opt.Size/int64(b.opt.Parallel), false)
	case "push-memory":
		r, err = b.pushMemory(ctx, t, repo)
	case "pull":
		r, err = b.pull(ctx, t, t.c)
	case "pull-h2":
		r, err = b.pull(ctx, t, t.h2)
	case "manifest-put":
		r, err = b.manifestOps(ctx, t, true)
	case "manifest-get":
		r, err = b.manifestOps(ctx, t, false)
	default:
		err = fmt.Errorf("unknown test %q", test)
	}
	r.Target, r.Test = t.name, test
	if err != nil {
		r.Error = err.Error()
	}
	if t.pid > 0 {
		r.PeakRSSKiB, r.PeakReset = readPeak(t.pid), reset
	}
	return r
}

// pushTest pushes n blobs of size bytes concurrently (one each),
// monolithically or in Chunk-sized PATCHes.
func (b *bencher) pushTest(ctx context.Context, t *target, repo string, n int, size int64, chunked bool) (Result, error) {
	n = max(n, 1)
	blobs := make([]*Blob, n)
	for i := range blobs {
		blobs[i] = b.newBlob(size)
		blobs[i].Digest() // not timed
	}
	defer t.removeBlobs(repo, blobs...)
	if err := t.ping(ctx, t.c, repo); err != nil {
		return Result{}, err
	}
	t.timed()
	var total int64
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, bl := range blobs {
		total += bl.Size
		wg.Go(func() {
			if chunked {
				errs[i] = t.pushChunked(ctx, repo, bl, b.opt.Chunk)
			} else {
				errs[i] = t.pushMonolithic(ctx, t.c, repo, bl)
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	return Result{Unit: "MB/s", Value: throughput(total, d), Bytes: total, Ops: n, Seconds: d.Seconds(), Proto: t.c.proto}, nil
}

// pushMemory is what one more concurrent upload costs the server: its
// peak RSS while it receives one monolithic push of MemSize bytes, then
// while it receives Parallel of them at once; the difference divided by
// Parallel-1, in MiB per upload. Where this program started the server,
// each push goes to a fresh process: a Go server keeps the heap of its
// busiest moment for minutes, and a peak measured on top of it says
// nothing about the uploads.
func (b *bencher) pushMemory(ctx context.Context, t *target, repo string) (Result, error) {
	n := b.opt.Parallel
	if t.pid <= 0 || n < 2 {
		return Result{}, errors.New("push-memory needs the server's pid and --parallel of at least 2")
	}
	var peaks [2]int64
	var last Result
	ops := 0
	for i, k := range []int{1, n} {
		if t.restart != nil {
			pid, err := t.restart(ctx)
			if err != nil {
				return Result{}, err
			}
			t.pid = pid
		}
		if !resetPeak(t.pid) {
			return Result{}, errors.New("push-memory cannot reset the server's peak RSS")
		}
		r, err := b.pushTest(ctx, t, repo, k, b.opt.MemSize, false)
		if err != nil {
			return Result{}, err
		}
		peaks[i], last = readPeak(t.pid), r
		ops += r.Ops
	}
	per := float64(peaks[1]-peaks[0]) / float64(n-1) / 1024
	return Result{Unit: "MiB/upload", Value: per, Ops: ops, Seconds: last.Seconds, Proto: last.Proto, PeakRSSOneKiB: peaks[0]}, nil
}

// ping gets credentials for repo (a token for its scope, or Basic) with
// GET /v2/, before timed requests whose bodies cannot be sent twice
// cheaply.
func (t *target) ping(ctx context.Context, c *Client, repo string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := expect(http.StatusOK)(c.Do(req, scopeFor(repo)))
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// startUpload opens an upload session and returns its location.
func (t *target) startUpload(ctx context.Context, c *Client, repo string) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := expect(http.StatusAccepted)(c.Do(req, scopeFor(repo)))
	if err != nil {
		return nil, err
	}
	drain(resp)
	return c.resolve(resp.Header.Get("Location"))
}

func withDigest(loc *url.URL, dg string) string {
	u := *loc
	q := u.Query()
	q.Set("digest", dg)
	u.RawQuery = q.Encode()
	return u.String()
}

// pushMonolithic is POST, then one PUT ?digest= with the whole blob.
func (t *target) pushMonolithic(ctx context.Context, c *Client, repo string, bl *Blob) error {
	loc, err := t.startUpload(ctx, c, repo)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, bl.Digest()), bl.Reader())
	if err != nil {
		return err
	}
	req.ContentLength = bl.Size
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bl.Reader()), nil }
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := expect(http.StatusCreated)(c.Do(req, scopeFor(repo)))
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// pushChunked is POST, PATCHes of chunk bytes with Content-Range, then
// PUT ?digest= without a body.
func (t *target) pushChunked(ctx context.Context, repo string, bl *Blob, chunk int64) error {
	c := t.c
	loc, err := t.startUpload(ctx, c, repo)
	if err != nil {
		return err
	}
	for off := int64(0); off < bl.Size; off += chunk {
		n := min(chunk, bl.Size-off)
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), bl.Section(off, n))
		if err != nil {
			return err
		}
		req.ContentLength = n
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bl.Section(off, n)), nil }
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		resp, err := expect(http.StatusAccepted)(c.Do(req, scopeFor(repo)))
		if err != nil {
			return err
		}
		drain(resp)
		if loc, err = c.resolve(resp.Header.Get("Location")); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, bl.Digest()), nil)
	if err != nil {
		return err
	}
	resp, err := expect(http.StatusCreated)(c.Do(req, scopeFor(repo)))
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// pull downloads a Size blob (pushed once per target, not timed) and
// verifies its sha256 while reading.
func (b *bencher) pull(ctx context.Context, t *target, c *Client) (Result, error) {
	if t.pullBlob == nil {
		bl := b.newBlob(b.opt.Size)
		repo := b.opt.Repo + "/pull"
		if err := t.ping(ctx, t.c, repo); err != nil {
			return Result{}, err
		}
		if err := t.pushMonolithic(ctx, t.c, repo, bl); err != nil {
			return Result{}, fmt.Errorf("pushing the blob to pull: %w", err)
		}
		t.pullRepo, t.pullBlob = repo, bl
	}
	bl, repo := t.pullBlob, t.pullRepo
	t.timed()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v2/"+repo+"/blobs/"+bl.Digest(), nil)
	if err != nil {
		return Result{}, err
	}
	resp, err := expect(http.StatusOK)(c.Do(req, scopeFor(repo)))
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
	d := time.Since(start)
	if err != nil {
		return Result{}, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != bl.Size || got != bl.Digest() {
		return Result{}, fmt.Errorf("pulled %d bytes with digest %s, want %d bytes with %s", n, got, bl.Size, bl.Digest())
	}
	return Result{Unit: "MB/s", Value: throughput(n, d), Bytes: n, Ops: 1, Seconds: d.Seconds(), Proto: resp.Proto}, nil
}

// removeBlobs deletes blobs through the API (best effort) and, when this
// program owns the registry's storage, their data on disk or in the bucket.
func (t *target) removeBlobs(repo string, blobs ...*Blob) {
	for _, bl := range blobs {
		req, err := http.NewRequest(http.MethodDelete, t.c.base.String()+"/v2/"+repo+"/blobs/"+bl.Digest(), nil)
		if err != nil {
			continue
		}
		if resp, err := t.c.Do(req, scopeFor(repo)); err == nil {
			drain(resp)
		}
		if t.s3 != nil {
			_ = t.s3.removeBlob(context.Background(), t.bucket, bl.Digest())
		}
		if t.root != "" {
			hexd := strings.TrimPrefix(bl.Digest(), "sha256:")
			_ = os.RemoveAll(filepath.Join(t.root, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd))
		}
	}
}

// ops runs op from Parallel workers for Duration (or Count times in all)
// and returns every op's latency and the elapsed time.
func (b *bencher) ops(ctx context.Context, op func(ctx context.Context, worker, i int) error) ([]time.Duration, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		issued   atomic.Int64
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(b.opt.Duration)
	for w := range max(b.opt.Parallel, 1) {
		wg.Go(func() {
			var lat []time.Duration
			for i := 0; ctx.Err() == nil; i++ {
				if b.opt.Count > 0 {
					if issued.Add(1) > int64(b.opt.Count) {
						break
					}
				} else if time.Now().After(deadline) {
					break
				}
				t0 := time.Now()
				if err := op(ctx, w, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all, time.Since(start), firstErr
}

// authTest measures token issuance at the auth server: Basic logins
// (GET) or refresh-token grants (POST).
func (b *bencher) authTest(ctx context.Context, c *Client, authURL, service, test string) Result {
	r, err := b.authOps(ctx, c, authURL, service, test)
	r.Target, r.Test, r.Proto = authURL, test, c.proto
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func (b *bencher) authOps(ctx context.Context, c *Client, authURL, service, test string) (Result, error) {
	if authURL == "" || service == "" {
		return Result{}, errors.New("needs --auth-url and --service (or a registry whose Bearer challenge names them)")
	}
	if c.user == "" {
		return Result{}, errors.New("needs --user and --password")
	}
	scope := scopeFor(b.opt.Repo + "/token")
	login := func(ctx context.Context, offline bool) (tokenResponse, error) {
		q := url.Values{"service": {service}, "scope": {scope}, "client_id": {"registry-bench"}}
		if offline {
			q.Set("offline_token", "true")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL+"?"+q.Encode(), nil)
		if err != nil {
			return tokenResponse{}, err
		}
		req.SetBasicAuth(c.user, c.password)
		resp, err := c.hc.Do(req)
		if err != nil {
			return tokenResponse{}, err
		}
		return decodeToken(resp)
	}
	var op func(ctx context.Context, w, i int) error
	switch test {
	case "token-basic":
		op = func(ctx context.Context, _, _ int) error { _, err := login(ctx, false); return err }
	case "token-refresh":
		refresh := make([]string, max(b.opt.Parallel, 1))
		for i := range refresh {
			tr, err := login(ctx, true)
			if err != nil {
				return Result{}, err
			}
			if tr.RefreshToken == "" {
				return Result{}, errors.New("the auth server gave no refresh_token for offline_token=true")
			}
			refresh[i] = tr.RefreshToken
		}
		op = func(ctx context.Context, w, _ int) error {
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh[w]},
				"service": {service}, "client_id": {"registry-bench"}, "scope": {scope}}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, authURL, strings.NewReader(form.Encode()))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.hc.Do(req)
			if err != nil {
				return err
			}
			_, err = decodeToken(resp)
			return err
		}
	default:
		return Result{}, fmt.Errorf("unknown test %q", test)
	}
	lat, d, err := b.ops(ctx, op)
	if err != nil {
		return Result{}, err
	}
	return opsResult(lat, d), nil
}

// discoverAuth returns the realm and service of the registry's Bearer
// challenge to an anonymous GET /v2/, if it sends one.
func discoverAuth(ctx context.Context, c *Client) (realm, service string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v2/", nil)
	if err != nil {
		return "", ""
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", ""
	}
	drain(resp)
	if ch, ok := pickChallenge(resp.Header.Values("WWW-Authenticate")); ok && ch.Scheme == "bearer" {
		return ch.Params["realm"], ch.Params["service"]
	}
	return "", ""
}
