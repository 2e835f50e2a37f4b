package main

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The arrows of the design: handlers → functions ← adapters. The domain imports no adapter
// and no Kubernetes library; an adapter imports the domain and kubeapi, never another adapter.
func TestPackagesKeepTheArrows(t *testing.T) {
	const module = "github.com/siskin-dev/siskin/"
	adapters := []string{"analysis", "deploy", "gatewayapi", "istio", "registry", "state"}
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{"functions", append([]string{"handlers", "kubeapi"}, adapters...)},
		{"handlers", append([]string{"kubeapi"}, adapters...)},
		{"kubeapi", append([]string{"handlers"}, adapters...)},
	}
	for _, a := range adapters {
		tests = append(tests, struct {
			pkg       string
			forbidden []string
		}{a, append([]string{"handlers"}, slices.DeleteFunc(slices.Clone(adapters), func(o string) bool { return o == a })...)})
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			imports := importsUnder(t, tt.pkg)
			for _, imp := range imports {
				rest, ok := strings.CutPrefix(imp, module)
				if tt.pkg == "functions" && !ok && strings.HasPrefix(imp, "k8s.io/") {
					t.Errorf("functions imports %s: the domain knows no Kubernetes library", imp)
				}
				top, _, _ := strings.Cut(rest, "/")
				if ok && slices.Contains(tt.forbidden, top) {
					t.Errorf("%s imports %s: want none of %v", tt.pkg, imp, tt.forbidden)
				}
			}
		})
	}
}

// importsUnder lists the non-test imports of dir and its subpackages.
func importsUnder(t *testing.T, dir string) []string {
	t.Helper()
	var all []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		p, err := build.ImportDir(path, 0)
		if _, none := err.(*build.NoGoError); none {
			return nil
		}
		if err != nil {
			return err
		}
		all = append(all, p.Imports...)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	if len(all) == 0 {
		t.Fatalf("%s: no imports read", dir)
	}
	return all
}
