package osfile_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/internal/testutil"
)

func write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A reader that has the file open blocks neither a rename over it nor its
// removal, and reads the content it opened. With os.Open on Windows both
// fail at once ("Access is denied", "sharing violation"). Where Windows has
// POSIX renames the rename happens while the reader reads; where it has
// not (Wine 8, old Windows, FAT), Rename waits for the reader to close.
func TestOpenReaderDoesNotBlockRenameOrRemove(t *testing.T) {
	dir := t.TempDir()
	target, next := filepath.Join(dir, "link"), filepath.Join(dir, ".tmp-next")
	write(t, target, "old")
	write(t, next, "new")

	r, err := osfile.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan string, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // the rename starts while r is open
		read <- readAll(t, r)
		r.Close()
	}()
	if err := osfile.Rename(next, target); err != nil {
		t.Fatalf("rename over an open file: %v", err)
	}
	if got := <-read; got != "old" {
		t.Errorf("the open reader read %q, want the old content", got)
	}
	if b, err := osfile.ReadFile(target); err != nil || string(b) != "new" {
		t.Errorf("ReadFile after the rename = %q, %v; want new", b, err)
	}

	r2, err := osfile.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := os.Remove(target); err != nil {
		t.Fatalf("remove while open: %v", err)
	}
	if got := readAll(t, r2); got != "new" {
		t.Errorf("after the removal the open reader reads %q, want new", got)
	}
}

// Writers that replace a file race readers that open it: every read gets
// one whole version, no operation fails.
func TestConcurrentReplaceAndRead(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "current")
	if err := osfile.WriteFile(target, []byte("v0"), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if err := osfile.WriteFile(target, []byte(strings.Repeat("x", w+i+1)), 0o644); err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() {
			for range 25 {
				b, err := osfile.ReadFile(target)
				if err != nil {
					errs <- err
				} else if len(b) == 0 {
					errs <- errors.New("read an empty file")
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOpenFileFlags(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	if _, err := osfile.Open(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing file: %v, want not-exist", err)
	}
	f, err := osfile.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("abc"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := osfile.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on an existing file: %v, want exist", err)
	}

	f, err = osfile.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("def"); err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil || st.Size() != 6 {
		t.Fatalf("size after an append = %v, %v; want 6", st, err)
	}
	f.Close()

	f, err = osfile.OpenFile(name, os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f); got != "" {
		t.Errorf("after O_TRUNC the file holds %q", got)
	}
	f.Close()

	f, err = osfile.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("z")
	f.Close()
	if b, _ := osfile.ReadFile(name); string(b) != "z" {
		t.Errorf("O_CREATE|O_TRUNC: file holds %q, want z", b)
	}

	d, err := osfile.Open(dir)
	if err != nil {
		t.Fatalf("Open of a directory: %v", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil || len(names) != 1 || names[0] != "f" {
		t.Errorf("Readdirnames = %v, %v", names, err)
	}
}

// A long path (past Windows' MAX_PATH of 260) opens, renames and reads.
func TestLongPaths(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, strings.Repeat("a", 100), strings.Repeat("b", 100), strings.Repeat("c", 100))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(deep, "link")
	if err := osfile.WriteFile(name, []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := osfile.ReadFile(name); err != nil || string(b) != "deep" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
}

func TestWriteFileLeavesNoTemporaryFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "sub", "secret")
	for _, content := range []string{"one", "two"} {
		if err := osfile.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := osfile.WriteNew(name, []byte("three"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteNew over an existing file: %v, want exist", err)
	}
	if b, err := osfile.ReadFile(name); err != nil || string(b) != "two" {
		t.Errorf("content %q, %v; want two", b, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(name))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// Mode 0600 means private on every system: on Windows an access list for
// the owner, SYSTEM and Administrators only.
func TestPrivateFiles(t *testing.T) {
	testutil.SkipUnderWine(t, "Wine keeps no file access lists")
	for _, write := range []func(string, []byte, os.FileMode) error{osfile.WriteFile, osfile.WriteNew} {
		name := filepath.Join(t.TempDir(), "sub", "secret")
		if err := write(name, []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
		if private, err := osfile.IsPrivate(name); err != nil || !private {
			t.Errorf("a file written with mode 0600: private = %v, %v", private, err)
		}
		public := filepath.Join(filepath.Dir(name), "public")
		if err := write(public, []byte("p"), 0o644); err != nil {
			t.Fatal(err)
		}
		if private, err := osfile.IsPrivate(public); err != nil || private {
			t.Errorf("a file written with mode 0644: private = %v, %v", private, err)
		}
	}
}

// Lock excludes: increments of a counter file under the lock are never lost.
func TestLock(t *testing.T) {
	dir := t.TempDir()
	lock, counter := filepath.Join(dir, "lock"), filepath.Join(dir, "counter")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				unlock, err := osfile.Lock(lock)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := osfile.ReadFile(counter)
				time.Sleep(time.Millisecond) // widen the window a lost update needs
				if err := osfile.WriteFile(counter, append(b, 'x'), 0o644); err != nil {
					t.Error(err)
				}
				unlock()
			}
		})
	}
	wg.Wait()
	if b, _ := osfile.ReadFile(counter); len(b) != 80 {
		t.Errorf("counter holds %d increments, want 80", len(b))
	}
}

func TestProcessAlive(t *testing.T) {
	if !osfile.ProcessAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if osfile.ProcessAlive(cmd.Process.Pid) {
		t.Errorf("process %d that exited is alive", cmd.Process.Pid)
	}
	if osfile.ProcessAlive(0) || osfile.ProcessAlive(-1) {
		t.Error("pid 0 or -1 is alive")
	}
}
