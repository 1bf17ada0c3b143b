//go:build unix

package main

import "syscall"

// flushDirtyPages writes the page cache back so the next test does not pay
// for the previous one's writeback.
func flushDirtyPages() { syscall.Sync() }
