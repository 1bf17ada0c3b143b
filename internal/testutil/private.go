package testutil

import (
	"testing"

	"github.com/berth-registry/berth/internal/osfile"
)

// CheckPrivate fails the test unless only the owner of the file at name
// may open it (mode 0600 on Unix; an owner-only access list on Windows).
// Under Wine, which keeps no access lists, it checks nothing and says so.
func CheckPrivate(t testing.TB, name string) {
	t.Helper()
	if UnderWine() {
		t.Logf("under Wine: not checking that %s is private (Wine keeps no file access lists)", name)
		return
	}
	private, err := osfile.IsPrivate(name)
	if err != nil {
		t.Fatalf("checking that %s is private: %v", name, err)
	}
	if !private {
		t.Errorf("%s may be opened by others than its owner", name)
	}
}
