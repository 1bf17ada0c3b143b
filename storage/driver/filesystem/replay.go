package filesystem

// What a crash leaves behind and how it is dealt with: the journal's
// record format, the replay at start-up of every journal no live process
// holds, and the removal at run time of leftovers of processes that died
// meanwhile (see journal.go for the write side).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/storage/driver"
)

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
// holds and that an earlier boot of the machine wrote, makes the result
// durable and removes the files; a journal of a process that died in this
// boot is made durable without replay (see boot.go). Each file stays
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
		replay := !sameBootAsNow(journalBoot(e.Name()))
		for _, r := range readRecords(f) {
			if replay {
				if err := j.apply(r); err != nil {
					return err
				}
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

// journalBoot is the boot part of a journal file's name, "" when it has
// none.
func journalBoot(name string) string {
	parts := strings.Split(name, "-")
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

// apply redoes a replayed record.
func (j *journal) apply(r record) error {
	if driver.CheckPath("replay", r.path) != nil {
		return fmt.Errorf("journal record with invalid path %q", r.path)
	}
	full := filepath.Join(j.root, filepath.FromSlash(r.path))
	switch r.op {
	case opPut:
		tmp, err := writeTemp(j.tmp, full, r.content)
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

// tempMaxAge is the age past which a temp file belongs to no write in
// progress: PutContent holds its file for the time of one journal commit
// (milliseconds), and nothing else writes there. A variable for tests.
var tempMaxAge = 10 * time.Minute

// deadJournalMinAge is the age below which an unlocked journal file is
// left alone at run time: a process creates its file and locks it a moment
// later, and must not lose it in between. A variable for tests.
var deadJournalMinAge = time.Minute

// removeOldTemps removes temp files older than tempMaxAge: those of
// writes that a crash or a failure interrupted. Errors are ignored: the
// next pass tries again.
func (j *journal) removeOldTemps() {
	entries, err := os.ReadDir(j.tmp)
	if err != nil {
		return
	}
	now := time.Now()
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() && now.Sub(info.ModTime()) > tempMaxAge {
			_ = os.Remove(filepath.Join(j.tmp, e.Name()))
		}
	}
}

// clean is the periodic pass: it removes old temp files, retries failed
// checkpoints, and finishes the journals of processes that died while this
// one runs. Such a journal must not be replayed now: this process may have
// written the same paths since, and replay would revert them. It need not
// be either: every record of it whose change was applied was applied
// before its process died, so the change is in this machine's page cache
// and needs only to be made durable (syncAll); a record whose change was
// never applied belongs to a write that was never acknowledged. (A crash
// of the machine leaves journals for the next start, which replays them
// all before serving.) A file is taken only when its lock can be taken,
// and only once it is older than deadJournalMinAge (see there); it stays
// locked until it is removed.
func (j *journal) clean() {
	j.removeOldTemps()
	if j.checkpointErr() != nil {
		_ = j.checkpointRetired()
	}
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return
	}
	own := fmt.Sprintf("%016x-", j.opened)
	now := time.Now()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, tempPrefix) || strings.HasPrefix(name, own) {
			continue
		}
		if info, err := e.Info(); err != nil || now.Sub(info.ModTime()) < deadJournalMinAge {
			continue
		}
		j.finishDead(filepath.Join(j.dir, name))
	}
}

// finishDead makes the applied changes of a dead process's journal file
// durable and removes the file, when no live process holds it.
func (j *journal) finishDead(name string) {
	f, err := osfile.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if lockFile(f) != nil {
		return // a live process writes it
	}
	var paths []string
	if !syncfsAvailable {
		for _, r := range readRecords(f) {
			paths = append(paths, r.path)
		}
	}
	if syncAll(j.root, paths) != nil {
		return
	}
	if os.Remove(name) == nil {
		_ = syncDir(j.dir)
	}
}
