//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/siskin-dev/siskin/test/lab"
)

// knativeServingModule holds Knative Serving's CRDs: the release whose go.mod builds against
// k8s.io/api v0.36, the lab's Kubernetes minor.
const knativeServingModule = "knative.dev/serving@v0.51.0"

func opsRepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// opsKustomize is `kubectl kustomize dir` (kustomize's legacy order, as kubectl applies it).
func opsKustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), filepath.Join(opsRepoRoot(), dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return opsDecode(t, out)
}

func opsDecode(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decode manifest: %v", err)
		}
		if len(doc) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: doc})
		}
	}
}

// installKnativeServingCRDs applies Knative Serving's CRDs from its Go module and waits until
// they are Established.
func installKnativeServingCRDs(t *testing.T, l *lab.Lab) {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", knativeServingModule)
	cmd.Dir = opsRepoRoot()
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if err == nil {
		err = json.Unmarshal(out, &mod)
	}
	if err != nil || mod.Error != "" || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", knativeServingModule, err, mod.Error)
	}
	files, err := filepath.Glob(filepath.Join(mod.Dir, "config", "core", "300-resources", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s/config/core/300-resources: %v", mod.Dir, err)
	}
	ctx := context.Background()
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		applied, err := l.Apply(ctx, b)
		if err != nil {
			t.Fatalf("apply %s: %v", filepath.Base(f), err)
		}
		for _, o := range applied {
			names = append(names, o.GetName())
		}
	}
	crds := dynamic.NewForConfigOrDie(l.RESTConfig()).Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, n := range names {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := crds.Get(ctx, n, metav1.GetOptions{})
			if err == nil && opsEstablished(got) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not Established: %v", n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("Knative Serving CRDs from %s: %s", knativeServingModule, strings.Join(names, ", "))
}

func opsEstablished(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// dryRunner server-side-applies objects with dryRun=All and strict field validation: the
// apiserver runs every schema, defaulting and admission check without storing anything.
type dryRunner struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newDryRunner(t *testing.T, l *lab.Lab) *dryRunner {
	t.Helper()
	disco, err := discovery.NewDiscoveryClientForConfig(l.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &dryRunner{dyn: dynamic.NewForConfigOrDie(l.RESTConfig()),
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}
}

func (d *dryRunner) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		d.mapper.Reset()
		mapping, err = d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return err
	}
	var res dynamic.ResourceInterface = d.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		res = d.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	}
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	force := true
	call, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = res.Patch(call, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		FieldManager: "siskin-ops-dry-run", Force: &force,
		DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict,
	})
	return err
}

// knativeEventingGroups have no CRDs in the lab (Eventing publishes no Go module): the
// knative package's schema tests check those objects instead.
var knativeEventingGroups = map[string]bool{"eventing.knative.dev": true, "sources.knative.dev": true}

func TestOpsManifestsPassServerSideDryRun(t *testing.T) {
	t.Parallel()
	l := lab.Require(t)
	installKnativeServingCRDs(t, l)
	d := newDryRunner(t, l)
	ctx := context.Background()
	for _, dir := range []string{"knative", "knative/overlays/external-redis"} {
		t.Run(dir, func(t *testing.T) {
			objs := opsKustomize(t, dir)
			checked, eventing := 0, 0
			for _, o := range objs {
				if knativeEventingGroups[o.GroupVersionKind().Group] {
					eventing++
					continue
				}
				if err := d.apply(ctx, o); err != nil {
					t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
				checked++
			}
			if checked == 0 {
				t.Fatal("nothing dry-run")
			}
			t.Logf("%s: %d objects passed server-side dry-run (strict); %d Eventing objects left to the schema tests", dir, checked, eventing)
		})
	}

	// The dry-run must be able to fail: the same objects with a misspelt field are refused.
	objs := opsKustomize(t, "knative")
	for _, c := range []struct {
		kind, apiVersion, name string
		path                   []string
	}{
		{"Service", "serving.knative.dev/v1", "siskin", []string{"spec", "template", "spec", "containerConcurency"}},
		{"StatefulSet", "apps/v1", "siskin-redis", []string{"spec", "template", "spec", "securityContex"}},
		{"CustomResourceDefinition", "apiextensions.k8s.io/v1", "canaries.flagger.app", []string{"spec", "scop"}},
	} {
		var obj *unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() == c.kind && o.GetAPIVersion() == c.apiVersion && o.GetName() == c.name {
				obj = o.DeepCopy()
			}
		}
		if obj == nil {
			t.Fatalf("no %s %s in the bundle", c.kind, c.name)
		}
		_ = unstructured.SetNestedField(obj.Object, int64(1), c.path...)
		err := d.apply(ctx, obj)
		if err == nil || !strings.Contains(err.Error(), "field not declared in schema") && !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%s %s with %s: got %v, want an unknown field refusal", c.kind, c.name, strings.Join(c.path, "."), err)
		}
	}
}
