package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// After Berth's collection, Distribution still serves what is left, and
// its own collection finds nothing more to remove: the layout stays
// Distribution's, and Berth removes at least what Distribution would.
func TestDistributionServesDataAfterCollection(t *testing.T) {
	bin := distributionBinary(t)
	root := t.TempDir()
	kept, gone := newContent(t), newContent(t)
	srv := startServer(t, root)
	kept.push(t, srv.repo(t, "interop/kept"), srv.opts(t)...)
	goneRepo := srv.repo(t, "interop/gone")
	gone.push(t, goneRepo, srv.opts(t)...)
	for _, tag := range []string{"v1", "multi"} {
		if err := remote.Delete(goneRepo.Tag(tag), srv.opts(t)...); err != nil {
			t.Fatal(err)
		}
	}
	srv.stop()

	// Everything is a month old, past any grace period.
	old := time.Now().Add(-30 * 24 * time.Hour)
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := storage.New(d).CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: true})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlobsDeleted == 0 || rep.ManifestsDeleted == 0 {
		t.Fatalf("the collection removed nothing: %+v", rep)
	}

	config := filepath.Join(t.TempDir(), "config.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n", root)
	if err := os.WriteFile(config, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "garbage-collect", "--dry-run", "--delete-untagged", config).CombinedOutput()
	if err != nil {
		t.Fatalf("Distribution's garbage-collect: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(\d+) blobs and (\d+) manifests eligible for deletion`).FindSubmatch(out)
	if m == nil || string(m[1]) != "0" || string(m[2]) != "0" {
		t.Errorf("Distribution would still delete after Berth's collection:\n%s", lastLines(out, 5))
	}

	addr, _ := startDistribution(t, bin, root)
	repo, err := name.NewRepository(addr+"/interop/kept", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	kept.check(t, repo)
}

func lastLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}
