//go:build !unix

package main

// flushDirtyPages does nothing where there is no sync(2).
func flushDirtyPages() {}
