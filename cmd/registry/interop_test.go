package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// distributionBinary finds CNCF Distribution's registry, which .ci/run
// installs and names in BERTH_DISTRIBUTION_BIN. Without it the interop test
// skips, except in CI, where it must run.
func distributionBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("BERTH_DISTRIBUTION_BIN")
	if bin != "" {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	msg := "CNCF Distribution not found: GOBIN=/tmp/berth-tools go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2 and set BERTH_DISTRIBUTION_BIN=/tmp/berth-tools/registry"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startDistribution runs Distribution on root, over plain HTTP on
// loopback, until the test ends or the returned stop is called.
func startDistribution(t *testing.T, bin, root string) (addr string, stop func()) {
	t.Helper()
	return startDistributionWith(t, bin, fmt.Sprintf("  filesystem:\n    rootdirectory: %s\n", root))
}

// startDistributionWith is startDistribution with the driver's part of the
// storage section (YAML indented by two spaces).
func startDistributionWith(t *testing.T, bin, storageYAML string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	config := filepath.Join(t.TempDir(), "config.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n%s  delete:\n    enabled: true\nhttp:\n  addr: %s\n", storageYAML, addr)
	if err := os.WriteFile(config, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", config)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Distribution did not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// content is what each direction pushes: an image by tag and a
// two-platform index by tag.
type content struct {
	img v1.Image
	idx v1.ImageIndex
}

func newContent(t *testing.T) content {
	t.Helper()
	idx := mutate.IndexMediaType(mutate.AppendManifests(
		mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: randomImage(t, 2), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: randomImage(t, 1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	), types.OCIImageIndex)
	return content{img: randomImage(t, 3), idx: idx}
}

func (c content) push(t *testing.T, repo name.Repository, opts ...remote.Option) {
	t.Helper()
	if err := remote.Write(repo.Tag("v1"), c.img, opts...); err != nil {
		t.Fatalf("push image to %s: %v", repo, err)
	}
	if err := remote.WriteIndex(repo.Tag("multi"), c.idx, opts...); err != nil {
		t.Fatalf("push index to %s: %v", repo, err)
	}
}

// check pulls everything back, by tag and by digest, and compares it.
func (c content) check(t *testing.T, repo name.Repository, opts ...remote.Option) {
	t.Helper()
	for _, ref := range []name.Reference{repo.Tag("v1"), repo.Digest(imageDigest(t, c.img).String())} {
		got, err := remote.Image(ref, opts...)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		checkSameImage(t, c.img, got)
	}
	gotIdx, err := remote.Index(repo.Tag("multi"), opts...)
	if err != nil {
		t.Fatalf("pull index: %v", err)
	}
	wantDg, _ := c.idx.Digest()
	gotDg, _ := gotIdx.Digest()
	if wantDg != gotDg {
		t.Fatalf("index digest %s, want %s", gotDg, wantDg)
	}
	im, err := c.idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		want, _ := c.idx.Image(d.Digest)
		got, err := gotIdx.Image(d.Digest)
		if err != nil {
			t.Fatalf("child %s: %v", d.Digest, err)
		}
		checkSameImage(t, want, got)
	}
	tags, err := remote.List(repo, opts...)
	if err != nil || !slices.Equal(tags, []string{"multi", "v1"}) {
		t.Fatalf("tags = %v, %v", tags, err)
	}
}

// TestDistributionReadsBerthsData and TestBerthReadsDistributionsData show
// that the on-disk layout is CNCF Distribution's: a data directory written
// by one is served by the other.
func TestBerthReadsDistributionsData(t *testing.T) {
	bin := distributionBinary(t)
	root := t.TempDir()
	c := newContent(t)
	addr, stop := startDistribution(t, bin, root)
	repo, err := name.NewRepository(addr+"/interop/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	c.push(t, repo)
	stop()

	srv := startServer(t, root)
	c.check(t, srv.repo(t, "interop/app"), srv.opts(t)...)
}

func TestDistributionReadsBerthsData(t *testing.T) {
	bin := distributionBinary(t)
	root := t.TempDir()
	c := newContent(t)
	srv := startServer(t, root)
	c.push(t, srv.repo(t, "interop/app"), srv.opts(t)...)
	srv.stop()

	addr, _ := startDistribution(t, bin, root)
	repo, err := name.NewRepository(addr+"/interop/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	c.check(t, repo)
}
