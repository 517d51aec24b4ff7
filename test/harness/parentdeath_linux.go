package harness

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd when the calling process dies, even
// by SIGKILL, so no broker outlives a killed test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
