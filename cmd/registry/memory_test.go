package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The requirement: a 1 GiB blob upload keeps the server's resident memory
// under 64 MiB.
//
// How it is measured: the registry binary is built and run as a child
// process, so that nothing of the test (its own buffers, the race detector,
// the testing framework) is counted. After each upload and read-back the
// test reads VmHWM, the peak resident set size the kernel keeps for the
// process, from /proc/<pid>/status. Before each phase it writes 5 to
// /proc/<pid>/clear_refs, which resets the peak to the current RSS, so each
// figure belongs to one phase (if the reset is refused the figures are
// cumulative, which only makes the check stricter).
//
// The child is built without -race even when the tests run with -race, so
// the figure stays meaningful under -race; the race detector then only slows
// down the test's side (generating and hashing 4 GiB).

const (
	bigBlobSize   = 1 << 30
	bigChunkSize  = 16 << 20
	rssLimit      = 64 << 20
	patternBlock  = 1 << 20
	bigBlobRepo   = "memtest/big"
	childStopWait = 40 * time.Second
)

// patternReader yields size bytes without holding them: one 1 MiB block of
// ChaCha8 output, repeated, each repetition's first 8 bytes replaced by its
// index so that no two MiB are alike. It costs a copy per byte, so the test
// can go through 1 GiB several times.
type patternReader struct {
	block     []byte
	off, size int64
}

func newPatternReader(seed byte, size int64) *patternReader {
	block := make([]byte, patternBlock)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(block)
	return &patternReader{block: block, size: size}
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n := 0
	for n < len(p) {
		in := int(r.off % patternBlock)
		m := copy(p[n:], r.block[in:])
		if in < 8 {
			var stamp [8]byte
			binary.LittleEndian.PutUint64(stamp[:], uint64(r.off/patternBlock))
			copy(p[n:n+m], stamp[in:])
		}
		n += m
		r.off += int64(m)
	}
	return n, nil
}

func TestPatternReader(t *testing.T) {
	// Deterministic, exactly size bytes, whatever the read sizes, and the
	// stamps make blocks differ.
	const size = 3*patternBlock + 5
	whole, err := io.ReadAll(newPatternReader(1, size))
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != size {
		t.Fatalf("read %d bytes, want %d", len(whole), size)
	}
	var small bytes.Buffer
	r := newPatternReader(1, size)
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		small.Write(buf[:n])
		if err == io.EOF {
			break
		}
	}
	if !bytes.Equal(whole, small.Bytes()) {
		t.Error("7-byte reads yield other bytes than one big read")
	}
	if bytes.Equal(whole[:patternBlock], whole[patternBlock:2*patternBlock]) {
		t.Error("two blocks are equal")
	}
	other, _ := io.ReadAll(newPatternReader(2, size))
	if bytes.Equal(whole, other) {
		t.Error("two seeds give the same bytes")
	}
}

// registryProcess is the registry binary running as a child process.
type registryProcess struct {
	cmd    *exec.Cmd
	base   string // http://host:port
	client *http.Client
	tr     *http.Transport
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// buildRegistry builds this package's binary (never with -race, whatever
// the test binary was built with) into a temporary directory.
func buildRegistry(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts its GOROOT/bin first in PATH
	if err != nil {
		t.Skipf("no go command to build the registry with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "registry")
	start := time.Now()
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the registry in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startRegistryProcess runs bin on a free loopback port over a temporary
// data directory, waits until GET /v2/ answers, and at the end of the test
// stops it with SIGINT and checks that it exits cleanly.
func startRegistryProcess(t *testing.T, bin string) *registryProcess {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"REGISTRY_HTTP_ADDR="+addr,
		"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="+filepath.Join(dir, "data"),
		"REGISTRY_LOG_ACCESSLOG_DISABLED=true",
		// Plain HTTP where TLS is on by default; a variable that names no
		// key is ignored.
		"REGISTRY_HTTP_TLS_DISABLED=true",
	)
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })

	cmd := exec.Command(bin, "serve")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableCompression: true}
	p := &registryProcess{
		cmd:    cmd,
		base:   "http://" + addr,
		client: &http.Client{Transport: tr},
		tr:     tr,
		exited: make(chan struct{}),
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
			if p.err != nil {
				t.Errorf("registry exited with %v after SIGINT, want status 0", p.err)
			}
		case <-time.After(childStopWait):
			_ = cmd.Process.Kill()
			<-p.exited
			t.Errorf("registry still running %v after SIGINT; killed", childStopWait)
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("registry log:\n%s", b)
			}
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.client.Get(p.base + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-p.exited:
			t.Fatalf("registry exited before answering: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v2/ did not answer 200 within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStatus returns a "<key>: <n> kB" field of /proc/<pid>/status in bytes.
func (p *registryProcess) procStatus(t *testing.T, key string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key+":")
		if !ok {
			continue
		}
		kb, ok := strings.CutSuffix(strings.TrimSpace(rest), " kB")
		n, err := strconv.ParseInt(kb, 10, 64)
		if !ok || err != nil {
			t.Fatalf("cannot parse %s line %q", key, sc.Text())
		}
		return n << 10
	}
	t.Fatalf("no %s in /proc/%d/status (err %v)", key, p.cmd.Process.Pid, sc.Err())
	return 0
}

// resetPeak makes VmHWM start again from the current RSS.
func (p *registryProcess) resetPeak(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0); err != nil {
		t.Logf("cannot reset the peak RSS (%v): figures are cumulative", err)
	}
}

// checkPeak asserts that the peak RSS of the phase is under the limit.
func (p *registryProcess) checkPeak(t *testing.T, phase string, took time.Duration) {
	t.Helper()
	hwm, rss := p.procStatus(t, "VmHWM"), p.procStatus(t, "VmRSS")
	t.Logf("%s: %v (%.0f MiB/s); server VmHWM %.1f MiB, VmRSS now %.1f MiB",
		phase, took.Round(time.Millisecond), float64(bigBlobSize)/(1<<20)/took.Seconds(), mib(hwm), mib(rss))
	if hwm >= rssLimit {
		t.Errorf("%s: server peak RSS (VmHWM) %.1f MiB, want < %d MiB", phase, mib(hwm), rssLimit>>20)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// send makes one request with a body of n bytes (body may be nil with n 0)
// and returns the response, its body drained.
func (p *registryProcess) send(t *testing.T, method, u string, hdr http.Header, body io.Reader, n int64) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// location resolves a Location header against the registry's address.
func (p *registryProcess) location(t *testing.T, resp *http.Response) *url.URL {
	t.Helper()
	base, _ := url.Parse(p.base)
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("bad Location %q: %v", resp.Header.Get("Location"), err)
	}
	return loc
}

// checkDownload reads blob dg back and checks its size and sha256.
func (p *registryProcess) checkDownload(t *testing.T, dg string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.base+"/v2/"+bigBlobRepo+"/blobs/"+dg, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != bigBlobSize {
		t.Fatalf("GET blob: status %d, Content-Length %d; want 200, %d", resp.StatusCode, resp.ContentLength, bigBlobSize)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("GET blob: reading after %d bytes: %v", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != bigBlobSize || got != dg {
		t.Fatalf("GET blob: %d bytes hashing to %s, want %d bytes, %s", n, got, bigBlobSize, dg)
	}
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func TestBigBlobUploadMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads peak RSS from /proc: Linux only")
	}
	if testing.Short() {
		t.Skip("streams 2 GiB through the registry and the disk")
	}
	reg := startRegistryProcess(t, buildRegistry(t))
	t.Logf("server at start: VmHWM %.1f MiB", mib(reg.procStatus(t, "VmHWM")))

	t.Run("monolithic", func(t *testing.T) {
		// POST ?digest= needs the digest first: one pass to hash, one to send.
		h := sha256.New()
		if _, err := io.Copy(h, newPatternReader(1, bigBlobSize)); err != nil {
			t.Fatal(err)
		}
		dg := digestOf(h)

		reg.resetPeak(t)
		start := time.Now()
		resp := reg.send(t, http.MethodPost, reg.base+"/v2/"+bigBlobRepo+"/blobs/uploads/?digest="+url.QueryEscape(dg),
			nil, newPatternReader(1, bigBlobSize), bigBlobSize)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dg {
			t.Fatalf("POST ?digest=: status %d, Docker-Content-Digest %q; want 201, %s",
				resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), dg)
		}
		reg.checkPeak(t, "monolithic upload", time.Since(start))

		reg.resetPeak(t)
		start = time.Now()
		reg.checkDownload(t, dg)
		reg.checkPeak(t, "download", time.Since(start))
	})

	t.Run("chunked", func(t *testing.T) {
		reg.resetPeak(t)
		start := time.Now()
		resp := reg.send(t, http.MethodPost, reg.base+"/v2/"+bigBlobRepo+"/blobs/uploads/", nil, nil, 0)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST uploads: status %d, want 202", resp.StatusCode)
		}
		loc := reg.location(t, resp)
		// The digest is only needed at the end: hash what is sent.
		h := sha256.New()
		src := io.TeeReader(newPatternReader(2, bigBlobSize), h)
		for off := int64(0); off < bigBlobSize; off += bigChunkSize {
			n := min(bigChunkSize, bigBlobSize-off)
			last := off + n - 1
			hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, last)}}
			resp := reg.send(t, http.MethodPatch, loc.String(), hdr, io.LimitReader(src, n), n)
			if want := fmt.Sprintf("0-%d", last); resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != want {
				t.Fatalf("PATCH %d-%d: status %d, Range %q; want 202, %s", off, last, resp.StatusCode, resp.Header.Get("Range"), want)
			}
			loc = reg.location(t, resp)
		}
		dg := digestOf(h)
		q := loc.Query()
		q.Set("digest", dg)
		loc.RawQuery = q.Encode()
		resp = reg.send(t, http.MethodPut, loc.String(), nil, nil, 0)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dg {
			t.Fatalf("PUT ?digest=: status %d, Docker-Content-Digest %q; want 201, %s",
				resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), dg)
		}
		reg.checkPeak(t, fmt.Sprintf("chunked upload (%d MiB PATCHes)", bigChunkSize>>20), time.Since(start))

		reg.resetPeak(t)
		start = time.Now()
		reg.checkDownload(t, dg)
		reg.checkPeak(t, "download", time.Since(start))
	})

	// The check above can only fail if VmHWM is what it claims: the figure
	// must at least cover the process's current RSS.
	if hwm, rss := reg.procStatus(t, "VmHWM"), reg.procStatus(t, "VmRSS"); hwm < rss || rss <= 0 {
		t.Errorf("VmHWM %d < VmRSS %d: the peak is not being read right", hwm, rss)
	}
}
