package tlsutil

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the server's end
// behind a writeBehindListener.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := writeBehindListener{ln}.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestWriteBehindKeepsOrder: small writes (sent at once), bulk writes (sent
// behind) and writes past the buffer's bound, in random order, arrive
// whole and in order, and Close sends what is held before closing.
func TestWriteBehindKeepsOrder(t *testing.T) {
	server, client := tcpPair(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var want bytes.Buffer
	sizes := []int{1, 9, 100, bulkWrite - 1, bulkWrite, bulkWrite + 22, 3 * bulkWrite, maxBehind, maxBehind + 1, 2 * maxBehind}
	got := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(client)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	for i := range 400 {
		b := make([]byte, sizes[rng.IntN(len(sizes))])
		for j := range b {
			b[j] = byte(i + j)
		}
		want.Write(b)
		if n, err := server.Write(b); n != len(b) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	// End on bulk writes, so that Close finds bytes held.
	tail := bytes.Repeat([]byte("tail"), maxBehind/4)
	for b := tail; len(b) > 0; b = b[bulkWrite:] {
		want.Write(b[:bulkWrite])
		if _, err := server.Write(b[:bulkWrite]); err != nil {
			t.Fatal(err)
		}
	}
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("received %d bytes, sent %d; equal prefix %d", len(b), want.Len(), commonPrefix(b, want.Bytes()))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestWriteBehindReportsFailure: once the peer is gone, a later Write fails
// instead of holding bytes forever, and Close returns.
func TestWriteBehindReportsFailure(t *testing.T) {
	server, client := tcpPair(t)
	client.(*net.TCPConn).SetLinger(0) // reset, so writes fail
	client.Close()
	bulk := make([]byte, 4*bulkWrite)
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = server.Write(bulk)
	}
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
	if _, err2 := server.Write([]byte("x")); err2 == nil {
		t.Error("a write after a failure succeeded")
	}
	done := make(chan struct{})
	go func() { server.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeDrain + 5*time.Second):
		t.Fatal("Close hung")
	}
}

// TestWriteBehindCloseGivesUp: Close on a connection whose peer does not
// read waits at most closeDrain.
func TestWriteBehindCloseGivesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the drain timeout")
	}
	server, _ := tcpPair(t)
	bulk := make([]byte, bulkWrite)
	// Fill the socket buffers and the write-behind buffer: a write blocks
	// only once both are full.
	blocked := make(chan struct{})
	go func() {
		for {
			if _, err := server.Write(bulk); err != nil {
				close(blocked)
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	server.Close()
	if d := time.Since(start); d > closeDrain+2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	<-blocked
}

// TestListenerServesBothProtocols: a server on Listener answers HTTP/2
// and HTTP/1.1 clients, and a large body arrives intact over both.
func TestListenerServesBothProtocols(t *testing.T) {
	t.Chdir(t.TempDir())
	srv, err := NewServer(Config{CA: &CAConfig{Hosts: []string{"127.0.0.1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 8<<20+12345)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(body)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for b := body; len(b) > 0; {
			n := min(len(b), 256<<10)
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, TLSConfig: srv.TLSConfig(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(srv.Listener(ln))
	defer hs.Close()

	trust, err := ClientConfig("certs/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"HTTP/2.0", "HTTP/1.1"} {
		var p http.Protocols
		if proto == "HTTP/2.0" {
			p.SetHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: trust.Clone(), Protocols: &p}}
		for range 3 { // and again on the kept-alive connection
			resp, err := c.Get("https://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || resp.Proto != proto || n != int64(len(body)) || !bytes.Equal(h.Sum(nil), sum[:]) {
				t.Fatalf("%s: got %s, %d bytes, %v; digest match %v", proto, resp.Proto, n, err, bytes.Equal(h.Sum(nil), sum[:]))
			}
		}
		c.CloseIdleConnections()
	}
}
