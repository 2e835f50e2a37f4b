package knative_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/functions"
)

// The domain (functions.Spec, functions.Status) and the CRD must agree on field names: a field the
// schema does not know is pruned by the apiserver (so Siskin's own status writes would lose it),
// and a field the domain does not know is silently unread.

// flaggerFieldsSiskinDoesNotRead are accepted for compatibility with Flagger manifests, and have no
// field in functions.Spec or functions.Status.
var flaggerFieldsSiskinDoesNotRead = []string{
	"spec.autoscalerRef.primaryScalerQueries", // KEDA ScaledObject only
	"spec.ingressRef",                         // NGINX
	"spec.routeRef",                           // APISIX
	"spec.service.backends",                   // App Mesh
	"spec.service.meshName",                   // App Mesh
	"spec.service.trafficDistribution",
	"spec.service.unmanagedMetadata",
	"spec.upstreamRef", // Gloo
	"status.lastTrackedRevision",
}

// domainFieldsTheSchemaRefuses are serialised by the domain but refused by the CRD.
// functions.ServiceMeta is shared by apex, primary and canary, but only the primary and canary
// hosts are checked by Siskin; an unchecked apex host would be a silently ignored setting.
var domainFieldsTheSchemaRefuses = []string{"spec.service.apex.host"}

func TestSeedDecodesIntoDomainSpec(t *testing.T) {
	a := loadCRD(t, "Canary").admit(t, readTestdata(t, "canary-seed.yaml"))
	if !a.ok() {
		t.Fatalf("refused:\n%s", a)
	}
	specJSON, err := json.Marshal(a.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var got functions.Spec
	// Strict: every field of the stored seed must be a field of the domain.
	if err := yaml.UnmarshalStrict(specJSON, &got); err != nil {
		t.Fatalf("decode the admitted seed into functions.Spec: %v", err)
	}
	want := functions.Spec{
		TargetRef: functions.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
		Service: functions.ServiceSpec{
			Port:       9898,
			TargetPort: json.RawMessage("9898"),
			Primary:    &functions.ServiceMeta{Host: "podinfo-primary.default.svc.cluster.local"},
			Canary:     &functions.ServiceMeta{Host: "podinfo-canary.default.svc.cluster.local"},
		},
		Analysis: &functions.Analysis{
			Interval: "1m", Threshold: 5, MaxWeight: 50, StepWeight: 5,
			Metrics: []functions.Metric{
				{Name: "request-success-rate", Interval: "1m", ThresholdRange: &functions.ThresholdRange{Min: ptr(99.0)}},
				{Name: "request-duration", Interval: "30s", ThresholdRange: &functions.ThresholdRange{Max: ptr(500.0)}},
			},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("functions.Spec of the seed (-want +got):\n%s", diff)
	}
	if got, want := got.Strategy(), functions.StrategyCanary; got != want {
		t.Errorf("strategy: got %s, want %s", got, want)
	}
	if got, want := got.MaxWeight(), 50; got != want {
		t.Errorf("max weight: got %d, want %d", got, want)
	}
}

func ptr[T any](v T) *T { return &v }

// Every Canary example goes through the domain and back without losing a field: what the schema
// admits, the domain reads.
func TestExamplesRoundTripThroughDomain(t *testing.T) {
	crd := loadCRD(t, "Canary")
	for _, file := range []string{
		"canary-seed.yaml",
		"canary-ab-testing.yaml",
		"canary-blue-green-mirror.yaml",
		"canary-session-affinity.yaml",
		"canary-webhooks.yaml",
		"canary-alerts.yaml",
	} {
		t.Run(file, func(t *testing.T) {
			a := crd.admit(t, readTestdata(t, file))
			if !a.ok() {
				t.Fatalf("refused:\n%s", a)
			}
			stored, err := json.Marshal(a.Object["spec"])
			if err != nil {
				t.Fatal(err)
			}
			var spec functions.Spec
			if err := json.Unmarshal(stored, &spec); err != nil {
				t.Fatalf("decode into functions.Spec: %v", err)
			}
			back, err := json.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(withoutZeroes(t, stored), withoutZeroes(t, back)); diff != "" {
				t.Errorf("spec through functions.Spec (-stored +domain):\n%s", diff)
			}
		})
	}
}

// withoutZeroes decodes JSON and drops empty strings, false, zero numbers and empty collections,
// which the domain omits and which mean the same as an absent field.
func withoutZeroes(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var prune func(v any) (any, bool)
	prune = func(v any) (any, bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if p, keep := prune(e); keep {
					x[k] = p
				} else {
					delete(x, k)
				}
			}
			return x, len(x) > 0
		case []any:
			for i, e := range x {
				x[i], _ = prune(e)
			}
			return x, len(x) > 0
		case string:
			return x, x != ""
		case bool:
			return x, x
		case float64:
			return x, x != 0
		}
		return v, v != nil
	}
	out, _ := prune(v)
	return out
}

// The status Siskin writes for every phase is admitted whole by the status subresource.
func TestDomainStatusIsAdmitted(t *testing.T) {
	crd := loadCRD(t, "Canary")
	at := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	for _, phase := range functions.Phases {
		t.Run(string(phase), func(t *testing.T) {
			st := functions.State{
				Phase:                         phase,
				Routing:                       functions.Routing{Primary: 90, Canary: 10},
				FailedChecks:                  1,
				Iterations:                    2,
				LastAppliedSpec:               "5d8f9c7b6",
				LastPromotedSpec:              "7c6b5a4d3",
				TrackedConfigs:                map[string]string{"configmap/podinfo-config": "0123456789abcdef", "secret/podinfo-tls": "fedcba9876543210"},
				LastTransitionTime:            at,
				SessionAffinityCookie:         "flagger-cookie=abc; Max-Age=86400",
				PrimarySessionAffinityCookie:  "flagger-primary-cookie=def",
				PreviousSessionAffinityCookie: "flagger-cookie=old",
				Message:                       "Advance podinfo.default canary weight 10",
				Trigger:                       &functions.Trigger{Kind: "push", EventID: "e1", Source: "distribution", Detail: "ghcr.io/stefanprodan/podinfo:6.1.0", At: at},
				SpecError:                     "spec.service.canary.host podinfo.default.svc.cluster.local is not podinfo-canary.default.svc.cluster.local",
			}
			obj := readTestdata(t, "canary-seed.yaml")
			obj["status"] = toUnstructured(t, st.Status())
			if a := crd.admit(t, obj); !a.ok() {
				t.Errorf("status of phase %s refused:\n%s", phase, a)
			}
		})
	}
}

func toUnstructured(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return readObject(t, b)
}

// Every field the domain can serialise survives pruning, so that nothing Siskin writes or reads is
// dropped by the apiserver. The values are filled in by reflection, so a field added to the domain
// later is covered without touching this test.
func TestEveryDomainFieldSurvivesPruning(t *testing.T) {
	crd := loadCRD(t, "Canary")
	var spec functions.Spec
	var status functions.Status
	fillEveryField(reflect.ValueOf(&spec).Elem())
	fillEveryField(reflect.ValueOf(&status).Elem())
	obj := map[string]any{
		"apiVersion": "flagger.app/v1beta1",
		"kind":       "Canary",
		"metadata":   map[string]any{"name": "filled", "namespace": "default"},
		"spec":       toUnstructured(t, spec),
		"status":     toUnstructured(t, status),
	}
	got := pruning.PruneWithOptions(obj, crd.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if diff := cmp.Diff(domainFieldsTheSchemaRefuses, got); diff != "" {
		t.Errorf("domain fields the schema prunes (-want +got):\n%s", diff)
	}
}

var (
	rawMessageType = reflect.TypeOf(json.RawMessage(nil))
	timeType       = reflect.TypeOf(time.Time{})
)

// fillEveryField gives every exported field a non-zero value, so omitempty keeps it.
func fillEveryField(v reflect.Value) {
	switch {
	case v.Type() == rawMessageType:
		v.SetBytes([]byte("{}")) // opaque to the domain; only its presence matters here
		return
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillEveryField(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillEveryField(v.Field(i))
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fillEveryField(s.Index(0))
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillEveryField(k)
		fillEveryField(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	}
}

// Walks the schema and the Go types side by side: names on one side only, and types that cannot
// hold each other's values.
func TestSchemaAndDomainAgree(t *testing.T) {
	root := loadCRD(t, "Canary").v1.Spec.Versions[0].Schema.OpenAPIV3Schema
	var d schemaDiff
	specSchema, statusSchema := root.Properties["spec"], root.Properties["status"]
	d.compare(&specSchema, reflect.TypeOf(functions.Spec{}), "spec")
	d.compare(&statusSchema, reflect.TypeOf(functions.Status{}), "status")
	slices.Sort(d.schemaOnly)
	slices.Sort(d.domainOnly)
	slices.Sort(d.numberIntoInt)

	if diff := cmp.Diff(flaggerFieldsSiskinDoesNotRead, d.schemaOnly); diff != "" {
		t.Errorf("schema fields with no domain field (-documented +found):\n%s", diff)
	}
	if diff := cmp.Diff(domainFieldsTheSchemaRefuses, d.domainOnly); diff != "" {
		t.Errorf("domain fields with no schema field (-documented +found):\n%s", diff)
	}
	if len(d.mismatch) > 0 {
		t.Errorf("type mismatches:\n%s", strings.Join(d.mismatch, "\n"))
	}
	// Flagger types counts and weights as `number`; a fractional value is admitted and then
	// fails to decode into the domain's int. Logged, not failed: the schema keeps Flagger's types.
	t.Logf("number in the schema, integer in the domain: %s", strings.Join(d.numberIntoInt, ", "))
}

type schemaDiff struct {
	schemaOnly, domainOnly, mismatch, numberIntoInt []string
}

func (d *schemaDiff) compare(s *apiextensionsv1.JSONSchemaProps, t reflect.Type, at string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	mismatch := func(want string) {
		d.mismatch = append(d.mismatch, at+": schema "+s.Type+" "+s.Format+", domain "+t.String()+" (want "+want+")")
	}
	switch {
	case t == rawMessageType:
		return // kept raw by the domain; decoded by the istio package into istio.io/api types
	case t == timeType:
		if s.Type != "string" || s.Format != "date-time" {
			mismatch("string date-time")
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if s.Type != "object" {
			mismatch("object")
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			fields[name] = f.Type
		}
		for name, prop := range s.Properties {
			ft, ok := fields[name]
			if !ok {
				d.schemaOnly = append(d.schemaOnly, at+"."+name)
				continue
			}
			d.compare(&prop, ft, at+"."+name)
		}
		for name := range fields {
			if _, ok := s.Properties[name]; !ok {
				d.domainOnly = append(d.domainOnly, at+"."+name)
			}
		}
	case reflect.Map:
		if s.Type != "object" || s.AdditionalProperties == nil || s.AdditionalProperties.Schema == nil {
			mismatch("object with additionalProperties")
			return
		}
		d.compare(s.AdditionalProperties.Schema, t.Elem(), at+"{}")
	case reflect.Slice:
		if s.Type != "array" || s.Items == nil || s.Items.Schema == nil {
			mismatch("array")
			return
		}
		d.compare(s.Items.Schema, t.Elem(), at+"[]")
	case reflect.String:
		if s.Type != "string" {
			mismatch("string")
		}
	case reflect.Bool:
		if s.Type != "boolean" {
			mismatch("boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch s.Type {
		case "integer":
		case "number":
			d.numberIntoInt = append(d.numberIntoInt, at)
		default:
			mismatch("integer")
		}
	case reflect.Float32, reflect.Float64:
		if s.Type != "number" {
			mismatch("number")
		}
	default:
		mismatch("a JSON type")
	}
}
