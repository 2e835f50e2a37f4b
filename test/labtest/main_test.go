//go:build e2e

// Package labtest proves that each component of the lab is real and reachable. Run with
// make test-lab (go test -tags e2e ./test/labtest/...).
package labtest

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/siskin-dev/siskin/test/lab"
)

func TestMain(m *testing.M) {
	lab.Main(m, lab.Options{})
}

// unique makes names that two runs, or two tests, never share.
func unique(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
