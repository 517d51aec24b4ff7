//go:build !linux

package main

import (
	"io"
	"os"
)

// isTerminal reports whether r is a character device, as a terminal is
// (elsewhere than on Linux /dev/null passes too; reading it then answers
// no).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
