package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestReadOnlyMode: a registry restarted with
// storage.maintenance.readonly.enabled serves what was pushed before,
// refuses a push and a delete with 405 UNSUPPORTED, and writes nothing: no
// upload session is left in the data directory.
func TestReadOnlyMode(t *testing.T) {
	root := t.TempDir()
	srv := startServer(t, root)
	img := randomImage(t, 2)
	if err := remote.Write(srv.repo(t, "team/app").Tag("v1"), img, srv.opts(t)...); err != nil {
		t.Fatal(err)
	}
	srv.stop()

	srv = startServerWith(t, root, func(c *Config) { c.Storage.Maintenance.ReadOnly.Enabled = true }, nil)
	got, err := remote.Image(srv.repo(t, "team/app").Tag("v1"), srv.opts(t)...)
	if err != nil {
		t.Fatalf("pull in read-only mode: %v", err)
	}
	checkSameImage(t, img, got)

	err = remote.Write(srv.repo(t, "team/app").Tag("v2"), randomImage(t, 1), srv.opts(t)...)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusMethodNotAllowed ||
		len(terr.Errors) != 1 || terr.Errors[0].Code != transport.UnsupportedErrorCode {
		t.Fatalf("push in read-only mode: %v, want 405 UNSUPPORTED", err)
	}
	err = remote.Delete(srv.repo(t, "team/app").Digest(imageDigest(t, img).String()), srv.opts(t)...)
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("delete in read-only mode: %v, want 405", err)
	}
	uploads, err := os.ReadDir(filepath.Join(root, "docker/registry/v2/repositories/team/app/_uploads"))
	if err != nil && !errors.Is(err, os.ErrNotExist) || len(uploads) != 0 {
		t.Fatalf("upload sessions after a refused push: %v %v", uploads, err)
	}
	if _, err := remote.Image(srv.repo(t, "team/app").Tag("v1"), srv.opts(t)...); err != nil {
		t.Fatalf("pull after a refused delete: %v", err)
	}
	resp, _ := srv.do(t, "GET", srv.url("/readyz"), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz in read-only mode: %d, want 200", resp.StatusCode)
	}
}
