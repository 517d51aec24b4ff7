package main

import (
	"runtime"
	"runtime/debug"
)

// readBuildInfo is the binary's version, the VCS commit it was built from
// ("-dirty" appended when the tree had changes) and the Go version that
// built it, from the build information the Go toolchain embeds. A version
// built in a checkout is "(devel)"; a field the toolchain did not record is
// "unknown".
func readBuildInfo() (version, commit, goVersion string) {
	version, commit, goVersion = "unknown", "unknown", runtime.Version()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, commit, goVersion
	}
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		goVersion = bi.GoVersion
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && commit != "unknown" {
		commit += "-dirty"
	}
	return version, commit, goVersion
}
