package deploy

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestUndecodableSpecNamesTheField(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
		"metadata": map[string]any{"name": "x", "namespace": "n"},
		"spec": map[string]any{"targetRef": map[string]any{"name": "x"}, "service": map[string]any{"port": int64(80)},
			"analysis": map[string]any{"interval": "1s", "stepWeight": 2.5}}}}
	c, err := CanaryFromUnstructured(u)
	if err == nil {
		t.Fatal("got no error for stepWeight 2.5")
	}
	want := "spec.analysis.stepWeight: got number 2.5, want int"
	if !strings.Contains(c.DecodeError, want) || c.Status.SpecError != c.DecodeError {
		t.Errorf("got DecodeError %q SpecError %q, want %q", c.DecodeError, c.Status.SpecError, want)
	}
	if c.Spec.TargetRef.Name != "x" || c.Spec.Service.Port != 80 {
		t.Errorf("the rest of the spec was lost: %+v", c.Spec)
	}
}
