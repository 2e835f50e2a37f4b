package knative_test

import (
	"bytes"
	"io/fs"
	"os"
	"path"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/knative"
)

type rbacBundle struct {
	namespace corev1.Namespace
	account   corev1.ServiceAccount
	role      rbacv1.ClusterRole
	binding   rbacv1.ClusterRoleBinding
}

func loadRBAC(t *testing.T) rbacBundle {
	t.Helper()
	raw, err := fs.ReadFile(knative.Manifests, "rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b rbacBundle
	var kinds []string
	for doc := range bytes.SplitSeq(raw, []byte("\n---\n")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("rbac.yaml: %v", err)
		}
		var into any
		switch meta.Kind {
		case "Namespace":
			into = &b.namespace
		case "ServiceAccount":
			into = &b.account
		case "ClusterRole":
			into = &b.role
		case "ClusterRoleBinding":
			into = &b.binding
		default:
			t.Fatalf("rbac.yaml: unexpected kind %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("rbac.yaml %s: %v", meta.Kind, err)
		}
		kinds = append(kinds, meta.Kind)
	}
	if want := []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}; !slices.Equal(kinds, want) {
		t.Fatalf("rbac.yaml objects: got %v, want %v", kinds, want)
	}
	return b
}

func TestIdentity(t *testing.T) {
	b := loadRBAC(t)
	if b.namespace.Name != "siskin-system" {
		t.Errorf("namespace: got %q, want siskin-system", b.namespace.Name)
	}
	if b.account.Name != "siskin" || b.account.Namespace != "siskin-system" {
		t.Errorf("service account: got %s/%s, want siskin-system/siskin", b.account.Namespace, b.account.Name)
	}
	if b.role.Name != "siskin" {
		t.Errorf("cluster role: got %q, want siskin", b.role.Name)
	}
	wantRef := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: b.role.Name}
	if b.binding.Name != "siskin" || b.binding.RoleRef != wantRef {
		t.Errorf("binding %q: got roleRef %+v, want %+v", b.binding.Name, b.binding.RoleRef, wantRef)
	}
	wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: b.account.Name, Namespace: b.account.Namespace}}
	if diff := cmp.Diff(wantSubjects, b.binding.Subjects); diff != "" {
		t.Errorf("binding subjects (-want +got):\n%s", diff)
	}
}

// grants flattens the rules to "group/resource" -> verbs. Siskin's rules use no wildcard, no
// resourceNames and no nonResourceURLs, so exact matching is what the authorizer does too.
func grants(t *testing.T, rules []rbacv1.PolicyRule) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames and nonResourceURLs are not expected", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := g + "/" + res
				for _, v := range r.Verbs {
					if !slices.Contains(out[key], v) {
						out[key] = append(out[key], v)
					}
				}
				slices.Sort(out[key])
			}
		}
	}
	return out
}

func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	rules := loadRBAC(t).role.Rules
	for _, r := range rules {
		for _, field := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
			if slices.Contains(field, "*") {
				t.Errorf("rule %+v: wildcard", r)
			}
		}
		for _, v := range []string{"delete", "deletecollection", "escalate", "bind", "impersonate"} {
			// The deletes of revertOnDeletion: a VirtualService or an HTTPRoute Siskin created.
			if v == "delete" && (slices.Equal(r.Resources, []string{"virtualservices"}) || slices.Equal(r.Resources, []string{"httproutes"})) {
				continue
			}
			if slices.Contains(r.Verbs, v) {
				t.Errorf("rule %+v: grants %s", r, v)
			}
		}
	}
	readWrite := []string{"create", "get", "list", "patch", "update", "watch"}
	want := map[string][]string{
		"flagger.app/canaries":                 {"get", "list", "patch", "update", "watch"},
		"flagger.app/canaries/status":          {"patch", "update"},
		"flagger.app/canaries/finalizers":      {"update"},
		"flagger.app/metrictemplates":          {"get", "list", "watch"},
		"flagger.app/alertproviders":           {"get", "list", "watch"},
		"apps/deployments":                     readWrite,
		"/services":                            readWrite,
		"/configmaps":                          {"create", "get", "patch", "update"},
		"/secrets":                             {"create", "get", "patch", "update"},
		"autoscaling/horizontalpodautoscalers": readWrite,
		"/events":                              {"create", "get", "list", "patch", "update"},
		"events.k8s.io/events":                 {"create", "patch"},
		"networking.istio.io/virtualservices":  {"create", "delete", "get", "list", "patch", "update", "watch"},
		"networking.istio.io/destinationrules": readWrite,
		"authentication.k8s.io/tokenreviews":   {"create"},
		"gateway.networking.k8s.io/httproutes": {"create", "delete", "get", "update"},
	}
	if diff := cmp.Diff(want, grants(t, rules)); diff != "" {
		t.Errorf("ClusterRole grants (-want +got):\n%s", diff)
	}
}

func TestClusterRoleRefusesWhatSiskinDoesNotDo(t *testing.T) {
	g := grants(t, loadRBAC(t).role.Rules)
	for _, tt := range []struct{ verb, resource string }{
		{"delete", "apps/deployments"},
		{"delete", "/secrets"},
		{"list", "/secrets"},
		{"watch", "/secrets"},
		{"delete", "/services"},
		{"delete", "networking.istio.io/destinationrules"},
		{"delete", "flagger.app/canaries"},
		{"create", "flagger.app/canaries"},
		{"update", "flagger.app/metrictemplates"},
		{"get", "/pods"},
		{"create", "/pods/exec"},
		{"get", "/nodes"},
		{"update", "apps/deployments/scale"},
		{"get", "rbac.authorization.k8s.io/clusterroles"},
		{"create", "/serviceaccounts/token"},
		{"get", "networking.istio.io/gateways"},
	} {
		if slices.Contains(g[tt.resource], tt.verb) {
			t.Errorf("%s %s: granted, want refused", tt.verb, tt.resource)
		}
	}
}

// Every embedded manifest is part of the kustomize bundle, so `kubectl apply -k knative/` installs
// what the lab installs.
func TestKustomizationListsEveryManifest(t *testing.T) {
	raw, err := os.ReadFile("core/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" {
		t.Errorf("kustomization kind: got %q, want Kustomization", k.Kind)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(path.Join("core", r)); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}
	err = fs.WalkDir(knative.Manifests, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !slices.Contains(k.Resources, p) {
			t.Errorf("embedded manifest %s is not in kustomization.yaml", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
