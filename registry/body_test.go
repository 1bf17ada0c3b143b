package registry

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// hangBound is how long a test request may take before the test fails
// instead of hanging: not a speed requirement.
const hangBound = 10 * time.Second

// stallConfig is a registry that cuts a body after a second without a
// byte (long enough that a loaded test machine never stalls a live body),
// whose upload requests outwait that.
func stallConfig(t *testing.T) Config {
	return Config{
		BodyIdleTimeout: time.Second,
		Store:           newTestStore(t, storage.Options{UploadWait: hangBound / 2}),
	}
}

// readListener tells, on reached, when the server has read at least n bytes
// from the first connection it accepted.
type readListener struct {
	net.Listener
	n       int64
	reached chan struct{}
	counted atomic.Bool
}

func (l *readListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || !l.counted.CompareAndSwap(false, true) {
		return c, err
	}
	return &readCounter{Conn: c, l: l}, nil
}

type readCounter struct {
	net.Conn
	l    *readListener
	read int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if before := c.read; before < c.l.n {
		if c.read += int64(n); c.read >= c.l.n {
			close(c.l.reached)
		}
	}
	return n, err
}

// startUploadHTTP opens an upload session and returns its location.
func startUploadHTTP(t *testing.T, client *http.Client, base, name string) string {
	t.Helper()
	res, err := client.Post(base+"/v2/"+name+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST upload: %s", res.Status)
	}
	return res.Header.Get("Location")
}

// resume asks where upload loc stands, sends the rest of content from
// there and completes it, then checks the blob: what a client does after
// its connection stalled.
func resume(t *testing.T, client *http.Client, base, loc string, content []byte) (offset int64) {
	t.Helper()
	res, err := client.Get(base + loc)
	if err != nil {
		t.Fatalf("upload status: %v", err)
	}
	res.Body.Close()
	var last int64
	if res.StatusCode != http.StatusNoContent || func() error {
		_, err := fmt.Sscanf(res.Header.Get("Range"), "0-%d", &last)
		return err
	}() != nil {
		t.Fatalf("upload status: %s, Range %q", res.Status, res.Header.Get("Range"))
	}
	offset = last + 1
	if last == 0 {
		offset = 0 // "0-0" is also an empty upload
	}
	req, _ := http.NewRequest("PATCH", base+loc, bytes.NewReader(content[offset:]))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", offset, len(content)-1))
	res, err = client.Do(req)
	if err != nil {
		t.Fatalf("resume from %d: %v", offset, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("resume from %d: %s (Range %q) %s", offset, res.Status, res.Header.Get("Range"), readAll(res.Body))
	}
	dg := digest.FromBytes(content)
	req, _ = http.NewRequest("PUT", base+res.Header.Get("Location")+"?digest="+dg.String(), nil)
	if res, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("complete: %s", res.Status)
	}
	res, err = client.Get(base + res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("blob after the resume: %d bytes, differs from the %d sent", len(got), len(content))
	}
	return offset
}

// TestStalledBodyResume: a PATCH whose body stops arriving half-way holds
// its upload only until the body is cut; a client that reconnects learns
// exactly what was stored, resumes from there, and completes the blob. The
// stalled connection is answered and closed.
func TestStalledBodyResume(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	const sent = 40000
	cfg := stallConfig(t)
	id, err := cfg.Store.StartUpload(t.Context(), "team/app")
	if err != nil {
		t.Fatal(err)
	}
	loc := "/v2/team/app/blobs/uploads/" + id
	head := fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nContent-Range: 0-%d\r\n\r\n",
		loc, len(content), len(content)-1)
	srv := httptest.NewUnstartedServer(New(cfg))
	// Past the server's 4 KiB read buffer: the handler is reading the body.
	ln := &readListener{Listener: srv.Listener, n: int64(len(head) + sent), reached: make(chan struct{})}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	stalled, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write(append([]byte(head), content[:sent]...)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ln.reached: // the handler is reading the body: it holds the upload
	case <-time.After(hangBound):
		t.Fatal("the server did not read the body")
	}
	// … and then nothing. A new connection finds where the upload stands
	// and resumes.
	client := &http.Client{Timeout: hangBound}
	if offset := resume(t, client, srv.URL, loc, content); offset != sent {
		t.Fatalf("resumed from %d, want the %d bytes that arrived", offset, sent)
	}
	_ = stalled.SetReadDeadline(time.Now().Add(hangBound))
	answer, err := io.ReadAll(stalled)
	if err != nil {
		t.Fatalf("stalled connection not closed: %v", err)
	}
	if !strings.HasPrefix(string(answer), "HTTP/1.1 400 ") || !strings.Contains(string(answer), "BLOB_UPLOAD_INVALID") {
		t.Fatalf("stalled request answered %q", answer)
	}
}

// TestStalledBodyHTTP2: on HTTP/2 a stalled body ends its stream only; the
// same connection carries the status request and the resume.
func TestStalledBodyHTTP2(t *testing.T) {
	content := bytes.Repeat([]byte("fedcba9876543210"), 256<<10) // 4 MiB
	const sent = 2 << 20
	srv := httptest.NewUnstartedServer(New(stallConfig(t)))
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()
	client.Timeout = hangBound
	loc := startUploadHTTP(t, client, srv.URL, "team/app")

	body, feed := io.Pipe()
	defer feed.Close()
	req, _ := http.NewRequest("PATCH", srv.URL+loc, body)
	req.ContentLength = int64(len(content))
	req.Header.Set("Content-Range", fmt.Sprintf("0-%d", len(content)-1))
	answered := make(chan *http.Response, 1)
	go func() {
		res, err := client.Do(req)
		if err == nil {
			res.Body.Close()
		}
		answered <- res
	}()
	// More than the stream's flow-control window: once it is all taken,
	// the handler has read, so it holds the upload.
	if _, err := feed.Write(content[:sent]); err != nil {
		t.Fatal(err)
	}
	if offset := resume(t, client, srv.URL, loc, content); offset == 0 {
		t.Fatal("nothing of the stalled body was kept")
	}
	if res := <-answered; res != nil && (res.ProtoMajor != 2 || res.StatusCode != http.StatusBadRequest) {
		t.Fatalf("stalled request answered %s %s", res.Proto, res.Status)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want the one HTTP/2 connection for everything", n)
	}
}

func readAll(r io.Reader) string { b, _ := io.ReadAll(r); return string(b) }
