package testutil

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// CheckImports fails the test if a non-test Go file of the package in the
// current directory imports a module outside the standard library that is
// not in allowed, or if fewer than minFiles files were checked (the test
// is then not running in the package's directory).
func CheckImports(t testing.TB, minFiles int, allowed ...string) {
	t.Helper()
	ok := make(map[string]bool, len(allowed))
	for _, a := range allowed {
		ok[a] = true
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if strings.Contains(first, ".") && !ok[path] { // a dot: not the standard library
				t.Errorf("%s imports %s, which is not on the package's allow-list", name, path)
			}
		}
		checked++
	}
	if checked < minFiles {
		t.Fatalf("checked only %d files; is the test running in the package directory?", checked)
	}
}
