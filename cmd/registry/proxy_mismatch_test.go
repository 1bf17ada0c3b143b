package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPullThroughWrongBytesOnTheWire: an upstream serves, with a correct
// Content-Length, bytes that are not its digest's. The mirror streams the
// blob and learns of the mismatch only at the end, yet no client, over
// HTTP/1.1 or HTTP/2, gets a complete response: the body ends short of its
// Content-Length (or the stream is reset; served without a length, the
// chunked body never ends properly). Nothing is stored.
func TestPullThroughWrongBytesOnTheWire(t *testing.T) {
	type blob struct {
		digest  string
		body    []byte
		chunked bool // served without Content-Length
	}
	var blobs []blob
	for i, size := range []int{1, 5000, 3 << 20, 3<<20 + 1} {
		right, wrong := make([]byte, size), make([]byte, size)
		rng := rand.NewChaCha8([32]byte{byte(size)})
		rng.Read(right)
		copy(wrong, right)
		wrong[size-1] ^= 0xff // only the last byte differs
		sum := sha256.Sum256(right)
		blobs = append(blobs, blob{"sha256:" + hex.EncodeToString(sum[:]), wrong, i == 3})
	}
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, b := range blobs {
			if r.URL.Path == "/v2/app/blobs/"+b.digest {
				w.Header().Set("Docker-Content-Digest", b.digest)
				if b.chunked {
					w.Write(b.body[:100])
					w.(http.Flusher).Flush()
					w.Write(b.body[100:])
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(b.body)))
				w.Write(b.body)
				return
			}
		}
		if r.URL.Path == "/v2/" {
			return
		}
		http.NotFound(w, r)
	}))
	defer up.Close()
	root := t.TempDir()
	mirror := startServerWith(t, root, func(c *Config) {
		c.Proxy.Upstreams = []UpstreamConfig{{Prefix: "up", RemoteURL: up.URL}}
		c.proxyTransport = up.Client().Transport
	}, nil)

	h1 := mirror.tr.Clone()
	h1.ForceAttemptHTTP2 = false
	h1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	for _, b := range blobs {
		for name, tr := range map[string]*http.Transport{"HTTP/1.1": h1, "HTTP/2": mirror.tr} {
			resp, err := tr.RoundTrip(mustRequest(t, "GET", mirror.url("/v2/up/app/blobs/"+b.digest)))
			if err != nil {
				t.Logf("%d bytes, %s: no response: %v", len(b.body), name, err)
				continue
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && rerr == nil {
				t.Errorf("%d bytes of the wrong content, %s: a complete 200 of %d bytes (Content-Length %s, %s)",
					len(b.body), name, len(body), resp.Header.Get("Content-Length"), resp.Proto)
				continue
			}
			if resp.StatusCode == 200 && int64(len(body)) >= resp.ContentLength && resp.ContentLength >= 0 {
				t.Errorf("%d bytes, %s: all %d bytes arrived before the error %v", len(b.body), name, len(body), rerr)
			}
			if !b.chunked && bytes.Equal(body, b.body) {
				t.Errorf("%d bytes, %s: the client has every wrong byte", len(b.body), name)
			}
			t.Logf("%d bytes, %s: %d (%s), %d bytes, then %v", len(b.body), name, resp.StatusCode, resp.Proto, len(body), rerr)
		}
		hexPart := strings.TrimPrefix(b.digest, "sha256:")
		data := filepath.Join(root, "docker/registry/v2/blobs/sha256", hexPart[:2], hexPart, "data")
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the wrong content of %s was stored: %v", b.digest, err)
		}
	}
}
