package proxy

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// allowedImports are the non-standard imports package proxy may use: the
// store it fills, the upstream client, digests. No gin: the registry
// serves HTTP, the proxy only fetches.
var allowedImports = map[string]bool{
	"github.com/berth-registry/berth/storage":                        true,
	"github.com/google/go-containerregistry/pkg/authn":               true,
	"github.com/google/go-containerregistry/pkg/name":                true,
	"github.com/google/go-containerregistry/pkg/v1/remote":           true,
	"github.com/google/go-containerregistry/pkg/v1/remote/transport": true,
	"github.com/opencontainers/go-digest":                            true,
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
			if strings.Contains(first, ".") && !allowedImports[path] {
				t.Errorf("%s imports %s, which is not on the allow-list of package proxy", name, path)
			}
		}
		checked++
	}
	if checked < 2 {
		t.Fatalf("checked only %d files; is the test running in the package directory?", checked)
	}
}
