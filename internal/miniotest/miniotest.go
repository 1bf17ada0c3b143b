// Package miniotest runs a real MinIO server on loopback for tests: the
// object store the S3 driver, the replica tests and the interop tests run
// against. Without the binary the test is skipped, except in CI (CI=true),
// where it fails.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/berth-registry/berth/internal/testutil"
)

// Install is how CI gets MinIO (a static Go binary, built once; without
// cgo, so that it also runs in an image FROM scratch, as e2e's scale-out
// test does).
const Install = "CGO_ENABLED=0 GOBIN=/tmp/berth-tools go install github.com/minio/minio@" + Version

// Version is the MinIO server CI installs.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// The credentials of every server this package starts.
const (
	AccessKey = "berth-test"
	SecretKey = "berth-test-secret"
)

// Server is a running MinIO.
type Server struct {
	Endpoint string // http://127.0.0.1:port
	Dir      string
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Shared returns one server for the whole test binary, started on first
// use and killed when the process exits (on Linux; its data directory is
// a temporary one, left behind); tests isolate themselves with their own
// buckets (NewBucket).
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := findBinary(t)
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-minio-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = start(bin, dir, testutil.FreePort(t))
	})
	if sharedErr != nil {
		t.Fatalf("starting MinIO: %v", sharedErr)
	}
	return shared
}

// Start starts a server of the test's own, stopped at its end.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := findBinary(t)
	s, err := start(bin, t.TempDir(), testutil.FreePort(t))
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func start(bin, dir string, port int) (*Server, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:0", dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	diesWithTest(cmd)
	logFile, err := os.Create(filepath.Join(os.TempDir(), fmt.Sprintf("berth-minio-%d.log", port)))
	if err == nil {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Endpoint: "http://" + addr, Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("minio exited: %v (log in %s)", cmd.ProcessState, logFile.Name())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("minio not ready after 60 s (log in %s)", logFile.Name())
		}
	}
}

// Stop kills the server.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
}

// Client returns a client of the server with its root credentials.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "berth-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("creating bucket: %v", err)
	}
	return name
}

// findBinary returns the minio binary: $BERTH_MINIO_BIN, minio on PATH, or
// /tmp/berth-tools/minio (where CI installs it).
func findBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BERTH_MINIO_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	if st, err := os.Stat("/tmp/berth-tools/minio"); err == nil && !st.IsDir() && runtime.GOOS != "windows" {
		return "/tmp/berth-tools/minio"
	}
	msg := "MinIO not found ($BERTH_MINIO_BIN, minio on PATH, /tmp/berth-tools/minio); install it with: " + Install
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
