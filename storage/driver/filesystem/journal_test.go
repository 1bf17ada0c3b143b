package filesystem

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

var bg = context.Background()

func mustNew(t *testing.T, root string) *Driver {
	t.Helper()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() }) // before the directory goes
	return d
}

// plantJournal writes a journal file as a process that died would have
// left it: records committed, none of them applied.
func plantJournal(t *testing.T, root, name string, records []byte) string {
	t.Helper()
	dir := filepath.Join(root, journalDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, append([]byte(journalMagic), records...), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// abandon drops d the way a crash would: journal files closed (their
// locks released) without a checkpoint.
func abandon(d *Driver) {
	j := d.journal
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.bg.Wait()
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, g := range j.live {
		g.f.Close()
	}
	if j.spare != nil {
		j.spare.f.Close()
	}
}

func journalFiles(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, journalDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

func wantContent(t *testing.T, d *Driver, p, want string) {
	t.Helper()
	got, err := d.GetContent(bg, p)
	if err != nil || string(got) != want {
		t.Fatalf("%s = %q, %v; want %q", p, got, err, want)
	}
}

func wantMissing(t *testing.T, d *Driver, p string) {
	t.Helper()
	if _, err := d.Stat(bg, p); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("%s: Stat error %v, want not found", p, err)
	}
}

// TestReplay: New applies an orphaned journal in order (a later put wins,
// a delete removes what an earlier record wrote), stops at a torn record,
// and removes the journal.
func TestReplay(t *testing.T) {
	root := t.TempDir()
	var recs []byte
	recs = appendRecord(recs, opPut, "/a/link", []byte("one"))
	recs = appendRecord(recs, opPut, "/b/c/link", []byte("two"))
	recs = appendRecord(recs, opPut, "/a/link", []byte("three"))
	recs = appendRecord(recs, opPut, "/gone/x", []byte("x"))
	recs = appendRecord(recs, opDelete, "/gone", nil)
	torn := appendRecord(nil, opPut, "/torn", []byte("never acknowledged"))
	recs = append(recs, torn[:len(torn)-3]...)
	plantJournal(t, root, "0000000000000001-1-0", recs)

	d := mustNew(t, root)
	defer d.Close()
	wantContent(t, d, "/a/link", "three")
	wantContent(t, d, "/b/c/link", "two")
	wantMissing(t, d, "/gone")
	wantMissing(t, d, "/torn")
	if files := journalFiles(t, root); slices.Contains(files, "0000000000000001-1-0") {
		t.Fatalf("journal files after replay: %v, the replayed one still there", files)
	}
}

// TestReplayOrderAcrossFiles: older generations replay first.
func TestReplayOrderAcrossFiles(t *testing.T) {
	root := t.TempDir()
	plantJournal(t, root, "0000000000000002-1-1", appendRecord(nil, opPut, "/tag", []byte("new")))
	plantJournal(t, root, "0000000000000001-1-0", appendRecord(nil, opPut, "/tag", []byte("old")))
	d := mustNew(t, root)
	defer d.Close()
	wantContent(t, d, "/tag", "new")
}

// TestReplayCorruptRecord: a record whose checksum does not match ends the
// replay there.
func TestReplayCorruptRecord(t *testing.T) {
	root := t.TempDir()
	recs := appendRecord(nil, opPut, "/ok", []byte("ok"))
	bad := appendRecord(nil, opPut, "/bad", []byte("bad"))
	bad[len(bad)-1] ^= 0xff
	recs = append(recs, bad...)
	recs = appendRecord(recs, opPut, "/after", []byte("after"))
	plantJournal(t, root, "0000000000000001-1-0", recs)
	d := mustNew(t, root)
	defer d.Close()
	wantContent(t, d, "/ok", "ok")
	wantMissing(t, d, "/bad")
	wantMissing(t, d, "/after")
}

// TestLiveJournalNotReplayed: a journal another process holds is that
// process's; once its holder is gone it is replayed.
func TestLiveJournalNotReplayed(t *testing.T) {
	root := t.TempDir()
	name := plantJournal(t, root, "0000000000000001-1-0", appendRecord(nil, opPut, "/x", []byte("x")))
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := lockFile(f); err != nil {
		t.Fatal(err)
	}
	d := mustNew(t, root)
	wantMissing(t, d, "/x")
	d.Close()
	f.Close()
	d = mustNew(t, root)
	defer d.Close()
	wantContent(t, d, "/x", "x")
}

// TestCloseCheckpoints: after Close the journal holds nothing, and a
// write fails.
func TestCloseCheckpoints(t *testing.T) {
	root := t.TempDir()
	d := mustNew(t, root)
	if err := d.PutContent(bg, "/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if files := journalFiles(t, root); len(files) != 0 {
		t.Fatalf("journal files after Close: %v", files)
	}
	if err := d.PutContent(bg, "/b", []byte("b")); !errors.Is(err, errJournalClosed) {
		t.Fatalf("PutContent after Close: %v", err)
	}
	wantContent(t, d, "/a", "a")
}

// TestUnjournaledWriteSettlesFirst: a Move onto a path whose put is still
// in a live journal checkpoints that journal first, so a crash afterwards
// cannot replay the put over the moved file.
func TestUnjournaledWriteSettlesFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		put, del string // journaled before the move
	}{
		{"put at the path", "/blobs/x/data", ""},
		{"put below the path, then the directory deleted", "/blobs/x/data/old", "/blobs/x/data"},
		{"delete above the path", "/blobs/x/other", "/blobs/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			d := mustNew(t, root)
			if err := d.PutContent(bg, tc.put, []byte("old")); err != nil {
				t.Fatal(err)
			}
			if tc.del != "" {
				if err := d.Delete(bg, tc.del); err != nil {
					t.Fatal(err)
				}
			}
			w, err := d.Writer(bg, "/uploads/u/data", false)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("new")); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(bg); err != nil {
				t.Fatal(err)
			}
			w.Close()
			if err := d.Move(bg, "/uploads/u/data", "/blobs/x/data"); err != nil {
				t.Fatal(err)
			}
			abandon(d)
			d2 := mustNew(t, root)
			defer d2.Close()
			wantContent(t, d2, "/blobs/x/data", "new")
		})
	}
}

// TestUnrelatedWriteDoesNotSettle: an upload beside a journaled file does
// not force a checkpoint.
func TestUnrelatedWriteDoesNotSettle(t *testing.T) {
	root := t.TempDir()
	d := mustNew(t, root)
	defer d.Close()
	if err := d.PutContent(bg, "/uploads/u/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	before := journalFiles(t, root)
	w, err := d.Writer(bg, "/uploads/u/data", false)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if after := journalFiles(t, root); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("journal rotated from %v to %v for an unrelated write", before, after)
	}
}

// TestRotation: a generation past the size limit is checkpointed in the
// background while writes go on, and everything survives a crash.
func TestRotation(t *testing.T) {
	old := journalRotateSize
	journalRotateSize = 4 << 10
	defer func() { journalRotateSize = old }()
	root := t.TempDir()
	d := mustNew(t, root)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				p := fmt.Sprintf("/w%d/%d", w, i%10)
				if err := d.PutContent(bg, p, []byte(strings.Repeat("x", 100)+strconv.Itoa(i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	abandon(d)
	d2 := mustNew(t, root)
	defer d2.Close()
	for w := range 4 {
		for i := 90; i < 100; i++ {
			wantContent(t, d2, fmt.Sprintf("/w%d/%d", w, i%10), strings.Repeat("x", 100)+strconv.Itoa(i))
		}
	}
}

// TestKilledWriter kills a process that writes and deletes files as fast
// as it can, at a moment of its own choosing, and checks that what it had
// acknowledged is there after a restart (the newer value of a write in
// flight is allowed too).
func TestKilledWriter(t *testing.T) {
	if root := os.Getenv("BERTH_JOURNAL_CHILD"); root != "" {
		journalWriterChild(root)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriter$")
	cmd.Env = append(os.Environ(), "BERTH_JOURNAL_CHILD="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]int{} // path → step last acknowledged
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(500 * time.Millisecond)
	for sc.Scan() {
		var p string
		var step int
		if _, err := fmt.Sscanf(sc.Text(), "%s %d", &p, &step); err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		acked[p] = step
		if time.Now().After(deadline) && len(acked) == 8 {
			break
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if len(acked) < 8 {
		t.Fatalf("child acknowledged only %d paths", len(acked))
	}

	d := mustNew(t, root)
	defer d.Close()
	for p, step := range acked {
		got, err := d.GetContent(bg, p)
		have := string(got)
		if errors.Is(err, driver.ErrNotFound) {
			have = "missing"
		} else if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		// Each path is written in sequence: the step after the
		// acknowledged one may have been in flight.
		if have != stepState(step) && have != stepState(step+1) {
			t.Errorf("%s = %q after the restart; acknowledged step %d (%q)", p, have, step, stepState(step))
		}
	}
}

// stepState is what a path holds after the child's step n on it: every
// fifth step deletes it, the others write n.
func stepState(n int) string {
	if n%5 == 0 {
		return "missing"
	}
	return strconv.Itoa(n)
}

// journalWriterChild writes 8 paths round-robin, with small rotations,
// until it is killed, printing each step it had acknowledged.
func journalWriterChild(root string) {
	journalRotateSize = 16 << 10
	d, err := New(root)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	for step := 1; ; step++ {
		for i := range 8 {
			p := fmt.Sprintf("/dir%d/file", i)
			var err error
			if state := stepState(step); state == "missing" {
				err = d.Delete(bg, p)
			} else {
				err = d.PutContent(bg, p, []byte(state))
			}
			if err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Fprintf(out, "%s %d\n", p, step)
			out.Flush()
		}
	}
}

// TestReplayOnlyAfterReboot: the journal of a process that died in this
// boot is not replayed (its applied changes are in the page cache, and
// other processes may have written the same paths since); one of an
// earlier boot is. Both are removed.
func TestReplayOnlyAfterReboot(t *testing.T) {
	if currentBoot == "" {
		t.Skip("this system's boot cannot be told")
	}
	root := t.TempDir()
	other := "0" + currentBoot[1:]
	if other == currentBoot {
		other = "1" + currentBoot[1:]
	}
	if runtime.GOOS == "windows" {
		n, _ := strconv.ParseInt(currentBoot[1:], 10, 64)
		other = "w" + strconv.FormatInt(n-3600, 10)
	}
	// A newer write that a dead process of this boot had deleted before.
	if err := os.MkdirAll(filepath.Join(root, "newer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "newer", "link"), []byte("pushed since"), 0o644); err != nil {
		t.Fatal(err)
	}
	plantJournal(t, root, "0000000000000001-0000000001-7-"+currentBoot, appendRecord(nil, opDelete, "/newer", nil))
	plantJournal(t, root, "0000000000000002-0000000001-8-"+other, appendRecord(nil, opPut, "/crashed/link", []byte("acknowledged")))
	d := mustNew(t, root)
	defer d.Close()
	wantContent(t, d, "/newer/link", "pushed since")
	wantContent(t, d, "/crashed/link", "acknowledged")
	for _, f := range journalFiles(t, root) {
		if strings.HasPrefix(f, "000000000000000") {
			t.Errorf("dead journal %s is left", f)
		}
	}
}
