package wine

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/winetest"
)

// Every package's tests, built for windows/amd64, run under Wine and pass,
// each in its own source directory as go test runs them.
func TestPackagesUnderWine(t *testing.T) {
	w := winetest.Need(t)
	root := moduleRoot(t)
	golist := exec.Command("go", "list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}", "./...")
	golist.Dir = root
	list, err := golist.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	bin := t.TempDir()
	var ran int
	for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		pkg, dir, _ := strings.Cut(line, " ")
		if dir == "" || strings.HasSuffix(pkg, "/e2e/wine") {
			continue // this package runs the others
		}
		if strings.HasSuffix(pkg, "/internal/miniotest") {
			continue // its only test is Linux's (a server that dies with its parent)
		}
		if strings.HasSuffix(pkg, "/e2e/browser") {
			continue // drives Debian's chromium, a Linux program (package ui's own HTTP tests do run under Wine)
		}
		name := strings.ReplaceAll(strings.TrimPrefix(pkg, "github.com/berth-registry/berth/"), "/", "_")
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			exe := filepath.Join(bin, name+".test.exe")
			if err := w.Go(ctx, root, "test", "-c", "-o", exe, pkg); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			cmd := w.Command(ctx, exe, "-test.v", "-test.timeout=25m")
			cmd.Dir = dir
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			passed, failed, skipped := counts(out.String())
			t.Logf("%s under Wine: %d passed, %d failed, %d skipped in %s", pkg, passed, failed, skipped, time.Since(start).Round(100*time.Millisecond))
			if err != nil || failed > 0 || !strings.Contains(out.String(), "\nPASS") {
				t.Fatalf("%s failed under Wine (%v):\n%s", pkg, err, failures(out.String()))
			}
			if skips := skipReasons(out.String()); skips != "" {
				t.Logf("skipped:\n%s", skips)
			}
		})
		ran++
	}
	if ran < 10 {
		t.Fatalf("ran the tests of %d packages only", ran)
	}
}

var resultLine = regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): `)

func counts(out string) (passed, failed, skipped int) {
	for _, m := range resultLine.FindAllStringSubmatch(out, -1) {
		switch m[1] {
		case "PASS":
			passed++
		case "FAIL":
			failed++
		case "SKIP":
			skipped++
		}
	}
	return
}

// failures keeps the lines of a test binary's output worth reading when it
// failed: everything but the runs and passes.
func failures(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "=== ") || strings.Contains(l, "--- PASS") {
			continue
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// skipReasons lists the skipped tests with the line after each (the reason).
func skipReasons(out string) string {
	lines := strings.Split(out, "\n")
	var b strings.Builder
	for i, l := range lines {
		if strings.Contains(l, "--- SKIP") {
			b.WriteString(strings.TrimSpace(l))
			if i+1 < len(lines) {
				b.WriteString(": " + strings.TrimSpace(lines[i+1]))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
