package main

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseBuild(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/outboxrelay/outboxrelay", Version: "v0.0.0-20261201120000-3f2a9c1b7d4e"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345"},
			{Key: "vcs.time", Value: "2026-12-01T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name         string
		bi           *debug.BuildInfo
		ok           bool
		linkV, linkC string
		want         build
	}{
		{
			name: "no build info",
			want: build{Version: "devel", Commit: "unknown", GoVersion: runtime.Version(), Platform: platform},
		},
		{
			name: "built without VCS information",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}},
			ok:   true,
			want: build{Version: "devel", Commit: "unknown", GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name: "pseudo-version, commit, dirty tree",
			bi:   stamped,
			ok:   true,
			want: build{Version: "v0.0.0-20261201120000-3f2a9c1b7d4e", Commit: "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345",
				CommitTime: "2026-12-01T12:00:00Z", Dirty: true, GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name: "release tag, clean tree",
			bi: &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v1.2.0"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			ok:   true,
			want: build{Version: "v1.2.0", Commit: "abc", GoVersion: "go1.26.1", Platform: platform},
		},
		{
			name:  "linked values win over the stamped ones",
			bi:    stamped,
			ok:    true,
			linkV: "v1.3.0", linkC: "0123456",
			want: build{Version: "v1.3.0", Commit: "0123456", CommitTime: "2026-12-01T12:00:00Z", Dirty: true, GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name:  "linked values without build info (the Docker build)",
			linkV: "v1.3.0", linkC: "0123456",
			want: build{Version: "v1.3.0", Commit: "0123456", GoVersion: runtime.Version(), Platform: platform},
		},
		{
			name:  "only a linked version",
			bi:    stamped,
			ok:    true,
			linkV: "v1.3.0",
			want: build{Version: "v1.3.0", Commit: "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345", CommitTime: "2026-12-01T12:00:00Z",
				Dirty: true, GoVersion: "go1.26.0", Platform: platform},
		},
		{
			name: "info present but not ok is not read",
			bi:   stamped,
			want: build{Version: "devel", Commit: "unknown", GoVersion: runtime.Version(), Platform: platform},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseBuild(tc.bi, tc.ok, tc.linkV, tc.linkC); got != tc.want {
				t.Errorf("parseBuild = %+v\nwant          %+v", got, tc.want)
			}
		})
	}
}

// version's table, JSON and YAML forms and --version show the same build.
func TestVersionFormsAgree(t *testing.T) {
	want := currentBuild()
	out, err := runCLI(t, "version", "-o", "json")
	if err != nil {
		t.Fatalf("version -o json: %v\n%s", err, out)
	}
	var fromJSON build
	if err := json.Unmarshal([]byte(out), &fromJSON); err != nil {
		t.Fatalf("version -o json is not JSON (%v):\n%s", err, out)
	}
	out, err = runCLI(t, "version", "-o", "yaml")
	if err != nil {
		t.Fatalf("version -o yaml: %v\n%s", err, out)
	}
	var fromYAML build
	if err := yaml.Unmarshal([]byte(out), &fromYAML); err != nil {
		t.Fatalf("version -o yaml is not YAML (%v):\n%s", err, out)
	}
	if fromJSON != want || fromYAML != want {
		t.Errorf("json %+v, yaml %+v, want %+v", fromJSON, fromYAML, want)
	}
	out, err = runCLI(t, "--version")
	if err != nil || out != "outboxrelay "+want.String()+"\n" {
		t.Errorf("--version = %q (%v), want the one-line form of %+v", out, err, want)
	}
	for _, field := range []string{want.Version, want.Commit, want.GoVersion, want.Platform} {
		if !strings.Contains(out, field) {
			t.Errorf("--version %q lacks %q", out, field)
		}
	}
	table, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n") {
		k, v, _ := strings.Cut(line, ":")
		rows[k] = strings.TrimSpace(v)
	}
	if rows["version"] != want.Version || rows["commit"] != want.Commit || rows["go"] != want.GoVersion || rows["platform"] != want.Platform {
		t.Errorf("version shows %v, want %+v", rows, want)
	}
}

// The same value in JSON and YAML for a nested, nullable result, as slot
// list prints it: the same names, in the same order, nulls kept.
func TestYAMLHasTheJSONFields(t *testing.T) {
	lag := int64(4096)
	v := []map[string]any{{"name": "ops", "active": false, "lag_bytes": &lag, "active_pid": nil, "slots": []string{"a", "b"}, "wal_status": "reserved"}}
	var jsonOut, yamlOut strings.Builder
	if err := (&output{format: "json"}).print(&jsonOut, v, nil); err != nil {
		t.Fatal(err)
	}
	if err := (&output{format: "yaml"}).print(&yamlOut, v, nil); err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromYAML any
	if err := json.Unmarshal([]byte(jsonOut.String()), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(yamlOut.String()), &fromYAML); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(fromJSON)
	b, _ := json.Marshal(fromYAML)
	if string(a) != string(b) {
		t.Errorf("yaml reads as %s, json as %s; yaml:\n%s", b, a, yamlOut.String())
	}
	if strings.ContainsAny(yamlOut.String(), "{[") {
		t.Errorf("yaml is in flow style:\n%s", yamlOut.String())
	}
}
