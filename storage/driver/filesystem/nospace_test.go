package filesystem

import (
	"errors"
	"os"
	"testing"

	"github.com/berth-registry/berth/storage/driver"
)

// TestNoSpaceIsStorageFull: the platform's own full-disk error becomes
// driver.ErrStorageFull, and other errors do not.
func TestNoSpaceIsStorageFull(t *testing.T) {
	err := wrap("put", "/x", &os.PathError{Op: "write", Path: "x", Err: platformNoSpace})
	if !errors.Is(err, driver.ErrStorageFull) || !errors.Is(err, platformNoSpace) {
		t.Fatalf("%v: want ErrStorageFull wrapping the cause", err)
	}
	if err := wrap("put", "/x", os.ErrPermission); errors.Is(err, driver.ErrStorageFull) {
		t.Fatalf("%v: a permission error is not a full disk", err)
	}
}
