//go:build e2e

package labtest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istio "istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/siskin-dev/siskin/test/lab"
)

func TestVirtualServiceWithWeightsRoundTrips(t *testing.T) {
	l := lab.Require(t)
	ns := newNamespace(t, adminClient(t))
	client, err := istio.NewForConfig(l.RESTConfig())
	if err != nil {
		t.Fatalf("istio client: %v", err)
	}
	vs := &istiov1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "podinfo"},
		Spec: networking.VirtualService{
			Hosts:    []string{"podinfo"},
			Gateways: []string{"mesh"},
			Http: []*networking.HTTPRoute{{
				Name: "canary",
				Route: []*networking.HTTPRouteDestination{
					{Destination: &networking.Destination{Host: "podinfo-primary"}, Weight: 90},
					{Destination: &networking.Destination{Host: "podinfo-canary"}, Weight: 10},
				},
			}},
		},
	}
	ctx := t.Context()
	if _, err := client.NetworkingV1().VirtualServices(ns).Create(ctx, vs, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("create VirtualService: %v", err)
	}
	got, err := client.NetworkingV1().VirtualServices(ns).Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VirtualService: %v", err)
	}
	weights := map[string]int32{}
	for _, r := range got.Spec.Http[0].Route {
		weights[r.Destination.Host] = r.Weight
	}
	if diff := cmp.Diff(map[string]int32{"podinfo-primary": 90, "podinfo-canary": 10}, weights); diff != "" {
		t.Errorf("route weights read back (-want +got):\n%s", diff)
	}
	if got.Spec.Http[0].Name != "canary" || !cmp.Equal(got.Spec.Hosts, []string{"podinfo"}) {
		t.Errorf("got route %q hosts %v, want route canary hosts [podinfo]", got.Spec.Http[0].Name, got.Spec.Hosts)
	}
}

func TestVirtualServiceForbiddenBySchemaIsRejected(t *testing.T) {
	l := lab.Require(t)
	ns := newNamespace(t, adminClient(t))
	dyn, err := dynamic.NewForConfig(l.RESTConfig())
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	vss := dyn.Resource(schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}).Namespace(ns)
	virtualService := func(name string, route map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{
				"hosts": []any{"podinfo"},
				"http":  []any{map[string]any{"route": []any{route}}},
			},
		}}
	}
	dest := map[string]any{"host": "podinfo-primary"}
	ctx := t.Context()

	tests := []struct {
		name  string
		route map[string]any
		// acceptedLoosely: the same object passes when unknown fields are merely dropped,
		// which proves that strict validation is what refuses it.
		acceptedLoosely bool
		wantErr         string
	}{
		{name: "weight-as-string", route: map[string]any{"destination": dest, "weight": "ten"}, wantErr: "weight"},
		{name: "unknown-field", route: map[string]any{"destination": dest, "wieght": 100}, acceptedLoosely: true, wantErr: "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vss.Create(ctx, virtualService(tt.name, tt.route), metav1.CreateOptions{FieldValidation: "Strict"})
			if err == nil {
				t.Fatalf("create under strict validation: got no error, want one mentioning %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("create under strict validation: got %v, want an error mentioning %q", err, tt.wantErr)
			}
			if tt.acceptedLoosely {
				if _, err := vss.Create(ctx, virtualService(tt.name, tt.route), metav1.CreateOptions{FieldValidation: "Ignore"}); err != nil {
					t.Errorf("create with FieldValidation Ignore: got %v, want it accepted", err)
				}
			}
		})
	}
}
