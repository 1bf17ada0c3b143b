// Package drivertest is the test suite every storage driver must pass. A
// driver's own test calls Run with a constructor for empty drivers.
package drivertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/berth-registry/berth/storage/driver"
)

// Run runs the suite. newDriver must return an empty driver each call.
func Run(t *testing.T, newDriver func(t *testing.T) driver.Driver) {
	tests := []struct {
		name string
		fn   func(t *testing.T, d driver.Driver)
	}{
		{"PutGet", testPutGet},
		{"NotFound", testNotFound},
		{"InvalidPaths", testInvalidPaths},
		{"ReaderOffset", testReaderOffset},
		{"WriterResume", testWriterResume},
		{"WriterTruncate", testWriterTruncate},
		{"WriterCancel", testWriterCancel},
		{"WriterEmpty", testWriterEmpty},
		{"List", testList},
		{"ListPage", testListPage},
		{"Move", testMove},
		{"Delete", testDelete},
		{"ConcurrentPut", testConcurrentPut},
		{"StatFile", testStatFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newDriver(t)) })
	}
}

var ctx = context.Background()

func mustPut(t *testing.T, d driver.Driver, p, content string) {
	t.Helper()
	if err := d.PutContent(ctx, p, []byte(content)); err != nil {
		t.Fatalf("PutContent(%s): %v", p, err)
	}
}

func mustGet(t *testing.T, d driver.Driver, p string) string {
	t.Helper()
	b, err := d.GetContent(ctx, p)
	if err != nil {
		t.Fatalf("GetContent(%s): %v", p, err)
	}
	return string(b)
}

func testPutGet(t *testing.T, d driver.Driver) {
	mustPut(t, d, "/a/b/c", "one")
	if got := mustGet(t, d, "/a/b/c"); got != "one" {
		t.Fatalf("got %q", got)
	}
	mustPut(t, d, "/a/b/c", "two, longer")
	if got := mustGet(t, d, "/a/b/c"); got != "two, longer" {
		t.Fatalf("after overwrite got %q", got)
	}
	fi, err := d.Stat(ctx, "/a/b/c")
	if err != nil || fi.Size != int64(len("two, longer")) || fi.IsDir {
		t.Fatalf("Stat file = %+v, %v", fi, err)
	}
	fi, err = d.Stat(ctx, "/a/b")
	if err != nil || !fi.IsDir {
		t.Fatalf("Stat dir = %+v, %v", fi, err)
	}
	mustPut(t, d, "/empty", "")
	if got := mustGet(t, d, "/empty"); got != "" {
		t.Fatalf("empty file read %q", got)
	}
}

func testNotFound(t *testing.T, d driver.Driver) {
	checks := map[string]error{}
	_, checks["GetContent"] = d.GetContent(ctx, "/missing")
	_, checks["Reader"] = d.Reader(ctx, "/missing", 0)
	_, checks["Stat"] = d.Stat(ctx, "/missing")
	_, checks["List"] = d.List(ctx, "/missing")
	checks["Move"] = d.Move(ctx, "/missing", "/other")
	checks["Delete"] = d.Delete(ctx, "/missing")
	for op, err := range checks {
		if !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("%s on a missing path: got %v, want ErrNotFound", op, err)
		}
		var pe *driver.PathError
		if !errors.As(err, &pe) {
			t.Errorf("%s: error %v is not a *PathError", op, err)
		}
	}
}

// testStatFile checks driver.FileStater, for drivers that have it: a file
// is described as Stat describes it; a directory, a missing path and an
// unfinished file are not files.
func testStatFile(t *testing.T, d driver.Driver) {
	fs, ok := d.(driver.FileStater)
	if !ok {
		t.Skip("the driver is no FileStater")
	}
	mustPut(t, d, "/dir/file", "content")
	fi, err := fs.StatFile(ctx, "/dir/file")
	if err != nil || fi.IsDir || fi.Size != int64(len("content")) || fi.Path != "/dir/file" || fi.ModTime.IsZero() {
		t.Fatalf("StatFile of a file = %+v, %v", fi, err)
	}
	if st, err := d.Stat(ctx, "/dir/file"); err != nil || st.Size != fi.Size || !st.ModTime.Equal(fi.ModTime) {
		t.Errorf("Stat = %+v, %v; StatFile = %+v", st, err, fi)
	}
	w, err := d.Writer(ctx, "/dir/unfinished", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("not yet")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dir", "/missing", "/dir/missing", "/dir/unfinished", "/"} {
		_, err := fs.StatFile(ctx, p)
		var pe *driver.PathError
		if !errors.Is(err, driver.ErrNotFound) || !errors.As(err, &pe) {
			t.Errorf("StatFile(%s) = %v, want a *PathError with ErrNotFound", p, err)
		}
	}
	if _, err := fs.StatFile(ctx, "/a/../b"); !errors.Is(err, driver.ErrInvalidPath) {
		t.Errorf("StatFile of an unclean path = %v, want ErrInvalidPath", err)
	}
}

func testInvalidPaths(t *testing.T, d driver.Driver) {
	for _, p := range []string{"", "a", "/a/../b", "/a/./b", "/a/", "//a", "/a//b", "/..", "/a/b\\c", "/a b", "/a/\x00"} {
		if err := d.PutContent(ctx, p, []byte("x")); !errors.Is(err, driver.ErrInvalidPath) {
			t.Errorf("PutContent(%q) = %v, want ErrInvalidPath", p, err)
		}
		if _, err := d.GetContent(ctx, p); !errors.Is(err, driver.ErrInvalidPath) {
			t.Errorf("GetContent(%q) = %v, want ErrInvalidPath", p, err)
		}
	}
	if err := d.Delete(ctx, "/"); err == nil {
		t.Error("Delete(/) succeeded")
	}
}

func testReaderOffset(t *testing.T, d driver.Driver) {
	mustPut(t, d, "/f", "0123456789")
	for _, tc := range []struct {
		off  int64
		want string
	}{{0, "0123456789"}, {3, "3456789"}, {10, ""}, {25, ""}} {
		r, err := d.Reader(ctx, "/f", tc.off)
		if err != nil {
			t.Fatalf("Reader(%d): %v", tc.off, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != tc.want {
			t.Errorf("Reader(%d) read %q, %v; want %q", tc.off, b, err, tc.want)
		}
	}
}

func testWriterResume(t *testing.T, d driver.Driver) {
	w, err := d.Writer(ctx, "/up/data", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if w.Size() != 6 {
		t.Fatalf("Size = %d", w.Size())
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = d.Writer(ctx, "/up/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 6 {
		t.Fatalf("resumed Size = %d, want 6", w.Size())
	}
	payload := bytes.Repeat([]byte("w"), 1<<20)
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got := mustGet(t, d, "/up/data")
	if got != "hello "+string(payload) {
		t.Fatalf("resumed content has %d bytes, want %d", len(got), 6+len(payload))
	}
}

func testWriterTruncate(t *testing.T, d driver.Driver) {
	mustPut(t, d, "/t", "old content")
	w, err := d.Writer(ctx, "/t", false)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 0 {
		t.Fatalf("Size = %d after truncating open", w.Size())
	}
	w.Write([]byte("new"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if got := mustGet(t, d, "/t"); got != "new" {
		t.Fatalf("got %q", got)
	}
}

func testWriterCancel(t *testing.T, d driver.Driver) {
	w, err := d.Writer(ctx, "/c/data", false)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("doomed"))
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/c/data"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("cancelled file still there: %v", err)
	}
}

// testWriterEmpty commits a file nothing was written to: it exists, empty
// (an empty blob is an upload with no bytes).
func testWriterEmpty(t *testing.T, d driver.Driver) {
	for _, appendMode := range []bool{true, false} {
		p := fmt.Sprintf("/empty/%v", appendMode)
		w, err := d.Writer(ctx, p, appendMode)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		w.Close()
		fi, err := d.Stat(ctx, p)
		if err != nil || fi.Size != 0 || fi.IsDir {
			t.Fatalf("append %v: Stat = %+v, %v; want an empty file", appendMode, fi, err)
		}
		if got := mustGet(t, d, p); got != "" {
			t.Fatalf("append %v: content %q", appendMode, got)
		}
	}
}

func testList(t *testing.T, d driver.Driver) {
	mustPut(t, d, "/l/a", "1")
	mustPut(t, d, "/l/b/c", "2")
	mustPut(t, d, "/l/b/d", "3")
	got, err := d.List(ctx, "/l")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"/l/a", "/l/b"}; !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
}

// testListPage checks key order (a directory sorts as its name and "/",
// so "a-b/" comes before "a/"), paging with after and limit, and that a
// page starts after a directory's key.
func testListPage(t *testing.T, d driver.Driver) {
	for _, p := range []string{"/p/a/x", "/p/a-b/x", "/p/a.c", "/p/b", "/p/a0/x", "/p/_z/x"} {
		mustPut(t, d, p, "1")
	}
	keys := func(es []driver.Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Key())
		}
		return out
	}
	all, err := d.ListPage(ctx, "/p", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"_z/", "a-b/", "a.c", "a/", "a0/", "b"}
	if got := keys(all); !slices.Equal(got, want) {
		t.Fatalf("ListPage(all) = %v, want %v", got, want)
	}
	if all[0].Name != "_z" || !all[0].IsDir || all[2].Name != "a.c" || all[2].IsDir {
		t.Fatalf("entries = %+v", all)
	}
	for _, tc := range []struct {
		after string
		limit int
		want  []string
	}{
		{"", 2, []string{"_z/", "a-b/"}},
		{"a-b/", 2, []string{"a.c", "a/"}},
		{"a", 0, []string{"a-b/", "a.c", "a/", "a0/", "b"}},
		{"a/", 0, []string{"a0/", "b"}},
		{"b", 5, nil},
	} {
		got, err := d.ListPage(ctx, "/p", tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keys(got), tc.want) {
			t.Errorf("ListPage(after %q, limit %d) = %v, want %v", tc.after, tc.limit, keys(got), tc.want)
		}
	}
	if _, err := d.ListPage(ctx, "/missing", "", 0); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("ListPage(/missing) = %v, want ErrNotFound", err)
	}
	// A page of a large directory: 2,500 entries (more than an object
	// store returns in one response), read in pages of 1,000.
	for i := range 2500 {
		mustPut(t, d, fmt.Sprintf("/big/%05d", i), "")
	}
	var got []string
	for after := ""; ; {
		page, err := d.ListPage(ctx, "/big", after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 1000 {
			t.Fatalf("page of %d entries, limit 1000", len(page))
		}
		got = append(got, keys(page)...)
		after = page[len(page)-1].Key()
	}
	if len(got) != 2500 || got[0] != "00000" || got[2499] != "02499" || !slices.IsSorted(got) {
		t.Fatalf("paged listing: %d entries, first %q", len(got), got[0])
	}
}

func testMove(t *testing.T, d driver.Driver) {
	mustPut(t, d, "/m/src", "moved")
	mustPut(t, d, "/n/dst", "replaced")
	if err := d.Move(ctx, "/m/src", "/n/dst"); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, d, "/n/dst"); got != "moved" {
		t.Fatalf("dst = %q", got)
	}
	if _, err := d.Stat(ctx, "/m/src"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("src still there: %v", err)
	}
	mustPut(t, d, "/m/src2", "x")
	if err := d.Move(ctx, "/m/src2", "/new/deep/dir/dst"); err != nil {
		t.Fatalf("move into a new directory: %v", err)
	}
}

func testDelete(t *testing.T, d driver.Driver) {
	mustPut(t, d, "/tree/a/b", "1")
	mustPut(t, d, "/tree/c", "2")
	mustPut(t, d, "/keep", "3")
	if err := d.Delete(ctx, "/tree"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/tree/a/b"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("deleted tree still has files: %v", err)
	}
	if got := mustGet(t, d, "/keep"); got != "3" {
		t.Fatalf("sibling damaged: %q", got)
	}
}

// testConcurrentPut writes one path from many goroutines: every read must see
// one whole version, never a mix or a part.
func testConcurrentPut(t *testing.T, d driver.Driver) {
	versions := make([]string, 8)
	for i := range versions {
		versions[i] = string(bytes.Repeat([]byte(fmt.Sprint(i)), 64<<10))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range versions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				if err := d.PutContent(ctx, "/race", []byte(versions[i])); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			b, err := d.GetContent(ctx, "/race")
			if errors.Is(err, driver.ErrNotFound) {
				continue
			}
			if err != nil {
				errs <- err
				return
			}
			if !slices.Contains(versions, string(b)) {
				errs <- fmt.Errorf("read a torn file of %d bytes", len(b))
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
