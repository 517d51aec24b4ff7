//go:build !demo

package main

import "github.com/spf13/cobra"

// demoCommand is nil without -tags demo: `go run -tags demo ./cmd/outboxrelay
// demo` runs the demo (demo.go).
func demoCommand(*logOptions) *cobra.Command { return nil }
