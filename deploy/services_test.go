package deploy

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/siskin-dev/siskin/functions"
)

func boolTrue() *bool { t := true; return &t }

var podinfoOwner = []metav1.OwnerReference{{APIVersion: "flagger.app/v1beta1", Kind: "Canary", Name: "podinfo",
	UID: "uid-podinfo", Controller: boolTrue(), BlockOwnerDeletion: boolTrue()}}

var fluxOff = map[string]string{"kustomize.toolkit.fluxcd.io/reconcile": "disabled", "helm.toolkit.fluxcd.io/driftDetection": "disabled"}

func TestServicePorts(t *testing.T) {
	target := podinfo()
	tests := []struct {
		name    string
		service functions.ServiceSpec
		want    []corev1.ServicePort
		wantErr bool
	}{
		{
			name:    "defaults: http, targetPort = port",
			service: functions.ServiceSpec{Port: 80},
			want:    []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
		{
			name:    "portName, numeric targetPort, appProtocol",
			service: functions.ServiceSpec{Port: 80, PortName: "grpc", TargetPort: json.RawMessage(`9898`), AppProtocol: "grpc"},
			want: []corev1.ServicePort{{Name: "grpc", Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(9898),
				AppProtocol: func() *string { s := "grpc"; return &s }()}},
		},
		{
			name:    "named targetPort",
			service: functions.ServiceSpec{Port: 80, TargetPort: json.RawMessage(`"http"`)},
			want:    []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: intstr.FromString("http")}},
		},
		{
			name:    "targetPort 0 is unset",
			service: functions.ServiceSpec{Port: 80, TargetPort: json.RawMessage(`0`)},
			want:    []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
		{
			name:    "port discovery skips the main port and sidecars",
			service: functions.ServiceSpec{Port: 9898, PortDiscovery: true},
			want: []corev1.ServicePort{
				{Name: "http", Protocol: "TCP", Port: 9898, TargetPort: intstr.FromInt32(9898)},
				{Name: "http-metrics", Protocol: "TCP", Port: 9797, TargetPort: intstr.FromInt32(9797)},
				{Name: "tcp-podinfod-2", Protocol: "TCP", Port: 9999, TargetPort: intstr.FromInt32(9999)},
			},
		},
		{
			name:    "bad targetPort",
			service: functions.ServiceSpec{Port: 80, TargetPort: json.RawMessage(`{"x":1}`)},
			wantErr: true,
		},
	}
	withSidecar := target.DeepCopy()
	withSidecar.Spec.Template.Spec.Containers = append(withSidecar.Spec.Template.Spec.Containers,
		corev1.Container{Name: "istio-proxy", Ports: []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: 15090}}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cd := functions.Canary{Spec: functions.Spec{Service: tt.service}}
			got, err := servicePorts(cd, withSidecar)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); !tt.wantErr && diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredServiceShapes(t *testing.T) {
	cd := seedDomain(t)
	cd.Spec.Service.Canary.Labels = map[string]string{"tier": "canary"}
	cd.Spec.Service.Canary.Annotations = map[string]string{"note": "c"}
	ports := []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 9898, TargetPort: intstr.FromInt32(9898)}}

	tests := []struct {
		name, svc, selector string
		meta                *functions.ServiceMeta
		headless            bool
		want                *corev1.Service
	}{
		{
			name: "canary", svc: "podinfo-canary", selector: "podinfo", meta: cd.Spec.Service.Canary,
			want: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "podinfo-canary", Namespace: "default",
					Labels:          map[string]string{"app": "podinfo-canary", "tier": "canary"},
					Annotations:     map[string]string{"note": "c", "kustomize.toolkit.fluxcd.io/reconcile": "disabled", "helm.toolkit.fluxcd.io/driftDetection": "disabled"},
					OwnerReferences: podinfoOwner},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"app": "podinfo"}, Ports: ports},
			},
		},
		{
			name: "primary", svc: "podinfo-primary", selector: "podinfo-primary", meta: cd.Spec.Service.Primary,
			want: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "podinfo-primary", Namespace: "default",
					Labels: map[string]string{"app": "podinfo-primary"}, Annotations: fluxOff, OwnerReferences: podinfoOwner},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"app": "podinfo-primary"}, Ports: ports},
			},
		},
		{
			name: "headless apex", svc: "podinfo", selector: "podinfo-primary", headless: true,
			want: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default",
					Labels: map[string]string{"app": "podinfo"}, Annotations: fluxOff, OwnerReferences: podinfoOwner},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "None",
					Selector: map[string]string{"app": "podinfo-primary"}, Ports: ports},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cd
			c.Spec.Service.Headless = tt.headless
			got := desiredService(c, tt.svc, "app", tt.selector, tt.meta, ports)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("service (-want +got):\n%s", diff)
			}
		})
	}
	if _, ok := cd.Spec.Service.Canary.Labels["app"]; ok {
		t.Errorf("desiredService modified the canary's spec labels: %v", cd.Spec.Service.Canary.Labels)
	}
}

// serverDefaulted is what the apiserver returns for a created Service.
func serverDefaulted(s *corev1.Service) *corev1.Service {
	out := s.DeepCopy()
	out.ResourceVersion = "42"
	out.UID = "svc-uid"
	out.Spec.ClusterIP = "10.96.0.12"
	out.Spec.ClusterIPs = []string{"10.96.0.12"}
	out.Spec.SessionAffinity = corev1.ServiceAffinityNone
	out.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	single := corev1.IPFamilyPolicySingleStack
	out.Spec.IPFamilyPolicy = &single
	cluster := corev1.ServiceInternalTrafficPolicyCluster
	out.Spec.InternalTrafficPolicy = &cluster
	return out
}

func TestMergeService(t *testing.T) {
	cd := seedDomain(t)
	ports := []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 9898, TargetPort: intstr.FromInt32(9898)}}
	desired := desiredService(cd, "podinfo", "app", "podinfo-primary", nil, ports)

	t.Run("server defaults do not count as a change", func(t *testing.T) {
		if got := mergeService(serverDefaulted(desired), desired, "podinfo", true); got != nil {
			t.Errorf("got an update %+v, want none", got)
		}
	})
	t.Run("owned: labels, annotations, selector and ports are reset", func(t *testing.T) {
		live := serverDefaulted(desired)
		live.Labels["extra"] = "x"
		live.Annotations = nil
		live.Spec.Selector = map[string]string{"app": "podinfo"}
		live.Spec.Ports[0].Port = 80
		got := mergeService(live, desired, "podinfo", true)
		want := serverDefaulted(desired)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("update (-want +got):\n%s", diff)
		}
	})
	t.Run("not owned: only selector and ports, original selector remembered, NodePorts kept", func(t *testing.T) {
		live := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default", ResourceVersion: "7",
				Labels: map[string]string{"app": "podinfo", "team": "a"}, Annotations: map[string]string{"mine": "yes"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.99",
				Selector: map[string]string{"app": "podinfo", "tier": "web"},
				Ports:    []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 9898, TargetPort: intstr.FromInt32(9898), NodePort: 30080}}},
		}
		got := mergeService(live, desired, "podinfo", true)
		want := live.DeepCopy()
		want.Spec.Selector = map[string]string{"app": "podinfo-primary"}
		want.Annotations = map[string]string{"mine": "yes", OriginalSelectorAnnotation: `{"app":"podinfo","tier":"web"}`,
			"kustomize.toolkit.fluxcd.io/reconcile": "disabled", "helm.toolkit.fluxcd.io/driftDetection": "disabled"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("update (-want +got):\n%s", diff)
		}
		// Applied once, the next reconcile finds nothing to do and keeps the first selector.
		if again := mergeService(got, desired, "podinfo", true); again != nil {
			t.Errorf("got a second update %+v, want none", again)
		}
		if sel := originalSelector(got, "app", "podinfo"); !cmp.Equal(sel, map[string]string{"app": "podinfo", "tier": "web"}) {
			t.Errorf("got original selector %v", sel)
		}
	})
}

func TestOriginalSelector(t *testing.T) {
	svc := func(annotations map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: annotations}}
	}
	tests := []struct {
		name string
		svc  *corev1.Service
		want map[string]string
	}{
		{"remembered", svc(map[string]string{OriginalSelectorAnnotation: `{"k":"v"}`}), map[string]string{"k": "v"}},
		{"kubectl last applied", svc(map[string]string{kubectlLastApplied: `{"spec":{"selector":{"app":"web"}}}`}), map[string]string{"app": "web"}},
		{"Flagger's default", svc(nil), map[string]string{"app": "podinfo"}},
		{"garbage falls back", svc(map[string]string{OriginalSelectorAnnotation: `nope`}), map[string]string{"app": "podinfo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := originalSelector(tt.svc, "app", "podinfo"); !cmp.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
