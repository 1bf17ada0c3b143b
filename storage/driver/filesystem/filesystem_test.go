package filesystem

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/drivertest"
)

func TestSuite(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		d, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() }) // before the directory goes
		return d
	})
}

// TestCrashLeftoversInvisible plants what a crash in PutContent leaves
// behind (a temp file beside the target) and checks that readers see only
// the old, whole content.
func TestCrashLeftoversInvisible(t *testing.T) {
	root := t.TempDir()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.PutContent(ctx, "/dir/link", []byte("sha256:old")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dir", tempPrefix+"123"), []byte("sha256:ne"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, "/dir/link")
	if err != nil || string(got) != "sha256:old" {
		t.Fatalf("got %q, %v", got, err)
	}
	list, err := d.List(ctx, "/dir")
	if err != nil || !slices.Equal(list, []string{"/dir/link"}) {
		t.Fatalf("List = %v, %v", list, err)
	}
}

func TestLayoutMatchesPath(t *testing.T) {
	root := t.TempDir()
	d, _ := New(root)
	defer d.Close()
	if err := d.PutContent(context.Background(), "/docker/registry/v2/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker", "registry", "v2", "x")); err != nil {
		t.Fatalf("file not at the Distribution-compatible place: %v", err)
	}
}
