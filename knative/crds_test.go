package knative_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

func TestCRDNames(t *testing.T) {
	tests := []struct {
		kind string
		want apiextensionsv1.CustomResourceDefinitionNames
	}{
		{"Canary", apiextensionsv1.CustomResourceDefinitionNames{
			Plural: "canaries", Singular: "canary", Kind: "Canary", ListKind: "CanaryList", Categories: []string{"all"},
		}},
		{"MetricTemplate", apiextensionsv1.CustomResourceDefinitionNames{
			Plural: "metrictemplates", Singular: "metrictemplate", Kind: "MetricTemplate", ListKind: "MetricTemplateList", Categories: []string{"all"},
		}},
		{"AlertProvider", apiextensionsv1.CustomResourceDefinitionNames{
			Plural: "alertproviders", Singular: "alertprovider", Kind: "AlertProvider", ListKind: "AlertProviderList", Categories: []string{"all"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			crd := loadCRD(t, tt.kind).v1
			if got, want := crd.Name, tt.want.Plural+".flagger.app"; got != want {
				t.Errorf("metadata.name: got %q, want %q", got, want)
			}
			if crd.Spec.Group != "flagger.app" {
				t.Errorf("group: got %q, want flagger.app", crd.Spec.Group)
			}
			if crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
				t.Errorf("scope: got %q, want Namespaced", crd.Spec.Scope)
			}
			// Flagger declares no short names; neither do we, so `kubectl get` reads the same.
			if diff := cmp.Diff(tt.want, crd.Spec.Names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			if len(crd.Spec.Versions) != 1 {
				t.Fatalf("versions: got %d, want only v1beta1", len(crd.Spec.Versions))
			}
			v := crd.Spec.Versions[0]
			if v.Name != "v1beta1" || !v.Served || !v.Storage {
				t.Errorf("version: got %s served=%v storage=%v, want v1beta1 served and stored", v.Name, v.Served, v.Storage)
			}
			if v.Subresources == nil || v.Subresources.Status == nil {
				t.Errorf("status subresource: got none, want one")
			}
			if v.Subresources != nil && v.Subresources.Scale != nil {
				t.Errorf("scale subresource: got one, want none (Flagger has none)")
			}
		})
	}
}

func TestPrinterColumns(t *testing.T) {
	col := func(name, typ, path string, priority int32) apiextensionsv1.CustomResourceColumnDefinition {
		return apiextensionsv1.CustomResourceColumnDefinition{Name: name, Type: typ, JSONPath: path, Priority: priority}
	}
	tests := []struct {
		kind string
		want []apiextensionsv1.CustomResourceColumnDefinition
	}{
		{"Canary", []apiextensionsv1.CustomResourceColumnDefinition{
			col("Status", "string", ".status.phase", 0),
			col("Weight", "string", ".status.canaryWeight", 0),
			col("Suspended", "boolean", ".spec.suspend", 1),
			col("FailedChecks", "string", ".status.failedChecks", 0),
			col("Interval", "string", ".spec.analysis.interval", 0),
			col("Mirror", "boolean", ".spec.analysis.mirror", 1),
			col("StepWeight", "string", ".spec.analysis.stepWeight", 0),
			col("StepWeights", "string", ".spec.analysis.stepWeights", 1),
			col("MaxWeight", "string", ".spec.analysis.maxWeight", 0),
			col("LastTransitionTime", "string", ".status.lastTransitionTime", 0),
		}},
		{"MetricTemplate", []apiextensionsv1.CustomResourceColumnDefinition{col("Provider", "string", ".spec.provider.type", 0)}},
		{"AlertProvider", []apiextensionsv1.CustomResourceColumnDefinition{col("Type", "string", ".spec.type", 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			crd := loadCRD(t, tt.kind)
			got := crd.v1.Spec.Versions[0].AdditionalPrinterColumns
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("printer columns (-want +got):\n%s", diff)
			}
			// A column whose path is not in the schema prints <none> forever.
			for _, c := range got {
				if _, ok := schemaAt(crd.v1.Spec.Versions[0].Schema.OpenAPIV3Schema, strings.Split(strings.TrimPrefix(c.JSONPath, "."), ".")); !ok {
					t.Errorf("column %s: path %s is not in the schema", c.Name, c.JSONPath)
				}
			}
		})
	}
}

// schemaAt follows a property path through a schema.
func schemaAt(s *apiextensionsv1.JSONSchemaProps, path []string) (*apiextensionsv1.JSONSchemaProps, bool) {
	for _, p := range path {
		next, ok := s.Properties[p]
		if !ok {
			return nil, false
		}
		s = &next
	}
	return s, true
}

// walkSchema visits every schema of s, with its property path, including the ones inside
// oneOf/anyOf/allOf/not.
func walkSchema(s *apiextensionsv1.JSONSchemaProps, at string, visit func(at string, s *apiextensionsv1.JSONSchemaProps)) {
	if s == nil {
		return
	}
	visit(at, s)
	for name, p := range s.Properties {
		walkSchema(&p, at+"."+name, visit)
	}
	if s.Items != nil {
		walkSchema(s.Items.Schema, at+"[]", visit)
	}
	if s.AdditionalProperties != nil {
		walkSchema(s.AdditionalProperties.Schema, at+"{}", visit)
	}
	for _, group := range [][]apiextensionsv1.JSONSchemaProps{s.OneOf, s.AnyOf, s.AllOf} {
		for i := range group {
			walkSchema(&group[i], at+"(alt)", visit)
		}
	}
	walkSchema(s.Not, at+"(not)", visit)
}

// Unknown formats are ignored by the apiserver and draw a warning on every apply; Flagger's
// `format: string` and `format: url` are of that kind, so this schema has none.
func TestSchemasUseOnlyRecognizedFormats(t *testing.T) {
	for kind := range crdFiles {
		t.Run(kind, func(t *testing.T) {
			root := loadCRD(t, kind).v1.Spec.Versions[0].Schema.OpenAPIV3Schema
			walkSchema(root, "", func(at string, s *apiextensionsv1.JSONSchemaProps) {
				if s.Format == "" {
					return
				}
				bad := apiservervalidation.GetUnrecognizedFormats(&spec.Schema{SchemaProps: spec.SchemaProps{
					Format: s.Format, Type: spec.StringOrArray{s.Type},
				}}, version.MajorMinor(1, 30))
				if len(bad) > 0 {
					t.Errorf("%s: unrecognized format %q", at, s.Format)
				}
			})
		})
	}
}

// Flagger types every field; so does Siskin, so that nothing the user writes is kept unread.
func TestSchemasPreserveNoUnknownFields(t *testing.T) {
	for kind := range crdFiles {
		t.Run(kind, func(t *testing.T) {
			root := loadCRD(t, kind).v1.Spec.Versions[0].Schema.OpenAPIV3Schema
			walkSchema(root, "", func(at string, s *apiextensionsv1.JSONSchemaProps) {
				if s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields {
					t.Errorf("%s: x-kubernetes-preserve-unknown-fields", at)
				}
			})
		})
	}
}

func TestAnalysisOneOfIsFlaggers(t *testing.T) {
	root := loadCRD(t, "Canary").v1.Spec.Versions[0].Schema.OpenAPIV3Schema
	analysis, ok := schemaAt(root, []string{"spec", "analysis"})
	if !ok {
		t.Fatal("no spec.analysis in the schema")
	}
	var got [][]string
	for _, alt := range analysis.OneOf {
		got = append(got, alt.Required)
	}
	want := [][]string{{"interval", "threshold", "iterations"}, {"interval", "threshold", "stepWeight"}, {"interval", "threshold", "stepWeights"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spec.analysis oneOf (-want +got):\n%s", diff)
	}
	if got, want := root.Properties["spec"].Required, []string{"targetRef", "analysis"}; !slices.Equal(got, want) {
		t.Errorf("spec required: got %v, want %v", got, want)
	}
}

// The examples are manifests as users write them for Flagger on Istio, plus the seed Canary.
// Each must be admitted under strict field validation: no field pruned, no schema error.
func TestExamplesAreAdmitted(t *testing.T) {
	tests := []struct {
		file, kind string
	}{
		{"canary-seed.yaml", "Canary"},
		{"canary-ab-testing.yaml", "Canary"},
		{"canary-blue-green-mirror.yaml", "Canary"},
		{"canary-session-affinity.yaml", "Canary"},
		{"canary-webhooks.yaml", "Canary"},
		{"canary-alerts.yaml", "Canary"},
		{"metrictemplate-prometheus.yaml", "MetricTemplate"},
		{"alertprovider-slack.yaml", "AlertProvider"},
		{"alertprovider-msteams.yaml", "AlertProvider"},
		// Regression: the schema refused Siskin's own generic webhook type.
		{"alertprovider-webhook.yaml", "AlertProvider"},
	}
	crds := map[string]*servedCRD{}
	for kind := range crdFiles {
		crds[kind] = loadCRD(t, kind)
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			obj := readTestdata(t, tt.file)
			if got := obj["kind"]; got != tt.kind {
				t.Fatalf("kind: got %v, want %s", got, tt.kind)
			}
			if a := crds[tt.kind].admit(t, obj); !a.ok() {
				t.Errorf("refused:\n%s", a)
			}
		})
	}
}

// Flagger's CRD drops spec.service.{primary,canary}.host; this one must keep them.
func TestSeedKeepsServiceHosts(t *testing.T) {
	a := loadCRD(t, "Canary").admit(t, readTestdata(t, "canary-seed.yaml"))
	if !a.ok() {
		t.Fatalf("refused:\n%s", a)
	}
	for svc, want := range map[string]string{
		"primary": "podinfo-primary.default.svc.cluster.local",
		"canary":  "podinfo-canary.default.svc.cluster.local",
	} {
		got, _, err := unstructured.NestedString(a.Object, "spec", "service", svc, "host")
		if err != nil || got != want {
			t.Errorf("spec.service.%s.host after admission: got %q (err %v), want %q", svc, got, err, want)
		}
	}
}

func TestSessionAffinityMaxAgeDefaultsToOneDay(t *testing.T) {
	obj := readTestdata(t, "canary-seed.yaml")
	mustSet(t, obj, map[string]any{"cookieName": "flagger-cookie"}, "spec", "analysis", "sessionAffinity")
	a := loadCRD(t, "Canary").admit(t, obj)
	if !a.ok() {
		t.Fatalf("refused:\n%s", a)
	}
	got, _, _ := unstructured.NestedFieldNoCopy(a.Object, "spec", "analysis", "sessionAffinity", "maxAge")
	if n, ok := got.(int64); !ok || n != 86400 {
		t.Errorf("sessionAffinity.maxAge: got %#v, want 86400", got)
	}
}

func mustSet(t *testing.T, obj map[string]any, value any, fields ...string) {
	t.Helper()
	if err := unstructured.SetNestedField(obj, value, fields...); err != nil {
		t.Fatalf("set %v: %v", fields, err)
	}
}

func TestInvalidManifestsAreRefused(t *testing.T) {
	unset := func(fields ...string) func(t *testing.T, obj map[string]any) {
		return func(t *testing.T, obj map[string]any) { unstructured.RemoveNestedField(obj, fields...) }
	}
	set := func(value any, fields ...string) func(t *testing.T, obj map[string]any) {
		return func(t *testing.T, obj map[string]any) { mustSet(t, obj, value, fields...) }
	}
	both := func(a, b func(*testing.T, map[string]any)) func(*testing.T, map[string]any) {
		return func(t *testing.T, obj map[string]any) { a(t, obj); b(t, obj) }
	}
	tests := []struct {
		name    string
		kind    string
		base    string
		mutate  func(t *testing.T, obj map[string]any)
		unknown string // the field strict validation must report, or
		wantErr string // a substring of the schema error
	}{
		{name: "no targetRef", kind: "Canary", base: "canary-seed.yaml",
			mutate: unset("spec", "targetRef"), wantErr: "spec.targetRef: Required value"},
		{name: "no analysis (Flagger requires it)", kind: "Canary", base: "canary-seed.yaml",
			mutate: unset("spec", "analysis"), wantErr: "spec.analysis: Required value"},
		{name: "targetRef without kind", kind: "Canary", base: "canary-seed.yaml",
			mutate: unset("spec", "targetRef", "kind"), wantErr: "spec.targetRef.kind: Required value"},
		{name: "targetRef kind StatefulSet", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("StatefulSet", "spec", "targetRef", "kind"), wantErr: `spec.targetRef.kind: Unsupported value: "StatefulSet"`},
		{name: "service without port", kind: "Canary", base: "canary-seed.yaml",
			mutate: unset("spec", "service", "port"), wantErr: "spec.service.port: Required value"},
		{name: "port is a string", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("http", "spec", "service", "port"), wantErr: "spec.service.port: Invalid value: \"string\""},
		{name: "host is a number", kind: "Canary", base: "canary-seed.yaml",
			mutate: set(int64(1), "spec", "service", "canary", "host"), wantErr: "spec.service.canary.host: Invalid value: \"integer\""},
		{name: "stepWeight is a string", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("5", "spec", "analysis", "stepWeight"), wantErr: "spec.analysis.stepWeight: Invalid value: \"string\""},
		{name: "analysis with none of the oneOf sets", kind: "Canary", base: "canary-seed.yaml",
			mutate: unset("spec", "analysis", "stepWeight"), wantErr: `"spec.analysis" must validate one and only one schema (oneOf). Found none valid`},
		{name: "analysis without threshold", kind: "Canary", base: "canary-seed.yaml",
			mutate: unset("spec", "analysis", "threshold"), wantErr: `"spec.analysis" must validate one and only one schema (oneOf). Found none valid`},
		{name: "analysis with both stepWeight and stepWeights", kind: "Canary", base: "canary-seed.yaml",
			mutate: set([]any{int64(10), int64(20)}, "spec", "analysis", "stepWeights"), wantErr: `"spec.analysis" must validate one and only one schema (oneOf). Found 2 valid alternatives`},
		{name: "interval in hours (Flagger's pattern: write 60m)", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("1h", "spec", "analysis", "interval"), wantErr: "spec.analysis.interval: Invalid value: \"1h\""},
		{name: "metric without name", kind: "Canary", base: "canary-seed.yaml",
			mutate: set([]any{map[string]any{"interval": "1m"}}, "spec", "analysis", "metrics"), wantErr: "spec.analysis.metrics[0].name: Required value"},
		{name: "unknown webhook type", kind: "Canary", base: "canary-webhooks.yaml",
			mutate:  set([]any{map[string]any{"name": "x", "url": "http://x/", "type": "pre-promotion"}}, "spec", "analysis", "webhooks"),
			wantErr: `spec.analysis.webhooks[0].type: Unsupported value: "pre-promotion"`},
		{name: "webhook without url", kind: "Canary", base: "canary-webhooks.yaml",
			mutate: set([]any{map[string]any{"name": "x"}}, "spec", "analysis", "webhooks"), wantErr: "spec.analysis.webhooks[0].url: Required value"},
		{name: "alert without providerRef", kind: "Canary", base: "canary-alerts.yaml",
			mutate: set([]any{map[string]any{"name": "x", "severity": "warn"}}, "spec", "analysis", "alerts"), wantErr: "spec.analysis.alerts[0].providerRef: Required value"},
		{name: "alert severity critical", kind: "Canary", base: "canary-alerts.yaml",
			mutate:  set([]any{map[string]any{"name": "x", "severity": "critical", "providerRef": map[string]any{"name": "p"}}}, "spec", "analysis", "alerts"),
			wantErr: `spec.analysis.alerts[0].severity: Unsupported value: "critical"`},
		{name: "sessionAffinity without cookieName", kind: "Canary", base: "canary-session-affinity.yaml",
			mutate: unset("spec", "analysis", "sessionAffinity", "cookieName"), wantErr: "spec.analysis.sessionAffinity.cookieName: Required value"},
		{name: "A-B header match with two kinds", kind: "Canary", base: "canary-ab-testing.yaml",
			mutate:  set([]any{map[string]any{"headers": map[string]any{"x-canary": map[string]any{"exact": "a", "prefix": "b"}}}}, "spec", "analysis", "match"),
			wantErr: "spec.analysis.match[0].headers.x-canary: Too many"},
		{name: "A-B header match with no kind", kind: "Canary", base: "canary-ab-testing.yaml",
			mutate:  set([]any{map[string]any{"headers": map[string]any{"x-canary": map[string]any{}}}}, "spec", "analysis", "match"),
			wantErr: "headers.x-canary in body should have at least 1 properties"},
		{name: "route uri match with two kinds", kind: "Canary", base: "canary-ab-testing.yaml",
			mutate:  set([]any{map[string]any{"uri": map[string]any{"exact": "/a", "regex": "/b.*"}}}, "spec", "service", "match"),
			wantErr: "spec.service.match[0].uri: Too many"},
		{name: "loadBalancer with simple and consistentHash", kind: "Canary", base: "canary-alerts.yaml",
			mutate: set("ROUND_ROBIN", "spec", "service", "trafficPolicy", "loadBalancer", "simple"), wantErr: `"spec.service.trafficPolicy.loadBalancer" must validate one and only one schema (oneOf). Found 2`},
		{name: "tls mode unknown", kind: "Canary", base: "canary-alerts.yaml",
			mutate: set("PERMISSIVE", "spec", "service", "trafficPolicy", "tls", "mode"), wantErr: `spec.service.trafficPolicy.tls.mode: Unsupported value: "PERMISSIVE"`},
		{name: "Gateway API mirror to a Service without port (CEL rule)", kind: "Canary", base: "canary-seed.yaml",
			mutate:  set([]any{map[string]any{"backendRef": map[string]any{"name": "shadow"}}}, "spec", "service", "mirror"),
			wantErr: "Must have port for Service reference"},
		{name: "status phase unknown", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("Paused", "status", "phase"), wantErr: `status.phase: Unsupported value: "Paused"`},
		{name: "status condition without reason", kind: "Canary", base: "canary-seed.yaml",
			mutate: set([]any{map[string]any{"type": "Promoted", "status": "True"}}, "status", "conditions"), wantErr: "status.conditions[0].reason: Required value"},
		{name: "status trigger without kind", kind: "Canary", base: "canary-seed.yaml",
			mutate: set(map[string]any{"eventID": "1"}, "status", "trigger"), wantErr: "status.trigger.kind: Required value"},
		{name: "status lastTransitionTime not a time", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("yesterday", "status", "lastTransitionTime"), wantErr: "status.lastTransitionTime: Invalid value: \"yesterday\""},

		// Strict field validation: fields the schema does not know are reported, not dropped.
		{name: "apex host (not honoured, so not accepted)", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("podinfo.default.svc.cluster.local", "spec", "service", "apex", "host"), unknown: "spec.service.apex.host"},
		{name: "misspelt stepWeight", kind: "Canary", base: "canary-seed.yaml",
			mutate: set(int64(5), "spec", "analysis", "stepweight"), unknown: "spec.analysis.stepweight"},
		{name: "deprecated canaryAnalysis", kind: "Canary", base: "canary-seed.yaml",
			mutate: set(map[string]any{"interval": "1m"}, "spec", "canaryAnalysis"), unknown: "spec.canaryAnalysis"},
		{name: "Istio connectionPool.tcp (absent from Flagger's schema)", kind: "Canary", base: "canary-alerts.yaml",
			mutate: set(int64(100), "spec", "service", "trafficPolicy", "connectionPool", "tcp", "maxConnections"), unknown: "spec.service.trafficPolicy.connectionPool.tcp"},
		{name: "unknown status field", kind: "Canary", base: "canary-seed.yaml",
			mutate: set("x", "status", "weight"), unknown: "status.weight"},

		{name: "MetricTemplate without query", kind: "MetricTemplate", base: "metrictemplate-prometheus.yaml",
			mutate: unset("spec", "query"), wantErr: "spec.query: Required value"},
		{name: "MetricTemplate provider elasticsearch", kind: "MetricTemplate", base: "metrictemplate-prometheus.yaml",
			mutate: set("elasticsearch", "spec", "provider", "type"), wantErr: `spec.provider.type: Unsupported value: "elasticsearch"`},
		{name: "MetricTemplate secretRef without name", kind: "MetricTemplate", base: "metrictemplate-prometheus.yaml",
			mutate: set(map[string]any{}, "spec", "provider", "secretRef"), wantErr: "spec.provider.secretRef.name: Required value"},
		{name: "MetricTemplate header value not a list", kind: "MetricTemplate", base: "metrictemplate-prometheus.yaml",
			mutate: set(map[string]any{"X-Scope-OrgID": "tenant-a"}, "spec", "provider", "headers"), wantErr: "spec.provider.headers.X-Scope-OrgID: Invalid value: \"string\""},
		{name: "AlertProvider with neither address nor secretRef", kind: "AlertProvider", base: "alertprovider-slack.yaml",
			mutate: unset("spec", "secretRef"), wantErr: `"spec" must validate one and only one schema (oneOf). Found none valid`},
		{name: "AlertProvider with both address and secretRef", kind: "AlertProvider", base: "alertprovider-slack.yaml",
			mutate: set("https://hooks.slack.com/x", "spec", "address"), wantErr: `"spec" must validate one and only one schema (oneOf). Found 2`},
		{name: "AlertProvider of a type no notifier speaks", kind: "AlertProvider", base: "alertprovider-slack.yaml",
			mutate: set("pagerduty", "spec", "type"), wantErr: `spec.type: Unsupported value: "pagerduty"`},
		{name: "AlertProvider without type", kind: "AlertProvider", base: "alertprovider-msteams.yaml",
			mutate: both(unset("spec", "type"), unset("spec", "proxy")), wantErr: "spec.type: Required value"},
	}
	crds := map[string]*servedCRD{}
	for kind := range crdFiles {
		crds[kind] = loadCRD(t, kind)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := readTestdata(t, tt.base)
			if a := crds[tt.kind].admit(t, obj); !a.ok() {
				t.Fatalf("base %s is refused before the change:\n%s", tt.base, a)
			}
			tt.mutate(t, obj)
			a := crds[tt.kind].admit(t, obj)
			if a.ok() {
				t.Fatalf("admitted, want refused")
			}
			if tt.unknown != "" {
				if !slices.Contains(a.UnknownFields, tt.unknown) || len(a.Errors) > 0 {
					t.Errorf("got:\n%swant only the unknown field %q", a, tt.unknown)
				}
				return
			}
			if len(a.UnknownFields) > 0 || !strings.Contains(a.String(), tt.wantErr) {
				t.Errorf("got:\n%swant an error containing %q", a, tt.wantErr)
			}
		})
	}
}
