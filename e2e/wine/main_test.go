// Package wine runs Berth's Windows builds under Wine (see
// internal/winetest): every package's tests, the two servers end to end,
// and a loop of kills and restarts. Without Wine the tests skip, saying how
// to get it; with CI=true they fail instead.
package wine

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-registry/berth/internal/winetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	winetest.Close()
	os.Exit(code)
}

// moduleRoot is the repository's root: two levels up.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return root
}
