//go:build e2e

package labtest

import (
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/siskin-dev/siskin/test/lab"
)

// The project's flagger.app CRDs are installed from knative/crds: its own examples pass their
// schema under strict field validation.
func TestFlaggerCRDsAcceptTheProjectsExamples(t *testing.T) {
	l := lab.Require(t)
	ns := newNamespace(t, adminClient(t))
	dyn, err := dynamic.NewForConfig(l.RESTConfig())
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	examples, _ := filepath.Glob("../../knative/testdata/*.yaml")
	if len(examples) == 0 {
		t.Fatal("no examples in knative/testdata")
	}
	resources := map[string]string{"Canary": "canaries", "MetricTemplate": "metrictemplates", "AlertProvider": "alertproviders"}
	for _, path := range examples {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var obj unstructured.Unstructured
			if err := utilyaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatalf("decode: %v", err)
			}
			resource, ok := resources[obj.GetKind()]
			if obj.GroupVersionKind().Group != "flagger.app" || !ok {
				t.Skipf("%s is not a flagger.app object", obj.GetKind())
			}
			obj.SetNamespace(ns)
			gvr := schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: resource}
			if _, err := dyn.Resource(gvr).Namespace(ns).Create(t.Context(), &obj, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
				t.Errorf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
			}
		})
	}
}
