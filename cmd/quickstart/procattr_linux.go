package main

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel send SIGTERM to a server when quickstart
// dies without stopping it (killed with SIGKILL), so no server is left
// holding the ports.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
