package handlers

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// updateGolden rewrites testdata/**/*.golden.json from the decoders' output:
// go test ./handlers -run Golden -update. Review the diff before committing.
var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata")

// testGitHubSecret signs the GHCR samples whose signature is meant to verify.
var testGitHubSecret = []byte("siskin-test-secret")

// sample is one recorded request under testdata/<format>/: <name>.json is the body,
// <name>.headers the request head, <name>.golden.json the expected decoding.
type sample struct {
	name   string
	header http.Header
	body   []byte
	golden string
}

func readSamples(t testing.TB, dir string) []sample {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	for _, p := range paths {
		if strings.HasSuffix(p, ".golden.json") {
			continue
		}
		base := strings.TrimSuffix(p, ".json")
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		head, err := os.ReadFile(base + ".headers")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		out = append(out, sample{name: filepath.Base(base), header: parseHeaderLines(string(head)), body: body, golden: base + ".golden.json"})
	}
	if len(out) == 0 {
		t.Fatalf("no samples under testdata/%s", dir)
	}
	return out
}

// parseHeaderLines reads "Name: value" lines; the request line and blank lines are skipped.
func parseHeaderLines(s string) http.Header {
	h := http.Header{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok || strings.ContainsAny(name, " \t") {
			continue
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h
}

// compareGolden diffs got against the golden file, or rewrites the file under -update.
func compareGolden[T any](t *testing.T, path string, got T) {
	t.Helper()
	if *updateGolden {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	var want T
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("golden file %s: %v", path, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoding differs from %s (-want +got):\n%s", path, diff)
	}
}

// errorText keeps an error's message for a golden file, after checking that the handlers will
// map it to a 4xx: a decoder never reports a transient failure.
func errorText(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	if !errors.Is(err, functions.ErrInvalid) && !errors.Is(err, functions.ErrUnauthorized) {
		t.Errorf("error %q wraps neither ErrInvalid nor ErrUnauthorized", err)
	}
	return err.Error()
}

var registryDirs = []string{"distribution", "acr", "harbor", "dockerhub", "ghcr", "quay", "ecr", "gar", "other"}

type registryGolden struct {
	Pushes []functions.ImagePush `json:"pushes"`
	Error  string                `json:"error,omitempty"`
}

func TestDecodeRegistryWebhookGolden(t *testing.T) {
	for _, dir := range registryDirs {
		for _, s := range readSamples(t, dir) {
			t.Run(dir+"/"+s.name, func(t *testing.T) {
				var got registryGolden
				var err error
				if s.header.Get("X-Hub-Signature-256") != "" {
					err = VerifyGitHubSignature(testGitHubSecret, s.header, s.body)
				}
				if err == nil {
					got.Pushes, err = DecodeRegistryWebhook(s.header, s.body)
				}
				got.Error = errorText(t, err)
				compareGolden(t, s.golden, got)
			})
		}
	}
}

type alertGolden struct {
	Notification *functions.AlertNotification `json:"notification,omitempty"`
	Error        string                       `json:"error,omitempty"`
}

func TestDecodeAlertmanagerGolden(t *testing.T) {
	for _, s := range readSamples(t, "alertmanager") {
		t.Run(s.name, func(t *testing.T) {
			n, err := DecodeAlertmanager(s.body)
			got := alertGolden{Error: errorText(t, err)}
			if err == nil {
				got.Notification = &n
			}
			compareGolden(t, s.golden, got)
		})
	}
}

func mustUnix(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
