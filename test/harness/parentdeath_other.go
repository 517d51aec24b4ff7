//go:build !linux

package harness

import "os/exec"

// dieWithParent does nothing off Linux, which has no parent-death signal:
// Close stops the broker, and a killed test leaves it running.
func dieWithParent(*exec.Cmd) {}
