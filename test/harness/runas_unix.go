//go:build unix

package harness

import (
	"os/exec"
	"syscall"
)

// runAs makes cmd run as u.
func runAs(cmd *exec.Cmd, u *osUser) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.Uid, Gid: u.Gid}}
}
