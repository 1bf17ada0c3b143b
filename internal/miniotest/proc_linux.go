package miniotest

import (
	"os/exec"
	"syscall"
)

// diesWithTest has the kernel kill the server when the test binary that
// started it exits: nothing stops a Shared server otherwise, and every
// test run on the machine would leave one running.
func diesWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
