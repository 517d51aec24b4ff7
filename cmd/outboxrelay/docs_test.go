package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// cliDocs is where the generated command reference lives.
const cliDocs = "../../docs/cli"

// The command reference in docs/cli is generated from the commands
// themselves (cobra/doc), so it cannot drift from --help: this test fails
// when it does. UPDATE_DOCS=1 rewrites it.
func TestCLIReferenceIsCurrent(t *testing.T) {
	got := t.TempDir()
	root := newRootCmd()
	noAutoGenTag(root)
	if err := doc.GenMarkdownTree(root, got); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("UPDATE_DOCS") != "" {
		old, _ := filepath.Glob(filepath.Join(cliDocs, "*.md"))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.CopyFS(cliDocs, os.DirFS(got)); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, _ := filepath.Glob(filepath.Join(cliDocs, "*.md"))
	have, _ := filepath.Glob(filepath.Join(got, "*.md"))
	names := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(names(want), names(have)) {
		t.Fatalf("docs/cli holds %v, the commands generate %v: run UPDATE_DOCS=1 go test ./cmd/outboxrelay -run TestCLIReferenceIsCurrent", names(want), names(have))
	}
	for _, f := range have {
		w, err := os.ReadFile(filepath.Join(cliDocs, filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		h, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w, h) {
			t.Errorf("docs/cli/%s differs from what the commands generate: run UPDATE_DOCS=1 go test ./cmd/outboxrelay -run TestCLIReferenceIsCurrent", filepath.Base(f))
		}
	}
}

func noAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		noAutoGenTag(sub)
	}
}
