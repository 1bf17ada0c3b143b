package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// serveBerth serves Berth's API over TLS (HTTP/1.1 and HTTP/2) from a
// temporary directory and returns its URL, the CA file and the data root.
func serveBerth(t *testing.T) (url, caFile, root string) {
	t.Helper()
	root = t.TempDir()
	drv, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	srv := httptest.NewUnstartedServer(registry.New(registry.Config{Store: storage.New(drv), DeleteEnabled: true}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile, root
}

// TestAgainstBerth runs every registry test, briefly and with small blobs,
// against Berth's real API.
func TestAgainstBerth(t *testing.T) {
	url, caFile, root := serveBerth(t)
	opt := defaultOptions()
	opt.URL, opt.CACert = url, caFile
	opt.Size, opt.Chunk, opt.Parallel, opt.MemSize = 8<<20, 3<<20, 4, 2<<20
	opt.Duration = 150 * time.Millisecond
	b := newBencher(opt)
	tg, err := newTarget(opt, "berth", url)
	if err != nil {
		t.Fatal(err)
	}
	tg.root = root
	tg.pid = os.Getpid() // this process is the server
	ctx := context.Background()
	for _, test := range registryTests {
		if test == "push-memory" && runtime.GOOS != "linux" {
			continue // it reads and resets the peak in /proc
		}
		r := b.run(ctx, tg, test)
		if r.Error != "" {
			t.Fatalf("%s: %s", test, r.Error)
		}
		if test == "push-memory" {
			// One upload's peak, then four's: the difference may be
			// anything in a process that is also the client.
			if r.Unit != "MiB/upload" || r.Ops != 5 || r.PeakRSSOneKiB <= 0 || r.PeakRSSKiB <= 0 {
				t.Errorf("%s: implausible result %+v", test, r)
			}
			continue
		}
		// Peak memory is read from /proc: Linux only.
		if r.Value <= 0 || r.Seconds <= 0 || (r.PeakRSSKiB <= 0) == (runtime.GOOS == "linux") {
			t.Errorf("%s: implausible result %+v", test, r)
		}
		wantProto := "HTTP/1.1"
		if test == "pull-h2" {
			wantProto = "HTTP/2.0"
		}
		if r.Proto != wantProto {
			t.Errorf("%s: protocol %s, want %s", test, r.Proto, wantProto)
		}
		if r.Unit == "ops/s" && (r.Ops == 0 || r.P50ms <= 0 || r.P99ms < r.P50ms) {
			t.Errorf("%s: latencies %+v", test, r)
		}
	}
	tg.close()
	// Pushed blobs were removed from the data directory; only the two
	// small blobs of the manifest tests and the manifests are left.
	var blobs int
	_ = filepath.WalkDir(filepath.Join(root, "docker/registry/v2/blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "data" {
			if fi, _ := d.Info(); fi != nil && fi.Size() >= 1<<20 {
				blobs++
			}
		}
		return nil
	})
	if blobs != 0 {
		t.Errorf("%d large blobs left in %s", blobs, root)
	}
}

// TestCountStopsOps checks that --count bounds the small-request tests.
func TestCountStopsOps(t *testing.T) {
	url, caFile, _ := serveBerth(t)
	opt := defaultOptions()
	opt.URL, opt.CACert, opt.Count, opt.Parallel = url, caFile, 37, 8
	b := newBencher(opt)
	tg, err := newTarget(opt, "berth", url)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	r := b.run(context.Background(), tg, "manifest-get")
	if r.Error != "" || r.Ops != 37 {
		t.Fatalf("%+v", r)
	}
}

func TestGenCert(t *testing.T) {
	certFile, keyFile, err := genCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLimitDisk(t *testing.T) {
	dir := t.TempDir()
	r, err := limitDisk(dir, 4<<20, newBlob([32]byte{3}, blockSize))
	if err != nil || r.Bytes != 4<<20 || r.Value <= 0 {
		t.Fatalf("%+v, %v", r, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("limit-disk left %d files", len(ents))
	}
}
