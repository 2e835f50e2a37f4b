package deploy

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/siskin-dev/siskin/functions"
)

func TestTemplateSource(t *testing.T) {
	mt := unstructuredFromYAML(t, `
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: error-rate, namespace: istio-system}
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
    headers: {X-Scope-OrgID: [tenant-a]}
    secretRef: {name: prom-auth}
    insecureSkipVerify: true
  query: sum(rate(x{namespace="{{ namespace }}"}[{{ interval }}]))`)
	ap := unstructuredFromYAML(t, `
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {name: on-call, namespace: default}
spec: {type: slack, channel: alerts, username: flagger, proxy: http://proxy:8080, secretRef: {name: slack-url}}`)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "prom-auth", Namespace: "istio-system"},
		Data: map[string][]byte{"token": []byte("t0k")}}
	f := newFixture(t, []runtime.Object{secret}, mt, ap)
	ctx := context.Background()

	gotMT, err := f.c.MetricTemplate(ctx, "istio-system", "error-rate")
	if err != nil {
		t.Fatalf("MetricTemplate: %v", err)
	}
	wantMT := MetricTemplate{ProviderType: "prometheus", Address: "http://prometheus.istio-system:9090",
		Headers: map[string][]string{"X-Scope-OrgID": {"tenant-a"}}, SecretRef: "prom-auth", InsecureSkipVerify: true,
		Query: `sum(rate(x{namespace="{{ namespace }}"}[{{ interval }}]))`}
	if diff := cmp.Diff(wantMT, gotMT); diff != "" {
		t.Errorf("MetricTemplate (-want +got):\n%s", diff)
	}

	gotAP, err := f.c.AlertProvider(ctx, "default", "on-call")
	if err != nil {
		t.Fatalf("AlertProvider: %v", err)
	}
	wantAP := AlertProvider{Type: "slack", Channel: "alerts", Username: "flagger", Proxy: "http://proxy:8080", SecretRef: "slack-url"}
	if diff := cmp.Diff(wantAP, gotAP); diff != "" {
		t.Errorf("AlertProvider (-want +got):\n%s", diff)
	}

	data, err := f.c.Secret(ctx, "istio-system", "prom-auth")
	if err != nil || string(data["token"]) != "t0k" {
		t.Errorf("Secret = %v, %v; want token t0k", data, err)
	}

	for name, err := range map[string]error{
		"missing template": func() error { _, err := f.c.MetricTemplate(ctx, "default", "nope"); return err }(),
		"missing provider": func() error { _, err := f.c.AlertProvider(ctx, "default", "nope"); return err }(),
		"missing secret":   func() error { _, err := f.c.Secret(ctx, "default", "nope"); return err }(),
	} {
		if !errors.Is(err, functions.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", name, err)
		}
	}
	if _, err := f.c.MetricTemplate(ctx, "", "x"); !errors.Is(err, functions.ErrInvalid) {
		t.Errorf("empty namespace: got %v, want ErrInvalid", err)
	}
}
