//go:build !linux

package main

import "time"

// threadCPU is not measured here: limitRecv falls back to wall time.
func threadCPU() time.Duration { return 0 }
