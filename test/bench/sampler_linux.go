//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procSample reads a process's user and system CPU seconds so far and its
// resident set in MiB from /proc.
func procSample(pid int) (cpuSeconds, rssMiB float64, ok bool) {
	cpuSeconds = procCPU(pid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, err := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return cpuSeconds, kb / 1024, err == nil
		}
	}
	return 0, 0, false
}
