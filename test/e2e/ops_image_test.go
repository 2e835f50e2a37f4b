//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/siskin-dev/siskin/test/lab"
)

// TestOpsImage runs `make image` against the lab's registry (ko, .ko.yaml, a local static
// base), then inspects what was pushed: a small image whose one binary is static, carries
// the version and runs as non-root, with CA certificates for TLS.
func TestOpsImage(t *testing.T) {
	t.Parallel()
	l := lab.Require(t)
	for _, tool := range []string{"make", "git", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: `make image` cannot run here", tool)
		}
	}
	root := opsRepoRoot()
	version := strings.TrimSpace(opsRun(t, root, nil, "git", "describe", "--tags", "--always", "--dirty"))
	env := []string{"REGISTRY=" + l.Registry(), "KO_DOCKER_REPO=", "KO_DEFAULTBASEIMAGE=", "VERSION=" + version}
	out := opsRun(t, root, env, "make", "-s", "image")
	t.Logf("make image:\n%s", out)
	refBytes, err := os.ReadFile(filepath.Join(root, "bin", "image.ref"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimSpace(string(refBytes)))
	if err != nil {
		t.Fatal(err)
	}
	if got := ref.Context().RegistryStr(); got != l.Registry() {
		t.Errorf("pushed to %s, want the lab's registry %s", got, l.Registry())
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("read %s: %v", ref, err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform: got %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
	}
	if cfg.Config.User == "" || strings.HasPrefix(cfg.Config.User, "0") || cfg.Config.User == "root" {
		t.Errorf("user: got %q, want non-root (65532)", cfg.Config.User)
	}
	if len(cfg.Config.Entrypoint) != 1 {
		t.Fatalf("entrypoint: got %q, want the binary", cfg.Config.Entrypoint)
	}
	binary := strings.TrimPrefix(cfg.Config.Entrypoint[0], "/")

	var compressed, uncompressed int64
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, layer := range layers {
		size, err := layer.Size()
		if err != nil {
			t.Fatal(err)
		}
		n, err := uncompressedSize(layer)
		if err != nil {
			t.Fatal(err)
		}
		compressed += size
		uncompressed += n
	}
	manifest, _ := img.RawManifest()
	rawCfg, _ := img.RawConfigFile()
	t.Logf("image %s: %d layers, %.1f MiB compressed (layers %d B + config %d B + manifest %d B), %.1f MiB uncompressed",
		ref, len(layers), float64(compressed)/(1<<20), compressed, len(rawCfg), len(manifest), float64(uncompressed)/(1<<20))

	files := imageFiles(t, img, binary, "etc/ssl/certs/ca-certificates.crt")
	if len(files["etc/ssl/certs/ca-certificates.crt"]) == 0 {
		t.Error("no CA certificates at /etc/ssl/certs/ca-certificates.crt: TLS to Prometheus, registries and webhooks would fail")
	}
	bin := files[binary]
	if len(bin) == 0 {
		t.Fatalf("no %s in the image", binary)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s: %v", binary, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: dynamically linked, but the base has no libc", binary)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs %v", binary, libs)
	}
	if s := f.Section(".symtab"); s != nil {
		t.Errorf("%s keeps its symbol table: want -s -w", binary)
	}
	exe := filepath.Join(t.TempDir(), "siskin")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(opsRun(t, root, nil, exe, "version")), "siskin "+version; got != want {
		t.Errorf("siskin version: got %q, want %q", got, want)
	}
}

func opsRun(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

func uncompressedSize(layer v1.Layer) (int64, error) {
	rc, err := layer.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}

// imageFiles reads the named files from the image's flattened filesystem.
func imageFiles(t *testing.T, img v1.Image, paths ...string) map[string][]byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimLeft(strings.TrimPrefix(h.Name, "./"), "/")
		for _, want := range paths {
			if p == want {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				out[p] = b
			}
		}
	}
}
