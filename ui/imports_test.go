package ui

import (
	"testing"

	"github.com/berth-registry/berth/internal/testutil"
)

// Package ui may import the content it shows, the token types it checks
// and the events it sends. Not gin (the pages are net/http handlers) and
// not registry (which mounts them).
func TestImports(t *testing.T) {
	testutil.CheckImports(t, 5,
		"github.com/berth-registry/berth/auth",
		"github.com/berth-registry/berth/notify",
		"github.com/berth-registry/berth/storage",
		"github.com/berth-registry/berth/storage/driver",
		"github.com/opencontainers/go-digest",
		"github.com/opencontainers/image-spec/specs-go/v1",
		"golang.org/x/sync/errgroup",
	)
}
