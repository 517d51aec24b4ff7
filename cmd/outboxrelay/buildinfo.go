package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// linkVersion and linkCommit are set at link time by builds that have no
// VCS information to stamp (the Dockerfile builds without .git):
//
//	go build -ldflags "-X main.linkVersion=v1.2.0 -X main.linkCommit=3f2a..." ./cmd/outboxrelay
//
// They are never written at run time; when empty, the values Go stamped into
// the binary are used.
var linkVersion, linkCommit string

// build describes the running binary.
type build struct {
	Version    string `json:"version" yaml:"version"`
	Commit     string `json:"commit" yaml:"commit"`
	CommitTime string `json:"commit_time,omitempty" yaml:"commit_time,omitempty"`
	Dirty      bool   `json:"dirty" yaml:"dirty"`
	GoVersion  string `json:"go_version" yaml:"go_version"`
	Platform   string `json:"platform" yaml:"platform"`
}

// parseBuild reads what Go stamped into a binary: the main module's version
// (a tag, or a pseudo-version for a commit; "(devel)" when built without
// VCS information), and vcs.revision, vcs.time and vcs.modified. The linked
// values, when set, win.
func parseBuild(bi *debug.BuildInfo, ok bool, linkedVersion, linkedCommit string) build {
	b := build{Version: "devel", Commit: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if ok && bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		}
		if bi.GoVersion != "" {
			b.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.CommitTime = s.Value
			case "vcs.modified":
				b.Dirty = s.Value == "true"
			}
		}
	}
	if linkedVersion != "" {
		b.Version = linkedVersion
	}
	if linkedCommit != "" {
		b.Commit = linkedCommit
	}
	return b
}

// currentBuild describes this binary.
func currentBuild() build {
	bi, ok := debug.ReadBuildInfo()
	return parseBuild(bi, ok, linkVersion, linkCommit)
}

// readBuildInfo is the version, commit and Go version of this binary, as
// `outboxrelay version`, the startup log line and the build_info metric
// show them.
func readBuildInfo() (version, commit, goVersion string) {
	b := currentBuild()
	return b.Version, b.Commit, b.GoVersion
}

// String is the one-line form --version prints.
func (b build) String() string {
	dirty := ""
	if b.Dirty {
		dirty = ", dirty"
	}
	return fmt.Sprintf("%s (commit %s%s, %s, %s)", b.Version, b.Commit, dirty, b.GoVersion, b.Platform)
}

// logAttrs are the build's fields for the startup log line.
func (b build) logAttrs() []any {
	return []any{"version", b.Version, "commit", b.Commit, "dirty", b.Dirty, "go", b.GoVersion}
}

func newVersionCmd() *cobra.Command {
	var out output
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Long: `Prints what the binary was built from: its version (a release tag, or Go's
pseudo-version of the commit), the commit, whether the working tree had
uncommitted changes (dirty), and the Go version and platform it was built with.
The startup log line of run and the outboxrelay_build_info metric carry the same values.`,
		Example: `  outboxrelay version
  outboxrelay version -o json
  outboxrelay --version`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			b := currentBuild()
			return out.print(cmd.OutOrStdout(), b, func(w io.Writer) {
				fmt.Fprintf(w, "version:\t%s\ncommit:\t%s\n", b.Version, b.Commit)
				if b.CommitTime != "" {
					fmt.Fprintf(w, "commit time:\t%s\n", b.CommitTime)
				}
				fmt.Fprintf(w, "dirty:\t%v\ngo:\t%s\nplatform:\t%s\n", b.Dirty, b.GoVersion, b.Platform)
			})
		},
	}
	out.addFlag(cmd.Flags())
	return cmd
}
