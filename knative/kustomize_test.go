package knative_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/siskin-dev/siskin/knative"
)

// kustomizeBuild is `kubectl kustomize dir`, with the kustomize library kubectl embeds, so the
// test needs no kubectl on the machine. Like kubectl, it keeps kustomize's legacy order
// (Namespaces and CRDs first) unless the kustomization says otherwise.
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: render: %v", dir, err)
	}
	return decodeObjects(t, out)
}

func decodeObjects(t *testing.T, manifest []byte) []*unstructured.Unstructured {
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
		if len(doc) == 0 {
			continue
		}
		// Through Unstructured's own JSON decoding, so integers stay int64 as the apiserver's.
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			t.Fatalf("decode manifest: %v", err)
		}
		objs = append(objs, u)
	}
}

func objectID(o *unstructured.Unstructured) string {
	id := o.GetKind() + " " + o.GetName()
	if ns := o.GetNamespace(); ns != "" {
		id = o.GetKind() + " " + ns + "/" + o.GetName()
	}
	return id
}

func ids(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, objectID(o))
	}
	return out
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// embeddedObjects are the objects of every file the package embeds (what the lab installs).
func embeddedObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, src := range []fs.FS{knative.Manifests, knative.Redis} {
		err := fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(src, p)
			if err != nil {
				return err
			}
			objs = append(objs, decodeObjects(t, b)...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return objs
}

// containerEnv is the siskin container's environment in the Knative Service, by name.
func containerEnv(t *testing.T, ksvc *unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(ksvc.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		t.Fatalf("Knative Service %s: want exactly one container, got %d (%v)", ksvc.GetName(), len(containers), err)
	}
	env, _, _ := unstructured.NestedSlice(containers[0].(map[string]any), "env")
	out := map[string]map[string]any{}
	for _, e := range env {
		m := e.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

func TestBundleBuildsWithEveryManifest(t *testing.T) {
	got := kustomizeBuild(t, ".")
	want := embeddedObjects(t)
	if len(got) != len(want) {
		t.Errorf("kustomize build: got %d objects, want the %d of the embedded manifests", len(got), len(want))
	}
	for _, id := range ids(want) {
		if !slices.Contains(ids(got), id) {
			t.Errorf("kustomize build lacks %s", id)
		}
	}
	for _, o := range got {
		// A bundled credential would be a known one, and re-applying would reset the operator's.
		if o.GetKind() == "Secret" {
			t.Errorf("the bundle ships %s; Secrets are the operator's to create", objectID(o))
		}
	}
	// The Namespace comes first, so that `kubectl apply -k` can create what lives in it.
	if len(got) == 0 || got[0].GetKind() != "Namespace" || got[0].GetName() != "siskin-system" {
		t.Errorf("first object: got %v, want Namespace siskin-system", ids(got[:min(1, len(got))]))
	}
}

func TestBundledRedisIsTheOneSiskinUses(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	ksvc := find(objs, "Service", "siskin")
	if ksvc == nil || ksvc.GetAPIVersion() != "serving.knative.dev/v1" {
		t.Fatal("no Knative Service siskin in the bundle")
	}
	url, _ := containerEnv(t, ksvc)["REDIS_URL"]["value"].(string)
	redis := find(objs, "Service", "siskin-redis")
	if redis == nil {
		t.Fatal("no Service siskin-redis in the bundle")
	}
	port, _, _ := unstructured.NestedSlice(redis.Object, "spec", "ports")
	want := "redis://siskin-redis." + redis.GetNamespace() + ".svc.cluster.local:" + fmt.Sprint(port[0].(map[string]any)["port"]) + "/0"
	if url != want {
		t.Errorf("REDIS_URL: got %q, want the bundled Redis %q", url, want)
	}
	sts := find(objs, "StatefulSet", "siskin-redis")
	if sts == nil {
		t.Fatal("no StatefulSet siskin-redis")
	}
	containers, _, _ := unstructured.NestedSlice(sts.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if i := slices.Index(args, "--appendonly"); i < 0 || i+1 >= len(args) || args[i+1] != "yes" {
		t.Errorf("Redis args %q: want AOF on (--appendonly yes)", args)
	}
}

func TestExternalRedisOverlay(t *testing.T) {
	base := kustomizeBuild(t, "core")
	objs := kustomizeBuild(t, "overlays/external-redis")
	for _, kind := range []string{"StatefulSet", "Service", "NetworkPolicy"} {
		if o := find(objs, kind, "siskin-redis"); o != nil {
			t.Errorf("the overlay installs %s: it must use the external Redis only", objectID(o))
		}
	}
	if len(objs) != len(base) {
		t.Errorf("overlay: got %d objects, want core's %d", len(objs), len(base))
	}
	ksvc := find(objs, "Service", "siskin")
	if ksvc == nil {
		t.Fatal("no Knative Service siskin in the overlay")
	}
	env := containerEnv(t, ksvc)
	// The patch replaces env/0 by index: this catches a reordered env list.
	if got, want := env["REDIS_URL"]["value"], "redis+sentinel://redis-sentinel.data.svc.cluster.local:26379/mymaster"; got != want {
		t.Errorf("REDIS_URL: got %v, want %v", got, want)
	}
	if got := env["PROMETHEUS_URL"]["value"]; got != containerEnv(t, find(base, "Service", "siskin"))["PROMETHEUS_URL"]["value"] {
		t.Errorf("PROMETHEUS_URL changed by the overlay: %v", got)
	}
}

// The namespaced install: no ClusterRole over workloads at all, the same rules as a Role in the
// one namespace, TokenReviews alone cluster-wide, and Siskin told its namespace.
func TestNamespacedOverlay(t *testing.T) {
	base := kustomizeBuild(t, "core")
	objs := kustomizeBuild(t, "overlays/namespaced")
	for _, o := range objs {
		if o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding" {
			if name := o.GetName(); name != "siskin-tokenreview" && name != "siskin-apiserversource" {
				t.Errorf("the namespaced install grants cluster-wide %s", objectID(o))
			}
		}
	}
	rulesOf := func(o *unstructured.Unstructured) []any {
		if o == nil {
			t.Fatal("missing role")
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		return rules
	}
	var clusterRules, tokenReview []any
	for _, r := range rulesOf(find(base, "ClusterRole", "siskin")) {
		if fmt.Sprint(r.(map[string]any)["resources"]) == "[tokenreviews]" {
			tokenReview = append(tokenReview, r)
			continue
		}
		clusterRules = append(clusterRules, r)
	}
	role := find(objs, "Role", "siskin")
	if diff := cmp.Diff(clusterRules, rulesOf(role)); diff != "" {
		t.Errorf("the Role drifted from the ClusterRole (-cluster +role):\n%s", diff)
	}
	if role.GetNamespace() != "apps" {
		t.Errorf("Role namespace: got %q, want apps", role.GetNamespace())
	}
	if diff := cmp.Diff(tokenReview, rulesOf(find(objs, "ClusterRole", "siskin-tokenreview"))); diff != "" {
		t.Errorf("siskin-tokenreview (-want +got):\n%s", diff)
	}
	if got := containerEnv(t, find(objs, "Service", "siskin"))["SISKIN_NAMESPACE"]["value"]; got != "apps" {
		t.Errorf("SISKIN_NAMESPACE: got %v, want apps", got)
	}
	for _, name := range []string{"siskin-references", "siskin-resources"} {
		src := find(objs, "ApiServerSource", name)
		if src == nil {
			t.Errorf("no ApiServerSource %s", name)
			continue
		}
		if got, _, _ := unstructured.NestedString(src.Object, "spec", "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name"); got != "apps" {
			t.Errorf("ApiServerSource %s namespaceSelector: got %q, want the namespace apps", name, got)
		}
	}
}
