package filesystem

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/storage/driver"
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
//	<root>/.journal/<opened>-<seq>-<pid>   one file per generation, locked by
//	                                        the process writing it; <opened>
//	                                        is when that process opened the
//	                                        journal, in hex nanoseconds
const (
	journalDir       = ".journal"
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

type journal struct {
	root   string // the driver's root; paths in records are driver paths
	dir    string // <root>/.journal
	seed   maphash.Seed
	opened int64 // UnixNano, the first part of this journal's file names

	mu     sync.Mutex
	cond   sync.Cond // signalled when a generation's flush ends
	cur    *generation
	spare  *generation   // the next generation, prepared ahead; may be nil
	live   []*generation // not yet checkpointed, oldest first (cur is last)
	next   int           // sequence of the next generation file
	err    error         // sticky: after a failed write the journal's state is unknown
	closed bool
	bg     sync.WaitGroup // checkpoints and spare preparations running
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

	applying sync.WaitGroup // records committed but not yet applied
	prev     *generation    // checkpointed before this one; nil for the first
	// exact holds the hashes of journaled paths, above those of every
	// directory above them; paths lists them where syncAll needs names.
	exact, above map[uint64]struct{}
	paths        []string
	checkpointed chan struct{}
}

func openJournal(root string) (*journal, error) {
	j := &journal{root: root, dir: filepath.Join(root, journalDir), seed: maphash.MakeSeed(), opened: time.Now().UnixNano()}
	j.cond.L = &j.mu
	if err := os.MkdirAll(j.dir, 0o755); err != nil {
		return nil, err
	}
	if err := j.recover(); err != nil {
		return nil, fmt.Errorf("filesystem driver: replaying the journal in %s: %w", j.dir, err)
	}
	name, seq := j.newGenerationLocked()
	g, err := j.createGeneration(name, seq)
	if err != nil {
		return nil, err
	}
	j.cur, j.live = g, []*generation{g}
	j.bg.Go(j.prepareSpare)
	return j, nil
}

// newGenerationLocked names the next generation; createGeneration makes
// it. Names sort by the time the journal was opened, then by sequence, so
// replay takes generations in the order they were written.
func (j *journal) newGenerationLocked() (name string, seq int) {
	seq = j.next
	j.next++
	return filepath.Join(j.dir, fmt.Sprintf("%016x-%010d-%d", j.opened, seq, os.Getpid())), seq
}

// createGeneration creates, locks and preallocates a journal file.
func (j *journal) createGeneration(name string, seq int) (*generation, error) {
	f, err := osfile.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
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
		checkpointed: make(chan struct{}),
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

// prepareSpare makes the next generation's file in the background.
func (j *journal) prepareSpare() {
	j.mu.Lock()
	name, seq := j.newGenerationLocked()
	j.mu.Unlock()
	g, err := j.createGeneration(name, seq)
	if err != nil {
		return // rotateLocked makes one itself
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.spare != nil || seq < j.cur.seq {
		g.f.Close()
		os.Remove(g.name)
		return
	}
	j.spare = g
}

// commit appends a record and returns once it is durable. The caller
// applies the change and then calls the returned done.
func (j *journal) commit(op byte, p string, content []byte) (done func(), err error) {
	if len(content) > maxJournalRecord {
		return nil, fmt.Errorf("filesystem driver: %d bytes is more than a journal record holds", len(content))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, errJournalClosed
	}
	if j.err != nil {
		return nil, j.err
	}
	g := j.cur
	g.applying.Add(1)
	before := len(g.buf)
	g.buf = appendRecord(g.buf, op, p, content)
	g.size += int64(len(g.buf) - before)
	g.appended++
	me := g.appended
	j.track(g, p)

	for g.durable < me && j.err == nil {
		if g.flushing {
			j.cond.Wait()
			continue
		}
		g.flushing = true
		batch, upto, off := g.buf, g.appended, g.size-int64(len(g.buf))
		g.buf = nil
		j.mu.Unlock()
		_, werr := g.f.WriteAt(batch, off)
		if werr == nil {
			werr = datasync(g.f)
		}
		j.mu.Lock()
		g.flushing = false
		if werr != nil {
			// What reached the file is unknown after a failed write or
			// fsync: refuse further writes until a restart replays it.
			j.err = fmt.Errorf("filesystem driver: journal write failed, restart to recover: %w", werr)
		} else {
			g.durable = upto
		}
		j.cond.Broadcast()
	}
	if g.durable < me {
		g.applying.Done()
		return nil, j.err
	}
	if g == j.cur && g.size >= journalRotateSize && !j.closed {
		_ = j.rotateLocked() // on failure, the next commit tries again
	}
	return g.applying.Done, nil
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
// generation journaled a path it touches, every live generation is
// checkpointed first.
func (j *journal) settle(paths ...string) error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return errJournalClosed
	}
	conflict := slices.ContainsFunc(paths, j.conflicts)
	if !conflict {
		j.mu.Unlock()
		return nil
	}
	last := j.cur
	if err := j.rotateLocked(); err != nil {
		j.mu.Unlock()
		return fmt.Errorf("filesystem driver: checkpointing the journal: %w", err)
	}
	j.mu.Unlock()
	<-last.checkpointed
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// rotateLocked starts a new generation and checkpoints the current one in
// the background. If the new file cannot be made, the current generation
// goes on (and is checkpointed at a later rotation).
func (j *journal) rotateLocked() error {
	g := j.spare
	j.spare = nil
	if g == nil {
		var err error
		if g, err = j.createGeneration(j.newGenerationLocked()); err != nil {
			return err
		}
	}
	old := j.cur
	g.prev = old
	j.cur = g
	j.live = append(j.live, g)
	j.bg.Go(func() { j.checkpoint(old) })
	j.bg.Go(j.prepareSpare)
	return nil
}

// checkpoint makes every change of g durable where it lives, then removes
// g's file. g receives no new records. Generations are checkpointed oldest
// first: replaying an older one after a newer one is gone could undo the
// newer one's writes.
func (j *journal) checkpoint(g *generation) {
	if g.prev != nil {
		<-g.prev.checkpointed
	}
	g.applying.Wait()
	j.mu.Lock()
	err := j.err
	j.mu.Unlock()
	if err == nil {
		err = syncAll(j.root, g.paths)
	}
	if err == nil {
		g.f.Close()
		err = os.Remove(g.name)
		if err == nil {
			err = syncDir(j.dir)
		}
	}
	j.mu.Lock()
	if err != nil && j.err == nil {
		j.err = fmt.Errorf("filesystem driver: journal checkpoint failed, restart to recover: %w", err)
	}
	if err == nil {
		j.live = slices.DeleteFunc(j.live, func(x *generation) bool { return x == g })
	}
	j.mu.Unlock()
	close(g.checkpointed)
}

// close checkpoints every generation. Later writes fail.
func (j *journal) close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return j.err
	}
	j.closed = true
	last := j.cur
	if j.spare != nil {
		j.spare.f.Close()
		os.Remove(j.spare.name)
		j.spare = nil
	}
	j.mu.Unlock()
	j.checkpoint(last)
	j.bg.Wait()
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// appendRecord encodes one record: its payload's length and CRC-32C, then
// the payload (kind, path length, path, content).
func appendRecord(b []byte, op byte, p string, content []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, 0) // length, set below
	b = binary.LittleEndian.AppendUint32(b, 0) // checksum, set below
	b = append(b, op)
	b = binary.AppendUvarint(b, uint64(len(p)))
	b = append(b, p...)
	b = append(b, content...)
	payload := b[start+8:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, crcTable))
	return b
}

// record is one decoded journal record.
type record struct {
	op      byte
	path    string
	content []byte
}

// readRecords decodes the records of a journal file. A torn or corrupt
// record ends the file: it was never acknowledged, and nothing after it
// was either.
func readRecords(r io.Reader) []record {
	br := bufio.NewReader(r)
	magic := make([]byte, len(journalMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != journalMagic {
		return nil // created but never written: nothing to replay
	}
	var out []record
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return out
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n < 2 || n > maxJournalRecord+1024 {
			return out
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return out
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
			return out
		}
		plen, k := binary.Uvarint(payload[1:])
		if k <= 0 || uint64(len(payload)-1-k) < plen {
			return out
		}
		p := string(payload[1+k : 1+k+int(plen)])
		out = append(out, record{op: payload[0], path: p, content: payload[1+k+int(plen):]})
	}
}

// recover replays, oldest first, every journal file that no live process
// holds, makes the result durable and removes the files. Each file stays
// open and locked until it is removed, so another process starting on the
// same directory cannot replay it a second time, over writes made since:
// the files are opened sharing deletion, which lets Windows remove a file
// that is open, as Unix does.
func (j *journal) recover() error {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var touched []string
	for _, e := range entries { // ReadDir sorts by name: by start time
		if e.IsDir() || strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		f, err := osfile.OpenFile(filepath.Join(j.dir, e.Name()), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		if lockFile(f) != nil { // another process is writing it
			f.Close()
			continue
		}
		files = append(files, f)
		for _, r := range readRecords(f) {
			if err := j.apply(r); err != nil {
				return err
			}
			touched = append(touched, r.path)
		}
	}
	if len(files) == 0 {
		return nil
	}
	if err := syncAll(j.root, touched); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return syncDir(j.dir)
}

// apply redoes a replayed record.
func (j *journal) apply(r record) error {
	if driver.CheckPath("replay", r.path) != nil {
		return fmt.Errorf("journal record with invalid path %q", r.path)
	}
	full := filepath.Join(j.root, filepath.FromSlash(r.path))
	switch r.op {
	case opPut:
		tmp, err := writeTemp(full, r.content)
		if err != nil {
			return err
		}
		if err := osfile.Rename(tmp, full); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	case opDelete:
		return osfile.RemoveAll(full)
	}
	return fmt.Errorf("journal record of unknown kind %q", r.op)
}
