//go:build !linux

package main

import "os/exec"

// setProcAttr has nothing to add outside Linux.
func setProcAttr(*exec.Cmd) {}
