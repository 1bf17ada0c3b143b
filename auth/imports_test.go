package auth

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// allowedImports are the non-standard imports package auth may use. gin in
// particular must never appear: the registry imports auth for verification.
// internal/osfile is the standard library's file functions with Windows
// given Unix's sharing rules.
var allowedImports = map[string]bool{
	"github.com/golang-jwt/jwt/v5":                    true,
	"golang.org/x/crypto/bcrypt":                      true,
	"github.com/berth-registry/berth/internal/osfile": true,
}

func TestImportAllowList(t *testing.T) {
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
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			if !allowedImports[path] {
				t.Errorf("%s imports %s, which is not on the allow-list of package auth", name, path)
			}
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("checked only %d files; is the test running in the package directory?", checked)
	}
}
