package knative_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/knative"
)

// crdFiles are the CRDs the bundle ships, by kind.
var crdFiles = map[string]string{
	"Canary":         "crds/flagger.app_canaries.yaml",
	"MetricTemplate": "crds/flagger.app_metrictemplates.yaml",
	"AlertProvider":  "crds/flagger.app_alertproviders.yaml",
}

// servedCRD is one CRD compiled the way kube-apiserver compiles it for serving a custom resource.
type servedCRD struct {
	v1         *apiextensionsv1.CustomResourceDefinition
	internal   *apiextensions.CustomResourceDefinition
	schema     *apiextensions.JSONSchemaProps
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// loadCRD reads a shipped CRD strictly (a misspelt CRD key fails here rather than being dropped),
// defaults and converts it as the apiserver does, and rejects it with the apiserver's own CRD
// validation (structural rules, printer column paths, CEL compilation, defaults).
func loadCRD(t *testing.T, kind string) *servedCRD {
	t.Helper()
	raw, err := fs.ReadFile(knative.Manifests, crdFiles[kind])
	if err != nil {
		t.Fatalf("read CRD of %s: %v", kind, err)
	}
	v1 := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(raw, v1); err != nil {
		t.Fatalf("decode CRD %s: %v", crdFiles[kind], err)
	}

	scheme := runtime.NewScheme()
	install.Install(scheme)
	defaulted := v1.DeepCopy()
	scheme.Default(defaulted)
	internal := &apiextensions.CustomResourceDefinition{}
	if err := scheme.Convert(defaulted, internal, nil); err != nil {
		t.Fatalf("convert CRD %s: %v", crdFiles[kind], err)
	}
	if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), internal); len(errs) > 0 {
		t.Fatalf("kube-apiserver would refuse CRD %s:\n%v", crdFiles[kind], errs.ToAggregate())
	}

	validation, err := apiextensions.GetSchemaForVersion(internal, "v1beta1")
	if err != nil || validation == nil || validation.OpenAPIV3Schema == nil {
		t.Fatalf("CRD %s has no v1beta1 schema (err %v)", crdFiles[kind], err)
	}
	s := validation.OpenAPIV3Schema
	structural, err := structuralschema.NewStructural(s)
	if err != nil {
		t.Fatalf("CRD %s: schema is not structural: %v", crdFiles[kind], err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(s)
	if err != nil {
		t.Fatalf("CRD %s: schema validator: %v", crdFiles[kind], err)
	}
	return &servedCRD{
		v1: v1, internal: internal, schema: s, structural: structural, validator: validator,
		cel: cel.NewValidator(structural, true, celconfig.PerCallLimit),
	}
}

// admission is what kube-apiserver makes of a create with fieldValidation=Strict (kubectl's
// default): the fields pruning would drop, which strict validation turns into errors, and the
// schema's verdict on the pruned and defaulted object.
type admission struct {
	UnknownFields []string
	Errors        field.ErrorList
	Object        map[string]any // pruned and defaulted, as it would be stored
}

func (a admission) ok() bool { return len(a.UnknownFields) == 0 && len(a.Errors) == 0 }

func (a admission) String() string {
	var b strings.Builder
	for _, f := range a.UnknownFields {
		fmt.Fprintf(&b, "strict decoding error: unknown field %q\n", f)
	}
	for _, e := range a.Errors {
		fmt.Fprintf(&b, "%v\n", e)
	}
	return b.String()
}

func (c *servedCRD) admit(t *testing.T, obj map[string]any) admission {
	t.Helper()
	obj = runtime.DeepCopyJSON(obj)
	unknown := pruning.PruneWithOptions(obj, c.structural, true, structuralschema.UnknownFieldPathOptions{
		TrackUnknownFieldPaths: true,
	})
	structuraldefaulting.Default(obj, c.structural)
	errs := apiservervalidation.ValidateCustomResource(nil, obj, c.validator)
	celErrs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return admission{UnknownFields: unknown, Errors: append(errs, celErrs...), Object: obj}
}

// readObject reads one YAML manifest into the unstructured form the apiserver validates (numbers
// as int64 or float64). Duplicate keys fail, as they do under strict field validation.
func readObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(j, &obj); err != nil {
		t.Fatalf("decode object: %v", err)
	}
	return obj
}

func readTestdata(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return readObject(t, b)
}
