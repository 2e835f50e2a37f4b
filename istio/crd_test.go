package istio

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/functions"
)

// The rendered objects are checked against the structural schema of Istio's own CRDs
// (istio.io/api's kubernetes/customresourcedefinitions.gen.yaml, the version this module
// builds with): no field the apiserver would prune, the JSON types and integer formats the
// schema declares, required fields. CEL rules (x-kubernetes-validations) are left to the e2e
// tests against a real apiserver.

type crdFile struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// istioSpecSchema returns the openAPIV3 schema of kind's spec at networking.istio.io/v1.
func istioSpecSchema(t *testing.T, kind string) map[string]any {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		t.Skipf("cannot locate istio.io/api in the module cache (go list: %v); skipping the CRD schema check", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("Istio CRDs not found at %s: %v", path, err)
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var crd crdFile
		if err := yaml.Unmarshal([]byte(doc), &crd); err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		if crd.Spec.Group != "networking.istio.io" || crd.Spec.Names.Kind != kind {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if v.Name != "v1" {
				continue
			}
			props, _ := v.Schema.OpenAPIV3Schema["properties"].(map[string]any)
			spec, ok := props["spec"].(map[string]any)
			if !ok {
				t.Fatalf("%s v1 schema has no spec", kind)
			}
			return spec
		}
	}
	t.Fatalf("no networking.istio.io/v1 %s CRD in %s", kind, path)
	return nil
}

// schemaViolations lists where value breaks the structural schema.
func schemaViolations(path string, schema map[string]any, value any) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, path+": "+fmt.Sprintf(format, args...)) }
	switch schema["type"] {
	case "object":
		obj, ok := value.(map[string]any)
		if !ok {
			bad("got %T, want an object", value)
			return out
		}
		props, hasProps := schema["properties"].(map[string]any)
		additional, hasAdditional := schema["additionalProperties"].(map[string]any)
		preserve, _ := schema["x-kubernetes-preserve-unknown-fields"].(bool)
		for _, key := range sortedKeys(obj) {
			switch sub, known := props[key].(map[string]any); {
			case known:
				out = append(out, schemaViolations(path+"."+key, sub, obj[key])...)
			case hasAdditional:
				out = append(out, schemaViolations(path+"."+key, additional, obj[key])...)
			case hasProps && !preserve:
				bad("unknown field %q (the apiserver would prune it)", key)
			}
		}
		required, _ := schema["required"].([]any)
		for _, r := range required {
			if _, ok := obj[r.(string)]; !ok {
				bad("required field %q missing", r)
			}
		}
	case "array":
		items, ok := value.([]any)
		if !ok {
			bad("got %T, want an array", value)
			return out
		}
		if max, ok := schema["maxItems"].(float64); ok && float64(len(items)) > max {
			bad("%d items, more than %v", len(items), max)
		}
		itemSchema, _ := schema["items"].(map[string]any)
		for i, item := range items {
			out = append(out, schemaViolations(fmt.Sprintf("%s[%d]", path, i), itemSchema, item)...)
		}
	case "string":
		s, ok := value.(string)
		if !ok {
			bad("got %T, want a string", value)
			return out
		}
		if max, ok := schema["maxLength"].(float64); ok && float64(len(s)) > max {
			bad("%d characters, more than %v", len(s), max)
		}
	case "integer":
		n, ok := value.(float64)
		if !ok || n != math.Trunc(n) {
			bad("got %v, want an integer", value)
			return out
		}
		if schema["format"] == "int32" && (n < math.MinInt32 || n > math.MaxInt32) {
			bad("%v overflows int32", n)
		}
		if min, ok := schema["minimum"].(float64); ok && n < min {
			bad("%v below minimum %v", n, min)
		}
		if max, ok := schema["maximum"].(float64); ok && n > max {
			bad("%v above maximum %v", n, max)
		}
	case "number":
		if _, ok := value.(float64); !ok {
			bad("got %T, want a number", value)
		}
	case "boolean":
		if _, ok := value.(bool); !ok {
			bad("got %T, want a boolean", value)
		}
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func specJSON(t *testing.T, obj any) any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return generic["spec"]
}

func TestRenderedObjectsFitIstioCRDSchema(t *testing.T) {
	vsSchema := istioSpecSchema(t, "VirtualService")
	drSchema := istioSpecSchema(t, "DestinationRule")

	for _, tt := range virtualServiceCases() {
		t.Run(tt.name, func(t *testing.T) {
			vs, err := RenderVirtualService(tt.canary, tt.plan)
			if err != nil {
				t.Fatalf("RenderVirtualService: %v", err)
			}
			for _, v := range schemaViolations("spec", vsSchema, specJSON(t, vs)) {
				t.Errorf("VirtualService: %s", v)
			}
			primary, canary, err := RenderDestinationRules(tt.canary)
			if err != nil {
				t.Fatalf("RenderDestinationRules: %v", err)
			}
			for _, dr := range []any{primary, canary} {
				for _, v := range schemaViolations("spec", drSchema, specJSON(t, dr)) {
					t.Errorf("DestinationRule: %s", v)
				}
			}
		})
	}
}

func TestRenderedTrafficPolicyFitsIstioCRDSchema(t *testing.T) {
	drSchema := istioSpecSchema(t, "DestinationRule")
	c := podinfo(func(c *functions.Canary) {
		c.Spec.Service.TrafficPolicy = json.RawMessage(`{"loadBalancer":{"consistentHash":{"httpCookie":{"name":"user","ttl":"0s"}}},` +
			`"connectionPool":{"tcp":{"maxConnections":100,"connectTimeout":"30ms"},"http":{"http1MaxPendingRequests":1024,"maxRequestsPerConnection":10}},` +
			`"outlierDetection":{"consecutive5xxErrors":7,"interval":"5m","baseEjectionTime":"15m","maxEjectionPercent":50},` +
			`"tls":{"mode":"ISTIO_MUTUAL"},` +
			`"portLevelSettings":[{"port":{"number":9898},"loadBalancer":{"simple":"LEAST_REQUEST"}}]}`)
	})
	primary, canary, err := RenderDestinationRules(c)
	if err != nil {
		t.Fatalf("RenderDestinationRules: %v", err)
	}
	for _, dr := range []any{primary, canary} {
		for _, v := range schemaViolations("spec", drSchema, specJSON(t, dr)) {
			t.Errorf("DestinationRule: %s", v)
		}
	}
}

// The checker itself must be able to fail, or the test above proves nothing.
func TestSchemaViolationsCatchesBadObjects(t *testing.T) {
	vsSchema := istioSpecSchema(t, "VirtualService")
	tests := []struct {
		name string
		spec string
		want string
	}{
		{"unknown field", `{"hosts":["a"],"htttp":[]}`, `unknown field "htttp"`},
		{"weight not an integer", `{"http":[{"route":[{"destination":{"host":"a"},"weight":"50"}]}]}`, "want an integer"},
		{"weight overflows int32", `{"http":[{"route":[{"destination":{"host":"a"},"weight":3000000000}]}]}`, "overflows int32"},
		{"destination without host", `{"http":[{"route":[{"destination":{},"weight":1}]}]}`, `required field "host" missing`},
		{"hosts not a list", `{"hosts":"a"}`, "want an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var spec any
			if err := json.Unmarshal([]byte(tt.spec), &spec); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(schemaViolations("spec", vsSchema, spec), "\n")
			if !strings.Contains(got, tt.want) {
				t.Errorf("violations: got %q, want one containing %q", got, tt.want)
			}
		})
	}
}
