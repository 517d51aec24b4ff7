//go:build !unix

package harness

import "os/exec"

// runAs does nothing where processes have no Unix user IDs: the cluster
// runs as the caller, as it does for any caller but root.
func runAs(*exec.Cmd, *osUser) {}
