package filesystem

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// TestFullDisk fills a real filesystem (a small tmpfs): writes fail with
// ErrStorageFull and Writable says so; once space is freed, the driver
// finds out on its own and writes succeed again, without a restart.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	old := probeInterval
	probeInterval = 10 * time.Millisecond
	t.Cleanup(func() { probeInterval = old })
	root := filepath.Join(dir, "data")
	d := mustNew(t, root)
	if err := d.PutContent(bg, "/before", []byte("before")); err != nil {
		t.Fatal(err)
	}

	// Fill the disk, then write. Space can come back by itself right after
	// the fill (the driver's spare journal file, being preallocated in the
	// background, is removed when it cannot be completed): fill again
	// until a write fails.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	var failed string
	for i := 0; i < 10 && failed == ""; i++ {
		for {
			if _, err := f.Write(chunk); err != nil {
				break
			}
		}
		p := fmt.Sprintf("/during-%d", i)
		if err = d.PutContent(bg, p, make([]byte, 128<<10)); err != nil {
			failed = p
		}
	}
	f.Close()
	if !errors.Is(err, driver.ErrStorageFull) {
		t.Fatalf("PutContent on a full disk: %v, want ErrStorageFull", err)
	}
	if err := d.Writable(); !errors.Is(err, driver.ErrStorageFull) {
		t.Fatalf("Writable on a full disk: %v, want ErrStorageFull", err)
	}
	wantContent(t, d, "/before", "before") // reads go on

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.Writable() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.Writable(); err != nil {
		t.Fatalf("Writable after space was freed: %v", err)
	}
	if err := d.PutContent(bg, "/after", []byte("after")); err != nil {
		t.Fatalf("PutContent after space was freed: %v", err)
	}
	wantMissing(t, d, failed)
	wantContent(t, d, "/after", "after")
}
