package testutil

import (
	"testing"

	"golang.org/x/sys/windows"
)

// UnderWine reports whether this Windows program runs under Wine, which
// has Windows' file-sharing rules but, for example, keeps no file access
// lists.
func UnderWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// SkipUnderWine skips the test under Wine, saying why.
func SkipUnderWine(t testing.TB, why string) {
	t.Helper()
	if UnderWine() {
		t.Skip("under Wine: " + why)
	}
}
