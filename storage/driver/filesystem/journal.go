package filesystem

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
)

// The journal makes small writes durable with one fdatasync shared by every
// write in flight, instead of two fsyncs (file and directory) each. Its
// files are written full of zeros before use, so appending a record changes
// no file metadata and the fdatasync is a data write and a cache flush: it
// does not wait for a commit of the filesystem's own journal, and neither
// do the directory updates of other writes.
//
// PutContent and Delete append a record (the path, and for a put the whole
// content) to the journal, wait until a group commit has synced it, and
// only then rename the new file into place or remove the old one. A crash
// can lose the rename or the removal but not the record: on the next start
// New replays every orphaned journal in order, makes the result durable and
// removes the journal. Readers never see a change before it is durable.
//
// A journal generation is checkpointed (the filesystem synced, the journal
// file removed) when it grows past journalRotateSize, when Close is called,
// and before any write that is not journaled (Writer, Move) touches a path
// that a live generation journaled: replaying that generation later would
// otherwise undo the newer write.
//
// Faults do not stop the journal. A failed write or fdatasync fails the
// commits of that batch only, retires the generation (see commit) and the
// next commit starts a fresh one; a generation that is full and cannot be
// replaced fails commits with the cause instead of growing. A failed
// checkpoint leaves its generation, and every newer one, live (replayed in
// order after a crash) and is retried at the next rotation, settle, Close
// or by the driver's probe.
//
// Only journals of an earlier boot are replayed: one whose process died
// while the machine ran on is finished without replay (see boot.go).
//
//	<root>/.journal/tmp/.tmp-*             PutContent's files before their
//	                                        rename; older than tempMaxAge:
//	                                        a crashed write's, removed
//	<root>/.journal/<opened>-<seq>-<pid>-<boot>
//	                                        one file per generation, locked by
//	                                        the process writing it; <opened>
//	                                        is when that process opened the
//	                                        journal, in hex nanoseconds, and
//	                                        <boot> the machine's boot it ran
//	                                        in (see boot.go; absent where it
//	                                        cannot be told)
const (
	journalDir       = ".journal"
	journalTempDir   = "tmp"
	journalMagic     = "berth-journal-1\n"
	maxJournalRecord = 64 << 20
)

// journalRotateSize is the size past which a generation is checkpointed,
// and what its file is preallocated to (a variable for tests).
var journalRotateSize int64 = 2 << 20

// Journal record kinds.
const (
	opPut    byte = 'P'
	opDelete byte = 'D'
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errJournalClosed is returned by writes after Close.
var errJournalClosed = errors.New("filesystem driver: closed")

// journalWriteAt and journalSync write and flush a batch of records, and
// journalCreate creates a generation's file; tests replace them to inject
// faults.
var (
	journalWriteAt = func(f *os.File, b []byte, off int64) (int, error) { return f.WriteAt(b, off) }
	journalSync    = datasync
	journalCreate  = func(name string) (*os.File, error) {
		return osfile.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	}
)

type journal struct {
	m      *journalMetrics
	root   string // the driver's root; paths in records are driver paths
	dir    string // <root>/.journal
	tmp    string // <root>/.journal/tmp, PutContent's temp files
	seed   maphash.Seed
	opened int64 // UnixNano, the first part of this journal's file names

	mu        sync.Mutex
	cond      sync.Cond   // signalled when a generation's flush ends
	cur       *generation // takes new records; nil when none could be made
	spare     *generation // the next generation, prepared ahead; may be nil
	preparing bool        // a spare is being made
	live      []*generation
	// live holds the generations not yet checkpointed, oldest first; cur,
	// when not nil, is last. The others are retired: they take no record.
	next     int   // sequence of the next generation file
	usedSeq  int   // sequence of the newest generation made current
	ckErr    error // the last checkpoint's failure; nil once one succeeds
	closed   bool
	closeErr error
	bg       sync.WaitGroup // checkpoints and spare preparations running

	ckMu sync.Mutex // one checkpoint pass at a time, so they go oldest first
}

// generation is one journal file and the paths its records touch.
type generation struct {
	name string
	seq  int
	f    *os.File
	size int64

	buf               []byte // records appended but not yet written
	appended, durable int    // counts of records
	flushing          bool
	// failed is set when a flush of records durable+1..failedUpto failed;
	// the generation then takes no more records and is never flushed again.
	failed     error
	failedUpto int

	applying sync.WaitGroup // records committed but not yet applied
	// exact holds the hashes of journaled paths, above those of every
	// directory above them; paths lists them where syncAll needs names.
	exact, above map[uint64]struct{}
	paths        []string
}

func openJournal(root string, m *journalMetrics) (*journal, error) {
	j := &journal{m: m, root: root, dir: filepath.Join(root, journalDir), seed: maphash.MakeSeed(), opened: time.Now().UnixNano()}
	j.tmp = filepath.Join(j.dir, journalTempDir)
	j.cond.L = &j.mu
	if err := os.MkdirAll(j.tmp, 0o755); err != nil {
		return nil, err
	}
	if err := j.recover(); err != nil {
		return nil, fmt.Errorf("filesystem driver: replaying the journal in %s: %w", j.dir, err)
	}
	j.removeOldTemps()
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.currentLocked(); err != nil {
		return nil, err
	}
	return j, nil
}

// newGenerationLocked names the next generation; createGeneration makes
// it. Names sort by the time the journal was opened, then by sequence, so
// replay takes generations in the order they were written.
func (j *journal) newGenerationLocked() (name string, seq int) {
	seq = j.next
	j.next++
	name = fmt.Sprintf("%016x-%010d-%d", j.opened, seq, os.Getpid())
	if currentBoot != "" {
		name += "-" + currentBoot
	}
	return filepath.Join(j.dir, name), seq
}

// createGeneration creates, locks and preallocates a journal file.
func (j *journal) createGeneration(name string, seq int) (*generation, error) {
	f, err := journalCreate(name)
	if err != nil {
		return nil, err
	}
	err = lockFile(f)
	if err == nil {
		err = preallocate(f, journalRotateSize)
	}
	if err == nil {
		err = syncDir(j.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(name)
		return nil, err
	}
	return &generation{
		name: name, seq: seq, f: f, size: int64(len(journalMagic)),
		exact: map[uint64]struct{}{}, above: map[uint64]struct{}{},
	}, nil
}

// preallocate writes the magic and zeros up to size, durably.
func preallocate(f *os.File, size int64) error {
	w := bufio.NewWriterSize(f, 256<<10)
	if _, err := w.WriteString(journalMagic); err != nil {
		return err
	}
	zeros := make([]byte, 64<<10)
	for left := size - int64(len(journalMagic)); left > 0; left -= int64(len(zeros)) {
		if _, err := w.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Sync()
}

// currentLocked returns the generation that takes the next record. A
// generation past journalRotateSize is retired first (and checkpointed in
// the background), and the spare, or a new file, takes its place. When no
// new file can be made the commit fails with the cause, and the next one
// tries again: a generation never grows past its preallocated size by
// more than the records of the commits that filled it.
func (j *journal) currentLocked() (*generation, error) {
	if g := j.cur; g != nil && g.size < journalRotateSize {
		return g, nil
	}
	if j.cur != nil {
		j.cur = nil
		j.checkpointLaterLocked()
	}
	g := j.spare
	j.spare = nil
	if g == nil {
		var err error
		if g, err = j.createGeneration(j.newGenerationLocked()); err != nil {
			return nil, fmt.Errorf("filesystem driver: starting a journal file: %w", err)
		}
	}
	j.cur, j.usedSeq = g, g.seq
	j.live = append(j.live, g)
	if !j.preparing && !j.closed {
		j.preparing = true
		j.bg.Go(j.prepareSpare)
	}
	return g, nil
}

// prepareSpare makes the next generation's file in the background.
func (j *journal) prepareSpare() {
	j.mu.Lock()
	name, seq := j.newGenerationLocked()
	j.mu.Unlock()
	g, err := j.createGeneration(name, seq)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.preparing = false
	if err != nil {
		return // currentLocked makes one itself
	}
	// A generation made meanwhile with a higher sequence is in use: this
	// one would sort before it at replay, so it cannot follow it.
	if j.closed || j.spare != nil || seq < j.usedSeq {
		g.f.Close()
		os.Remove(g.name)
		return
	}
	j.spare = g
}

// checkpointLaterLocked checkpoints the retired generations in the
// background.
func (j *journal) checkpointLaterLocked() {
	if !j.closed { // else close checkpoints them
		j.bg.Go(func() { _ = j.checkpointRetired() })
	}
}

// commit appends a record and returns once it is durable. The caller
// applies the change and then calls the returned done.
//
// A failed write or fdatasync fails only the commits whose records were in
// that batch; nothing else is refused. Their callers apply nothing. What
// reached the generation's file is then unknown, so the generation is
// retired: it takes no more records, and it is checkpointed (the changes
// applied so far made durable, the file removed) so that its failed records
// are never replayed. Records appended to it after the failed batch was
// taken were never written; their commits go to the next generation. The
// only window in which a failed record can still reach the files is a
// crash before that checkpoint: then a write that was answered with an
// error may appear, which an error answer allows (and a retry of the same
// write makes no difference); an acknowledged write is never lost, since
// its generation is replayed or checkpointed whole.
func (j *journal) commit(op byte, p string, content []byte) (done func(), err error) {
	if len(content) > maxJournalRecord {
		return nil, fmt.Errorf("filesystem driver: %d bytes is more than a journal record holds", len(content))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		if j.closed {
			return nil, errJournalClosed
		}
		g, err := j.currentLocked()
		if err != nil {
			return nil, err
		}
		g.applying.Add(1)
		before := len(g.buf)
		g.buf = appendRecord(g.buf, op, p, content)
		g.size += int64(len(g.buf) - before)
		g.appended++
		me := g.appended
		j.track(g, p)

		for g.durable < me && g.failed == nil {
			if g.flushing {
				j.cond.Wait()
				continue
			}
			g.flushing = true
			batch, upto, off := g.buf, g.appended, g.size-int64(len(g.buf))
			g.buf = nil
			j.mu.Unlock()
			start := time.Now()
			_, werr := journalWriteAt(g.f, batch, off)
			if werr == nil {
				werr = journalSync(g.f)
			}
			j.m.flush.Observe(time.Since(start).Seconds())
			j.mu.Lock()
			g.flushing = false
			if werr != nil {
				g.failed = fmt.Errorf("filesystem driver: journal write failed: %w", werr)
				g.failedUpto = upto
				j.m.failures.Add(float64(upto - g.durable))
				g.buf = nil
				if j.cur == g {
					j.cur = nil
					j.checkpointLaterLocked()
				}
			} else {
				// Counted per batch, not per waiting commit: one atomic
				// add however many writes share the sync.
				j.m.commits.Add(float64(upto - g.durable))
				g.durable = upto
			}
			j.cond.Broadcast()
		}
		if g.durable >= me {
			return g.applying.Done, nil
		}
		g.applying.Done()
		if me <= g.failedUpto {
			return nil, g.failed
		}
		// Appended after the failed batch was taken: never written.
	}
}

// track notes that g journals p.
func (j *journal) track(g *generation, p string) {
	g.exact[maphash.String(j.seed, p)] = struct{}{}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		g.above[maphash.String(j.seed, d)] = struct{}{}
	}
	if !syncfsAvailable {
		g.paths = append(g.paths, p)
	}
}

// conflicts reports whether a live generation journaled p, a directory
// above p, or a path below p.
func (j *journal) conflicts(p string) bool {
	h := maphash.String(j.seed, p)
	var ups []uint64
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		ups = append(ups, maphash.String(j.seed, d))
	}
	for _, g := range j.live {
		if _, ok := g.exact[h]; ok {
			return true
		}
		if _, ok := g.above[h]; ok {
			return true
		}
		for _, u := range ups {
			if _, ok := g.exact[u]; ok {
				return true
			}
		}
	}
	return false
}

// settle is called before a write that bypasses the journal: when a live
// generation journaled a path it touches, the current generation is
// retired and every live generation is checkpointed first. On failure the
// write fails; the generations stay live and a later checkpoint retries.
func (j *journal) settle(paths ...string) error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return errJournalClosed
	}
	if !slices.ContainsFunc(paths, j.conflicts) {
		j.mu.Unlock()
		return nil
	}
	j.cur = nil // the next commit takes the spare or makes a file
	j.mu.Unlock()
	if err := j.checkpointRetired(); err != nil {
		return fmt.Errorf("filesystem driver: checkpointing the journal: %w", err)
	}
	return nil
}

// ensureCurrent makes a current generation if there is none (after a
// failure), so that a commit finds one ready.
func (j *journal) ensureCurrent() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return errJournalClosed
	}
	_, err := j.currentLocked()
	return err
}

// checkpointRetired checkpoints every retired generation, oldest first:
// it makes every change of the generation durable where it lives, then
// removes its file. Replaying an older generation after a newer one is
// gone could undo the newer one's writes, so a failure stops the pass
// with the older generation and every newer one still live (and still
// replayed, in order, after a crash); the next rotation, settle, Close or
// maintenance pass tries again.
func (j *journal) checkpointRetired() error {
	j.ckMu.Lock()
	defer j.ckMu.Unlock()
	for {
		j.mu.Lock()
		var g *generation
		if len(j.live) > 0 && j.live[0] != j.cur {
			g = j.live[0]
		}
		j.mu.Unlock()
		if g == nil {
			return nil
		}
		g.applying.Wait() // its last commits have applied their changes
		err := syncAll(j.root, g.paths)
		if err == nil {
			// Removed while still open and locked, so that no process
			// starting meanwhile can replay it.
			if err = os.Remove(g.name); errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		}
		if err == nil {
			err = syncDir(j.dir)
		}
		j.mu.Lock()
		if err != nil {
			j.ckErr = fmt.Errorf("filesystem driver: journal checkpoint failed: %w", err)
			j.mu.Unlock()
			return err
		}
		g.f.Close()
		j.live = j.live[1:]
		j.ckErr = nil
		j.mu.Unlock()
		j.m.checkpoints.Inc()
	}
}

// checkpointErr is the last checkpoint's failure, nil once one succeeded.
func (j *journal) checkpointErr() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.ckErr
}

// close checkpoints every generation. Later writes fail.
func (j *journal) close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return j.closeErr
	}
	j.closed = true
	j.cur = nil
	j.mu.Unlock()
	j.bg.Wait() // no spare is prepared, no checkpoint starts after this
	j.mu.Lock()
	if j.spare != nil {
		j.spare.f.Close()
		os.Remove(j.spare.name)
		j.spare = nil
	}
	j.mu.Unlock()
	err := j.checkpointRetired()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closeErr = err
	return err
}
