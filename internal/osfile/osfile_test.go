package osfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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

	r, err := Open(target)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan string, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // the rename starts while r is open
		read <- readAll(t, r)
		r.Close()
	}()
	if err := Rename(next, target); err != nil {
		t.Fatalf("rename over an open file: %v", err)
	}
	if got := <-read; got != "old" {
		t.Errorf("the open reader read %q, want the old content", got)
	}
	if b, err := ReadFile(target); err != nil || string(b) != "new" {
		t.Errorf("ReadFile after the rename = %q, %v; want new", b, err)
	}

	r2, err := Open(target)
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
	if err := WriteFile(target, []byte("v0"), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if err := WriteFile(target, []byte(strings.Repeat("x", w+i+1)), 0o644); err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() {
			for range 25 {
				b, err := ReadFile(target)
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
	if _, err := Open(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing file: %v, want not-exist", err)
	}
	f, err := OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("abc"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on an existing file: %v, want exist", err)
	}

	f, err = OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
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

	f, err = OpenFile(name, os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f); got != "" {
		t.Errorf("after O_TRUNC the file holds %q", got)
	}
	f.Close()

	f, err = OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("z")
	f.Close()
	if b, _ := ReadFile(name); string(b) != "z" {
		t.Errorf("O_CREATE|O_TRUNC: file holds %q, want z", b)
	}

	d, err := Open(dir)
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
	if err := WriteFile(name, []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(name); err != nil || string(b) != "deep" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
}

func TestWriteFileMode(t *testing.T) {
	name := filepath.Join(t.TempDir(), "sub", "secret")
	if err := WriteFile(name, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if want := fileMode(0o600); st.Mode().Perm() != want {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), want)
	}
	entries, _ := os.ReadDir(filepath.Dir(name))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}
