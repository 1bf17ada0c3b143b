package filesystem

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/berth-registry/berth/storage/driver"
)

// injectFault makes the next call of *seam fail with err after running
// the real call when passThrough is set (the bytes reach the file, the
// call still reports failure); later calls work. It returns a function
// that arms the fault.
func injectWriteFault(t *testing.T, err error, passThrough bool) (arm func()) {
	t.Helper()
	orig := journalWriteAt
	t.Cleanup(func() { journalWriteAt = orig })
	var mu sync.Mutex
	armed := false
	journalWriteAt = func(f *os.File, b []byte, off int64) (int, error) {
		mu.Lock()
		fail := armed
		armed = false
		mu.Unlock()
		if !fail {
			return orig(f, b, off)
		}
		if passThrough {
			orig(f, b, off)
		}
		return 0, err
	}
	return func() { mu.Lock(); armed = true; mu.Unlock() }
}

// TestFailedJournalWriteFailsOnlyItsRequest: one journal write that fails
// (ENOSPC) fails that write, with ErrStorageFull, and nothing after it;
// readiness reports it until a write succeeds; what was acknowledged
// survives a crash, and the failed write never appears.
func TestFailedJournalWriteFailsOnlyItsRequest(t *testing.T) {
	arm := injectWriteFault(t, syscall.ENOSPC, false)
	root := t.TempDir()
	d := mustNew(t, root)
	if err := d.PutContent(bg, "/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	arm()
	err := d.PutContent(bg, "/b", []byte("b"))
	if !errors.Is(err, driver.ErrStorageFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("PutContent during the fault: %v, want ErrStorageFull wrapping ENOSPC", err)
	}
	if d.Writable() == nil {
		t.Fatal("Writable is nil after a failed write")
	}
	wantMissing(t, d, "/b")
	if err := d.PutContent(bg, "/c", []byte("c")); err != nil {
		t.Fatalf("PutContent after the fault: %v", err)
	}
	if err := d.Writable(); err != nil {
		t.Fatalf("Writable after a write succeeded: %v", err)
	}
	if err := d.Delete(bg, "/a"); err != nil {
		t.Fatalf("Delete after the fault: %v", err)
	}
	abandon(d)
	d2 := mustNew(t, root)
	wantMissing(t, d2, "/a")
	wantMissing(t, d2, "/b")
	wantContent(t, d2, "/c", "c")
}

// TestFailedGenerationNeverReplayed: when a journal write reports failure
// although its bytes reached the file (a failed fdatasync), the generation
// is retired and removed, so a crash afterwards does not replay the write
// that was answered with an error.
func TestFailedGenerationNeverReplayed(t *testing.T) {
	arm := injectWriteFault(t, syscall.EIO, true)
	root := t.TempDir()
	d := mustNew(t, root)
	if err := d.PutContent(bg, "/kept", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	d.journal.mu.Lock()
	failing := d.journal.cur.name
	d.journal.mu.Unlock()
	arm()
	if err := d.PutContent(bg, "/failed", []byte("failed")); err == nil {
		t.Fatal("PutContent succeeded during the fault")
	}
	if err := d.journal.checkpointRetired(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(failing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed generation %s is still there: %v", filepath.Base(failing), err)
	}
	if err := d.PutContent(bg, "/after", []byte("after")); err != nil {
		t.Fatal(err)
	}
	abandon(d)
	d2 := mustNew(t, root)
	wantContent(t, d2, "/kept", "kept")
	wantContent(t, d2, "/after", "after")
	wantMissing(t, d2, "/failed")
}

// TestRotationFailureBoundsGeneration: while no new journal file can be
// made, a full generation takes no more records: writes fail with the
// cause instead of growing it, and work again once files can be made.
func TestRotationFailureBoundsGeneration(t *testing.T) {
	old := journalRotateSize
	journalRotateSize = 4 << 10
	t.Cleanup(func() { journalRotateSize = old })
	origCreate := journalCreate
	t.Cleanup(func() { journalCreate = origCreate })
	var mu sync.Mutex
	full := false
	journalCreate = func(name string) (*os.File, error) {
		mu.Lock()
		defer mu.Unlock()
		if full {
			return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
		}
		return origCreate(name)
	}
	root := t.TempDir()
	d := mustNew(t, root)
	d.journal.bg.Wait() // the spare is ready or failed
	mu.Lock()
	full = true
	mu.Unlock()
	content := make([]byte, 1000)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = d.PutContent(bg, "/x", content)
	}
	if !errors.Is(err, driver.ErrStorageFull) {
		t.Fatalf("writes while no journal file can be made: %v, want ErrStorageFull", err)
	}
	for _, name := range journalFiles(t, root) {
		st, err := os.Stat(filepath.Join(root, journalDir, name))
		if err == nil && st.Size() > journalRotateSize+int64(len(content))+100 {
			t.Errorf("journal file %s grew to %d bytes, past %d and one record", name, st.Size(), journalRotateSize)
		}
	}
	mu.Lock()
	full = false
	mu.Unlock()
	if err := d.PutContent(bg, "/x", []byte("y")); err != nil {
		t.Fatalf("write once files can be made again: %v", err)
	}
	abandon(d)
	d2 := mustNew(t, root)
	wantContent(t, d2, "/x", "y")
}
