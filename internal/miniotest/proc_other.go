//go:build !linux

package miniotest

import "os/exec"

// diesWithTest does nothing where the system offers no parent-death
// signal: a Shared server outlives the test binary there.
func diesWithTest(*exec.Cmd) {}
