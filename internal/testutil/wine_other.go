//go:build !windows

package testutil

import "testing"

// UnderWine reports whether this Windows program runs under Wine: never,
// on this system.
func UnderWine() bool { return false }

// SkipUnderWine skips the test under Wine; it never does on this system.
func SkipUnderWine(testing.TB, string) {}
