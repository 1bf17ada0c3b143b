package ui

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// uiImports are the non-standard packages ui may import: the content it
// shows, the token types it checks, the events it sends. Not gin (the
// pages are net/http handlers) and not registry (which mounts them).
var uiImports = map[string]bool{
	"github.com/berth-registry/berth/auth":             true,
	"github.com/berth-registry/berth/notify":           true,
	"github.com/berth-registry/berth/storage":          true,
	"github.com/berth-registry/berth/storage/driver":   true,
	"github.com/opencontainers/go-digest":              true,
	"github.com/opencontainers/image-spec/specs-go/v1": true,
	"golang.org/x/sync/errgroup":                       true,
}

func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") && !uiImports[p] {
				t.Errorf("%s imports %s, not on ui's list", file, p)
			}
		}
		n++
	}
	if n < 5 {
		t.Fatalf("checked %d files", n)
	}
}
