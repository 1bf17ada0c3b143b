package filesystem

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// A blob being read can be deleted, directory and all, and a link being
// read can be replaced: readers never block removals or renames, on
// Windows as on Unix.
func TestReadersBlockNothing(t *testing.T) {
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	for _, p := range []string{"/blobs/ab/abcd/data", "/repo/current/link"} {
		if err := d.PutContent(ctx, p, []byte("old content")); err != nil {
			t.Fatal(err)
		}
	}

	// Where Windows has POSIX deletion the removal happens while the
	// blob is read; where it has not (Wine 8, older Windows), Delete
	// waits, boundedly, for the reader to close it.
	blob, err := d.Reader(ctx, "/blobs/ab/abcd/data", 0)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		time.Sleep(50 * time.Millisecond) // the delete starts while blob is open
		b, err := io.ReadAll(blob)
		blob.Close()
		if err != nil || string(b) != "old content" {
			t.Errorf("the open reader reads %q, %v", b, err)
		}
	}()
	if err := d.Delete(ctx, "/blobs/ab/abcd"); err != nil {
		t.Fatalf("deleting a blob's directory while the blob is read: %v", err)
	}
	<-read
	if _, err := d.Stat(ctx, "/blobs/ab/abcd"); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("after the delete: %v, want not found", err)
	}

	link, err := d.Reader(ctx, "/repo/current/link", 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b, err := io.ReadAll(link)
		link.Close()
		if err != nil || string(b) != "old content" {
			t.Errorf("the open reader reads %q, %v", b, err)
		}
	}()
	if err := d.PutContent(ctx, "/repo/current/link", []byte("new content")); err != nil {
		t.Fatalf("replacing a link while it is read: %v", err)
	}
	<-done
	if b, err := d.GetContent(ctx, "/repo/current/link"); err != nil || string(b) != "new content" {
		t.Errorf("after the replacement: %q, %v", b, err)
	}
}
