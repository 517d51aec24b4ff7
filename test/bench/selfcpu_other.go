//go:build !unix

package main

// selfCPU is unknown (0) where getrusage(2) is missing; the benchmark's
// broker CPU column then reads 0.
func selfCPU() float64 { return 0 }
