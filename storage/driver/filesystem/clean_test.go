package filesystem

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// plantTemp leaves a temp file in the journal's temp directory, as a
// write interrupted by a crash would, last modified age ago.
func plantTemp(t *testing.T, root, name string, age time.Duration) string {
	t.Helper()
	dir := filepath.Join(root, journalDir, journalTempDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	then := time.Now().Add(-age)
	if err := os.Chtimes(f, then, then); err != nil {
		t.Fatal(err)
	}
	return f
}

func exists(t *testing.T, name string) bool {
	t.Helper()
	_, err := os.Stat(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestStartupRemovesOldTemps: New removes temp files a crashed write left,
// and keeps a fresh one (a write in progress in another process).
func TestStartupRemovesOldTemps(t *testing.T) {
	root := t.TempDir()
	old := plantTemp(t, root, tempPrefix+"old", 2*tempMaxAge)
	fresh := plantTemp(t, root, tempPrefix+"fresh", 0)
	mustNew(t, root)
	if exists(t, old) {
		t.Error("a temp file older than tempMaxAge survived the start")
	}
	if !exists(t, fresh) {
		t.Error("a fresh temp file was removed at start")
	}
}

// TestPutContentTempsInOneDirectory: PutContent leaves no temp file
// beside its target, and none in the temp directory once it returns.
func TestPutContentTempsInOneDirectory(t *testing.T) {
	root := t.TempDir()
	d := mustNew(t, root)
	if err := d.PutContent(bg, "/a/b/link", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(root, "a", "b"), filepath.Join(root, journalDir, journalTempDir)} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "link" {
				t.Errorf("%s left in %s", e.Name(), dir)
			}
		}
	}
}

// TestPeriodicPassRemovesLeftovers: while the driver runs, its periodic
// pass removes old temp files and the journal of a process that died, and
// does not replay that journal (its unapplied record was never
// acknowledged, and replaying could revert newer writes); it leaves a
// fresh temp file and a journal a live process holds.
func TestPeriodicPassRemovesLeftovers(t *testing.T) {
	oldClean, oldMin := cleanInterval, deadJournalMinAge
	cleanInterval, deadJournalMinAge = 10*time.Millisecond, 0
	t.Cleanup(func() { cleanInterval, deadJournalMinAge = oldClean, oldMin })
	root := t.TempDir()
	d := mustNew(t, root)
	if err := d.PutContent(bg, "/x", []byte("new")); err != nil {
		t.Fatal(err)
	}
	oldTemp := plantTemp(t, root, tempPrefix+"old", 2*tempMaxAge)
	freshTemp := plantTemp(t, root, tempPrefix+"fresh", 0)
	dead := plantJournal(t, root, "0000000000000001-0000000000-1", appendRecord(nil, opPut, "/x", []byte("old")))
	live := plantJournal(t, root, "0000000000000001-0000000000-2", appendRecord(nil, opPut, "/y", []byte("y")))
	f, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for (exists(t, dead) || exists(t, oldTemp)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if exists(t, dead) {
		t.Error("the dead process's journal is still there")
	}
	if exists(t, oldTemp) {
		t.Error("the old temp file is still there")
	}
	if !exists(t, live) {
		t.Error("the live process's journal was removed")
	}
	if !exists(t, freshTemp) {
		t.Error("the fresh temp file was removed")
	}
	wantContent(t, d, "/x", "new")
	wantMissing(t, d, "/y")
}
