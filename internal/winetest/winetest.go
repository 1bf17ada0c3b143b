// Package winetest runs Berth's Windows builds under Wine, on Linux. Wine
// gives a Windows program Windows' own file-sharing rules (an open file
// cannot be renamed over or removed unless it was opened to allow it), so
// the defects those rules cause show up here as they would on Windows.
//
// Two gaps of Debian's Wine 8 are bridged, neither by changing what runs on
// real Windows:
//
//   - Go 1.22 and later need ProcessPrng from bcryptprimitives.dll, which
//     Wine 8 lacks. A small DLL built with mingw-w64 exports it over
//     advapi32's SystemFunction036 (RtlGenRandom) and goes into the
//     prefix's system32, where Go looks for it.
//   - Go 1.25 and later remove files with FileDispositionInformationEx
//     (Windows 10 1607 on), which Wine 8 answers with STATUS_NOT_IMPLEMENTED
//     instead of STATUS_INVALID_INFO_CLASS, so Go's own fallback for older
//     Windows does not start. Builds for Wine use a go build -overlay that
//     adds that status to the fallback's list; nothing else changes.
//
// Each test process makes a fresh Wine prefix once; Close removes it.
package winetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Wine runs Windows programs in one prefix.
type Wine struct {
	loader  string // the wine64 program
	server  string // wineserver, to stop the prefix
	prefix  string // WINEPREFIX
	overlay string // the go build -overlay file for builds run here
	goBin   string
}

var (
	once     sync.Once
	shared   *Wine
	setupErr error
)

// Need returns the process's Wine, setting it up on the first call. Where
// Wine or mingw-w64 is missing it skips the test, saying how to get them,
// or fails it when CI=true. -short skips it too: a run takes minutes.
func Need(t testing.TB) *Wine {
	t.Helper()
	if testing.Short() {
		t.Skip("Wine tests take minutes; not with -short")
	}
	once.Do(func() { shared, setupErr = setup() })
	if setupErr != nil {
		var missing *missingError
		if errors.As(setupErr, &missing) && os.Getenv("CI") != "true" {
			t.Skipf("%v; on Debian: apt-get install wine64 gcc-mingw-w64-x86-64", setupErr)
		}
		t.Fatal(setupErr)
	}
	return shared
}

// Close stops the prefix's wineserver and removes the prefix. Call it
// from TestMain after the tests ran.
func Close() {
	if shared == nil {
		return
	}
	cmd := exec.Command(shared.server, "-k")
	cmd.Env = shared.Env()
	_ = cmd.Run()
	_ = os.RemoveAll(shared.prefix)
}

type missingError struct{ what string }

func (e *missingError) Error() string { return e.what + " is not installed" }

func lookPath(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", &missingError{names[0]}
}

func setup() (*Wine, error) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return nil, &missingError{"Wine on linux/amd64"}
	}
	loader, err := lookPath("wine64", "/usr/lib/wine/wine64")
	if err != nil {
		return nil, err
	}
	server, err := lookPath("wineserver", "/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver")
	if err != nil {
		return nil, err
	}
	gcc, err := lookPath("x86_64-w64-mingw32-gcc")
	if err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, errors.New("winetest: no go command to build with")
	}
	prefix, err := os.MkdirTemp("", "berth-wine-")
	if err != nil {
		return nil, err
	}
	w := &Wine{loader: loader, server: server, prefix: prefix, goBin: goBin}
	fail := func(err error) (*Wine, error) {
		Close()
		os.RemoveAll(prefix)
		return nil, err
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	boot := exec.CommandContext(ctx, loader, "wineboot", "--init")
	boot.Env = w.Env()
	if out, err := boot.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("winetest: wineboot: %v\n%s", err, out))
	}

	// ProcessPrng for Go's crypto/rand.
	src := filepath.Join(prefix, "processprng")
	if err := os.WriteFile(src+".c", []byte(processPrngC), 0o644); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(src+".def", []byte(processPrngDef), 0o644); err != nil {
		return fail(err)
	}
	dll := filepath.Join(prefix, "drive_c", "windows", "system32", "bcryptprimitives.dll")
	if out, err := exec.CommandContext(ctx, gcc, "-shared", "-O2", "-o", dll, src+".c", src+".def").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("winetest: building bcryptprimitives.dll: %v\n%s", err, out))
	}

	if w.overlay, err = writeOverlay(ctx, goBin, prefix); err != nil {
		return fail(err)
	}
	fmt.Printf("winetest: prefix %s ready in %s\n", prefix, time.Since(start).Round(100*time.Millisecond))
	return w, nil
}

// The line of Go's internal/syscall/windows/at_windows.go that lists the
// statuses on which removal falls back to the older way, and what the
// overlay makes of it.
const (
	fallbackLine = "case STATUS_INVALID_INFO_CLASS, // the operating system doesn't support FileDispositionInformationEx"
	wineLine     = "case STATUS_INVALID_INFO_CLASS, NTStatus(0xC0000002), // and STATUS_NOT_IMPLEMENTED, as Wine 8 says it"
)

// writeOverlay writes, into dir, the -overlay file that replaces Go's
// at_windows.go with a copy whose removal fallback also takes Wine's
// status.
func writeOverlay(ctx context.Context, goBin, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, goBin, "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("winetest: go env GOROOT: %w", err)
	}
	orig := filepath.Join(strings.TrimSpace(string(out)), "src", "internal", "syscall", "windows", "at_windows.go")
	src, err := os.ReadFile(orig)
	if err != nil {
		return "", fmt.Errorf("winetest: %w", err)
	}
	if bytes.Count(src, []byte(fallbackLine)) != 1 {
		return "", fmt.Errorf("winetest: %s no longer has the line %q: see how this Go falls back from FileDispositionInformationEx and update the overlay", orig, fallbackLine)
	}
	patched := filepath.Join(dir, "at_windows.go")
	if err := os.WriteFile(patched, bytes.Replace(src, []byte(fallbackLine), []byte(wineLine), 1), 0o644); err != nil {
		return "", err
	}
	doc, _ := json.Marshal(map[string]map[string]string{"Replace": {orig: patched}})
	overlay := filepath.Join(dir, "overlay.json")
	return overlay, os.WriteFile(overlay, doc, 0o644)
}

// Env is the environment Wine programs run in: this prefix, no debug
// output, no prompts to install Mono or Gecko. CI, BERTH_MINIO_BIN and
// BERTH_DISTRIBUTION_BIN are left out: they make tests insist on Linux
// programs (Apache's htpasswd, Pebble, CNCF Distribution) that a Windows
// program cannot start, so those tests skip under Wine, saying so; their
// Linux runs are the ones that must not skip.
func (w *Wine) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, "BERTH_DISTRIBUTION_BIN=") && !strings.HasPrefix(kv, "BERTH_MINIO_BIN=") {
			env = append(env, kv)
		}
	}
	return append(env, "WINEPREFIX="+w.prefix, "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=")
}

// Go runs the go command in dir for windows/amd64 with the Wine overlay:
// Go("build", "-o", out, "./cmd/registry") or Go("test", "-c", …).
func (w *Wine) Go(ctx context.Context, dir string, args ...string) error {
	args = append([]string{args[0], "-overlay", w.overlay}, args[1:]...)
	cmd := exec.CommandContext(ctx, w.goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Command returns a command that runs the Windows program exe under Wine.
func (w *Wine) Command(ctx context.Context, exe string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, w.loader, append([]string{exe}, args...)...)
	cmd.Env = w.Env()
	return cmd
}

// processPrngC and processPrngDef make bcryptprimitives.dll: ProcessPrng
// (Windows 10 on) over RtlGenRandom, which Wine has.
const processPrngC = `#include <windows.h>

typedef BOOLEAN (WINAPI *rtl_gen_random)(PVOID, ULONG);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    static rtl_gen_random gen;
    if (!gen) {
        HMODULE advapi = LoadLibraryA("advapi32.dll");
        if (!advapi) return FALSE;
        gen = (rtl_gen_random)GetProcAddress(advapi, "SystemFunction036");
        if (!gen) return FALSE;
    }
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!gen(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
`

const processPrngDef = "LIBRARY bcryptprimitives\nEXPORTS\nProcessPrng\n"
