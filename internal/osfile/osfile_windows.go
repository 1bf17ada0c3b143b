//go:build windows

package osfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// shareAll lets other handles read, write, rename and delete the file
// while this one is open: Unix's rules. os.OpenFile leaves out
// FILE_SHARE_DELETE, so a reader there blocks every rename over the file
// and its removal ("Access is denied", "sharing violation").
const shareAll = windows.FILE_SHARE_READ | windows.FILE_SHARE_WRITE | windows.FILE_SHARE_DELETE

// OpenFile opens a file like os.OpenFile, sharing it for deletion. It
// takes os.O_RDONLY, O_WRONLY, O_RDWR, O_CREATE, O_EXCL, O_TRUNC and
// O_APPEND. The handle is not inherited by child processes.
func OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(longPath(name))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	var access uint32
	switch flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR) {
	case os.O_RDONLY:
		access = windows.GENERIC_READ
	case os.O_WRONLY:
		access = windows.GENERIC_WRITE
	case os.O_RDWR:
		access = windows.GENERIC_READ | windows.GENERIC_WRITE
	}
	if flag&os.O_CREATE != 0 {
		access |= windows.GENERIC_WRITE
	}
	if flag&os.O_APPEND != 0 && flag&os.O_TRUNC == 0 {
		// Every right GENERIC_WRITE grants but FILE_WRITE_DATA: each
		// write then goes to the end of the file.
		access &^= windows.GENERIC_WRITE
		access |= windows.FILE_APPEND_DATA | windows.FILE_WRITE_ATTRIBUTES | windows.FILE_WRITE_EA |
			windows.STANDARD_RIGHTS_WRITE | windows.SYNCHRONIZE
	}
	var disposition uint32
	switch {
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		disposition = windows.CREATE_NEW
	case flag&(os.O_CREATE|os.O_TRUNC) == os.O_CREATE|os.O_TRUNC:
		disposition = windows.CREATE_ALWAYS
	case flag&os.O_CREATE != 0:
		disposition = windows.OPEN_ALWAYS
	case flag&os.O_TRUNC != 0:
		disposition = windows.TRUNCATE_EXISTING
	default:
		disposition = windows.OPEN_EXISTING
	}
	attrs := uint32(windows.FILE_ATTRIBUTE_NORMAL)
	if perm&0o200 == 0 && flag&os.O_CREATE != 0 {
		attrs = windows.FILE_ATTRIBUTE_READONLY
	}
	if access == windows.GENERIC_READ {
		attrs |= windows.FILE_FLAG_BACKUP_SEMANTICS // directories open too, as with os.Open
	}
	h, err := windows.CreateFile(p, access, shareAll, nil, disposition, attrs, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(h), name), nil
}

// ReadFile reads the whole file, like os.ReadFile.
func ReadFile(name string) ([]byte, error) {
	f, err := Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// fileRenameInformationEx is FILE_RENAME_INFORMATION as
// NtSetInformationFile takes it with FileRenameInformationEx: Flags,
// the directory the name is relative to, and the name's length in bytes;
// the name itself follows.
type fileRenameInformationEx struct {
	Flags          uint32
	RootDirectory  windows.Handle
	FileNameLength uint32
	FileName       [1]uint16
}

// fileRenameInformationExClass is FileRenameInformationEx (Windows 10 1709
// and Windows Server 2019 on).
const fileRenameInformationExClass = 65

// Rename renames oldpath to newpath, replacing newpath even while it is
// open (with FILE_SHARE_DELETE, as this package opens files): the rename
// has POSIX semantics, so open handles keep the old file.
//
// Where Windows or the file system has no POSIX rename (before Windows 10
// 1709 and Server 2019; FAT; some container volume filters; Wine 8), a
// file cannot be replaced while anyone has it open, whatever the sharing
// mode: Windows itself gives no other way there. Rename then retries the
// plain rename for a bounded time while the target is held open. The
// files Berth replaces are held by readers for the time of one small read.
func Rename(oldpath, newpath string) error {
	err := renamePosix(oldpath, newpath)
	if errors.Is(err, errNoPosixRename) {
		return renameLegacy(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// legacyWait bounds how long a rename or a removal waits for readers to
// close what it replaces or removes, where Windows has no POSIX semantics.
const legacyWait = 2 * time.Second

func renameLegacy(oldpath, newpath string) error {
	return whileInUse(func() error { return os.Rename(oldpath, newpath) })
}

// whileInUse runs op until it no longer fails because a file is open, for
// legacyWait at most.
func whileInUse(op func() error) error {
	deadline := time.Now().Add(legacyWait)
	for wait := 100 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
		err := op()
		if err == nil || !isInUse(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
	}
}

// isInUse reports whether err is Windows' answer to touching a file that
// another handle has open: the file itself, or a directory that still
// holds a file whose deletion waits for its last handle to close.
func isInUse(err error) bool {
	return errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_SHARING_VIOLATION) ||
		errors.Is(err, windows.ERROR_DIR_NOT_EMPTY)
}

// RemoveAll removes path and everything below it, like os.RemoveAll,
// which on Windows deletes with POSIX semantics: a file that is open
// (with FILE_SHARE_DELETE) goes at once. Where Windows has no POSIX
// deletion, a file open elsewhere stays until its last handle closes, and
// so does its directory; RemoveAll then retries for a bounded time, like
// Rename.
func RemoveAll(path string) error {
	return whileInUse(func() error { return os.RemoveAll(path) })
}

var errNoPosixRename = errors.New("no POSIX rename here")

func renamePosix(oldpath, newpath string) error {
	src, err := openForMeta(oldpath, windows.DELETE|windows.SYNCHRONIZE)
	if err != nil {
		return err
	}
	defer windows.CloseHandle(src)
	dir, err := openForMeta(filepath.Dir(newpath), windows.FILE_LIST_DIRECTORY|windows.SYNCHRONIZE)
	if err != nil {
		return err
	}
	defer windows.CloseHandle(dir)

	name, err := windows.UTF16FromString(filepath.Base(newpath))
	if err != nil {
		return err
	}
	name = name[:len(name)-1] // no terminating NUL: the length says where it ends
	var info fileRenameInformationEx
	size := int(unsafe.Offsetof(info.FileName)) + 2*len(name)
	buf := make([]uint64, (size+7)/8) // 8-byte aligned, as the handle field needs
	ri := (*fileRenameInformationEx)(unsafe.Pointer(&buf[0]))
	ri.Flags = windows.FILE_RENAME_REPLACE_IF_EXISTS | windows.FILE_RENAME_POSIX_SEMANTICS
	ri.RootDirectory = dir
	ri.FileNameLength = uint32(2 * len(name))
	copy(unsafe.Slice(&ri.FileName[0], len(name)), name)

	var iosb windows.IO_STATUS_BLOCK
	err = windows.NtSetInformationFile(src, &iosb, (*byte)(unsafe.Pointer(&buf[0])), uint32(size), fileRenameInformationExClass)
	switch err {
	case nil:
		return nil
	case windows.STATUS_INVALID_INFO_CLASS, // Windows before 10 1709 / Server 2019
		windows.STATUS_NOT_IMPLEMENTED,   // likewise, as some emulations say it (Wine 8)
		windows.STATUS_INVALID_PARAMETER, // a flag this Windows does not know
		windows.STATUS_NOT_SUPPORTED:     // a file system without POSIX renames (FAT)
		return errNoPosixRename
	}
	if st, ok := err.(windows.NTStatus); ok {
		return st.Errno()
	}
	return err
}

// openForMeta opens a file or directory for renaming or as a rename's
// target directory, without following a final symbolic link.
func openForMeta(name string, access uint32) (windows.Handle, error) {
	p, err := windows.UTF16PtrFromString(longPath(name))
	if err != nil {
		return windows.InvalidHandle, err
	}
	return windows.CreateFile(p, access, shareAll, nil, windows.OPEN_EXISTING,
		windows.FILE_FLAG_BACKUP_SEMANTICS|windows.FILE_FLAG_OPEN_REPARSE_POINT, 0)
}

// longPath gives an absolute path of 248 characters or more the \\?\
// prefix, which lifts MAX_PATH; the os package does the same for its own
// calls. A registry's paths get long: repository names may have 255
// characters, under a data directory and the layout's own levels.
func longPath(name string) string {
	if len(name) < 248 || !filepath.IsAbs(name) || strings.HasPrefix(name, `\\?\`) {
		return name
	}
	name = filepath.Clean(name)
	if strings.HasPrefix(name, `\\`) { // \\server\share\…
		return `\\?\UNC\` + name[2:]
	}
	return `\\?\` + name
}

// SyncDir does nothing on Windows: a directory cannot be opened for
// flushing there, and NTFS journals its metadata itself.
func SyncDir(string) error { return nil }

// makePrivate gives name a protected access list (nothing inherited from
// its folder) that lets only the current user, SYSTEM and the
// Administrators group open it: what mode 0600 means on Unix. Windows has
// no mode bits; without this a key or password file inherits its
// folder's list, which on most folders lets every local user read it.
func makePrivate(name string) error {
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return err
	}
	sd, err := windows.SecurityDescriptorFromString("D:P(A;;FA;;;" + user.User.Sid.String() + ")(A;;FA;;;SY)(A;;FA;;;BA)")
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(longPath(name), windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}

// IsPrivate reports whether only the file's owner (with SYSTEM and the
// Administrators group) may open it: its access list is protected from
// inheritance and allows no one else.
func IsPrivate(name string) (bool, error) {
	sd, err := windows.GetNamedSecurityInfo(longPath(name), windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION|windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return false, err
	}
	control, _, err := sd.Control()
	if err != nil || control&windows.SE_DACL_PROTECTED == 0 {
		return false, err
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return false, err
	}
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return false, err
	}
	dacl, _, err := sd.DACL()
	if err != nil || dacl == nil { // a nil list allows everyone
		return false, err
	}
	allowed := map[string]bool{owner.String(): true, user.User.Sid.String(): true, "S-1-5-18": true, "S-1-5-32-544": true}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return false, err
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE {
			continue
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if !allowed[sid.String()] {
			return false, nil
		}
	}
	return true, nil
}

// Lock takes an exclusive lock on the file name, creating it if needed,
// and waits while another process or another Lock holds it. The lock ends
// with unlock, or when the process dies.
func Lock(name string) (unlock func(), err error) {
	f, err := OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	var ol windows.Overlapped
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, &ol); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "lock", Path: name, Err: err}
	}
	return func() { f.Close() }, nil
}

// ProcessAlive reports whether a process with this id runs on this
// machine.
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return errors.Is(err, windows.ERROR_ACCESS_DENIED)
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return true
	}
	const stillActive = 259
	return code == stillActive
}

// PIDNamespace is "" on Windows, where it cannot be told.
func PIDNamespace() string { return "" }
