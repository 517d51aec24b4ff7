//go:build !linux

package main

// procSample cannot read another process's CPU time and resident set here
// without /proc; the steady scenario's resource columns then read "-".
func procSample(int) (cpuSeconds, rssMiB float64, ok bool) { return 0, 0, false }
