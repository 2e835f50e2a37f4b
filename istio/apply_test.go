package istio

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	istioapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/siskin-dev/siskin/functions"
)

var vsResource = schema.GroupResource{Group: "networking.istio.io", Resource: "virtualservices"}

func newTestRouter(t *testing.T, objects ...runtime.Object) (*Router, *fake.Clientset) {
	t.Helper()
	client := fake.NewSimpleClientset(objects...)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return NewRouter(client, log, time.Second), client
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func getVS(t *testing.T, client *fake.Clientset, name string) *networkingv1.VirtualService {
	t.Helper()
	vs, err := client.NetworkingV1().VirtualServices("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VirtualService %s: %v", name, err)
	}
	return vs
}

func getDR(t *testing.T, client *fake.Clientset, name string) *networkingv1.DestinationRule {
	t.Helper()
	dr, err := client.NetworkingV1().DestinationRules("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get DestinationRule %s: %v", name, err)
	}
	return dr
}

// writes lists the mutating calls the fake saw, as "verb resource".
func writes(client *fake.Clientset) []string {
	var out []string
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

func mustRender(t *testing.T, c functions.Canary, p functions.RoutePlan) *networkingv1.VirtualService {
	t.Helper()
	vs, err := RenderVirtualService(c, p)
	if err != nil {
		t.Fatalf("RenderVirtualService: %v", err)
	}
	return vs
}

// preexisting is a VirtualService a user wrote before installing the Canary.
func preexisting() *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{
		Name: "podinfo", Namespace: "default", UID: "user-vs-uid",
		Labels: map[string]string{"owner": "team-a"},
	}}
	vs.Spec.Hosts = []string{"podinfo.example.com"}
	vs.Spec.Gateways = []string{"istio-system/public-gateway"}
	vs.Spec.Http = []*istioapi.HTTPRoute{{Route: []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: "podinfo"}}}}}
	return vs
}

func behindGateway(c *functions.Canary) {
	c.Spec.Service.Hosts = []string{"podinfo.example.com"}
	c.Spec.Service.Gateways = []string{"istio-system/public-gateway"}
}

func TestApplyRoutesCreates(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo(func(c *functions.Canary) {
		c.Spec.Service.TrafficPolicy = json.RawMessage(`{"tls":{"mode":"ISTIO_MUTUAL"}}`)
	})
	if err := router.ApplyRoutes(context.Background(), c, plan(100, 0)); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}

	wantVS := mustRender(t, c, plan(100, 0))
	if diff := cmp.Diff(wantVS, getVS(t, client, "podinfo"), protocmp.Transform()); diff != "" {
		t.Errorf("VirtualService mismatch (-want +got):\n%s", diff)
	}
	wantPrimary, wantCanary, err := RenderDestinationRules(c)
	if err != nil {
		t.Fatalf("RenderDestinationRules: %v", err)
	}
	if diff := cmp.Diff(wantPrimary, getDR(t, client, "podinfo-primary"), protocmp.Transform()); diff != "" {
		t.Errorf("primary DestinationRule mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantCanary, getDR(t, client, "podinfo-canary"), protocmp.Transform()); diff != "" {
		t.Errorf("canary DestinationRule mismatch (-want +got):\n%s", diff)
	}
	if got, want := len(writes(client)), 3; got != want {
		t.Errorf("writes: got %v, want %d creates", writes(client), want)
	}
}

func TestApplyRoutesDoesNotWriteWhenUnchanged(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo(func(c *functions.Canary) {
		c.Spec.Service.Retries = json.RawMessage(`{"attempts":3,"perTryTimeout":"500ms"}`)
		c.Spec.Service.TrafficPolicy = json.RawMessage(`{"loadBalancer":{"simple":"LEAST_REQUEST"}}`)
	})
	p := plan(90, 10)
	if err := router.ApplyRoutes(context.Background(), c, p); err != nil {
		t.Fatalf("first ApplyRoutes: %v", err)
	}
	client.ClearActions()
	if err := router.ApplyRoutes(context.Background(), c, p); err != nil {
		t.Fatalf("second ApplyRoutes: %v", err)
	}
	if got := writes(client); len(got) != 0 {
		t.Errorf("second ApplyRoutes wrote %v, want no writes", got)
	}
	if got, want := len(client.Actions()), 3; got != want {
		t.Errorf("second ApplyRoutes made %d calls, want %d gets", got, want)
	}
}

func TestApplyRoutesCorrectsAHandEdit(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo()
	p := plan(80, 20)
	if err := router.ApplyRoutes(context.Background(), c, p); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}

	// Someone moves all traffic to the canary by hand, and labels the object for their tooling.
	edited := getVS(t, client, "podinfo")
	edited.Spec.Http[0].Route[0].Weight = 0
	edited.Spec.Http[0].Route[1].Weight = 100
	edited.Labels = map[string]string{"tooling": "kept"}
	if _, err := client.NetworkingV1().VirtualServices("default").Update(context.Background(), edited, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("hand edit: %v", err)
	}
	// And loosens the canary's DestinationRule.
	dr := getDR(t, client, "podinfo-canary")
	dr.Spec.TrafficPolicy = &istioapi.TrafficPolicy{Tls: &istioapi.ClientTLSSettings{Mode: istioapi.ClientTLSSettings_DISABLE}}
	if _, err := client.NetworkingV1().DestinationRules("default").Update(context.Background(), dr, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("hand edit: %v", err)
	}
	client.ClearActions()

	if err := router.ApplyRoutes(context.Background(), c, p); err != nil {
		t.Fatalf("ApplyRoutes after the edit: %v", err)
	}
	live := getVS(t, client, "podinfo")
	if got, ok := WeightsOf(live); !ok || got != p.Routing {
		t.Errorf("weights after correction: got %+v (ok=%v), want %+v", got, ok, p.Routing)
	}
	want := mustRender(t, c, p)
	if diff := cmp.Diff(&want.Spec, &live.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("VirtualService spec after correction (-want +got):\n%s", diff)
	}
	if got := live.Labels["tooling"]; got != "kept" {
		t.Errorf("foreign label: got %q, want it kept", got)
	}
	if got := getDR(t, client, "podinfo-canary").Spec.TrafficPolicy; got != nil {
		t.Errorf("canary DestinationRule trafficPolicy: got %v, want none", got)
	}
	if got, want := writes(client), []string{"update destinationrules", "update virtualservices"}; !sameElements(got, want) {
		t.Errorf("writes: got %v, want %v", got, want)
	}
}

func TestApplyRoutesFollowsThePlan(t *testing.T) {
	router, _ := newTestRouter(t)
	c := podinfo()
	for _, canary := range []int{0, 5, 10, 50, 0} {
		p := plan(100-canary, canary)
		if err := router.ApplyRoutes(context.Background(), c, p); err != nil {
			t.Fatalf("ApplyRoutes(%+v): %v", p.Routing, err)
		}
		got, found, err := router.ObserveRoutes(context.Background(), c)
		if err != nil || !found {
			t.Fatalf("ObserveRoutes: got found=%v err=%v, want the routing", found, err)
		}
		if got != p.Routing {
			t.Errorf("ObserveRoutes after ApplyRoutes(%+v): got %+v", p.Routing, got)
		}
	}
}

func TestApplyRoutesTakesOverAPreexistingVirtualService(t *testing.T) {
	original := preexisting()
	router, client := newTestRouter(t, original.DeepCopy())
	c := podinfo(behindGateway)
	p := plan(100, 0)
	if err := router.ApplyRoutes(context.Background(), c, p); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}
	live := getVS(t, client, "podinfo")

	want := mustRender(t, c, p)
	if diff := cmp.Diff(&want.Spec, &live.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("spec after takeover (-want +got):\n%s", diff)
	}
	saved := &istioapi.VirtualService{}
	if err := json.Unmarshal([]byte(live.Annotations[OriginalConfigAnnotation]), saved); err != nil {
		t.Fatalf("annotation %s: %v", OriginalConfigAnnotation, err)
	}
	if diff := cmp.Diff(&original.Spec, saved, protocmp.Transform()); diff != "" {
		t.Errorf("saved original spec (-want +got):\n%s", diff)
	}
	if len(live.OwnerReferences) != 0 {
		t.Errorf("owner references: got %v, want none on a VirtualService the user created", live.OwnerReferences)
	}
	if got := live.Labels["owner"]; got != "team-a" {
		t.Errorf("user label: got %q, want team-a", got)
	}

	// The next steps keep the saved original, even when the spec changes again.
	if err := router.ApplyRoutes(context.Background(), c, plan(90, 10)); err != nil {
		t.Fatalf("second ApplyRoutes: %v", err)
	}
	if got := getVS(t, client, "podinfo").Annotations[OriginalConfigAnnotation]; got != live.Annotations[OriginalConfigAnnotation] {
		t.Errorf("original configuration after a second step: got %s, want %s", got, live.Annotations[OriginalConfigAnnotation])
	}

	// revertOnDeletion: Finalize restores the user's spec.
	if err := router.Finalize(context.Background(), c); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	restored := getVS(t, client, "podinfo")
	if diff := cmp.Diff(&original.Spec, &restored.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("spec after Finalize (-want +got):\n%s", diff)
	}
	if _, ok := restored.Annotations[OriginalConfigAnnotation]; ok {
		t.Errorf("annotation %s is still there after Finalize", OriginalConfigAnnotation)
	}

	// A second Finalize (a retried deletion) leaves it alone.
	client.ClearActions()
	if err := router.Finalize(context.Background(), c); err != nil {
		t.Fatalf("second Finalize: %v", err)
	}
	if got := writes(client); len(got) != 0 {
		t.Errorf("second Finalize wrote %v, want nothing", got)
	}
}

func TestTakeoverWithKubectlLastAppliedStoresNoCopy(t *testing.T) {
	original := preexisting()
	applied, err := json.Marshal(original)
	if err != nil {
		t.Fatal(err)
	}
	live := original.DeepCopy()
	live.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(applied)}
	router, client := newTestRouter(t, live)
	c := podinfo(behindGateway)

	if err := router.ApplyRoutes(context.Background(), c, plan(100, 0)); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}
	if _, ok := getVS(t, client, "podinfo").Annotations[OriginalConfigAnnotation]; ok {
		t.Errorf("annotation %s set, want none when kubectl's last-applied configuration exists", OriginalConfigAnnotation)
	}
	if err := router.Finalize(context.Background(), c); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if diff := cmp.Diff(&original.Spec, &getVS(t, client, "podinfo").Spec, protocmp.Transform()); diff != "" {
		t.Errorf("spec after Finalize (-want +got):\n%s", diff)
	}
}

func TestFinalizeDeletesTheVirtualServiceSiskinCreated(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo()
	if err := router.ApplyRoutes(context.Background(), c, plan(100, 0)); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}
	if err := router.Finalize(context.Background(), c); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	_, err := client.NetworkingV1().VirtualServices("default").Get(context.Background(), "podinfo", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("get after Finalize: got %v, want NotFound", err)
	}
	if _, found, err := router.ObserveRoutes(context.Background(), c); err != nil || found {
		t.Errorf("ObserveRoutes after Finalize: got found=%v err=%v, want not found", found, err)
	}
}

func TestFinalizeLeavesAForeignVirtualServiceWithoutOriginal(t *testing.T) {
	foreign := preexisting()
	foreign.Annotations = map[string]string{"note": "hand made"}
	router, client := newTestRouter(t, foreign.DeepCopy())
	if err := router.Finalize(context.Background(), podinfo()); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if got := writes(client); len(got) != 0 {
		t.Errorf("Finalize wrote %v, want nothing", got)
	}
	if !proto.Equal(&foreign.Spec, &getVS(t, client, "podinfo").Spec) {
		t.Errorf("Finalize changed a VirtualService it had no original for")
	}
}

func TestApplyRoutesRefusesAVirtualServiceOfAnotherCanary(t *testing.T) {
	other := preexisting()
	other.OwnerReferences = []metav1.OwnerReference{{APIVersion: "flagger.app/v1beta1", Kind: "Canary", Name: "podinfo-v2", UID: "other-uid", Controller: yes()}}
	router, client := newTestRouter(t, other)
	err := router.ApplyRoutes(context.Background(), podinfo(), plan(100, 0))
	if !errors.Is(err, functions.ErrInvalid) {
		t.Fatalf("ApplyRoutes: got %v, want an error wrapping ErrInvalid", err)
	}
	for _, w := range writes(client) {
		if w == "update virtualservices" {
			t.Errorf("the other Canary's VirtualService was updated")
		}
	}
}

func TestApplyRoutesRetriesConflicts(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo()
	if err := router.ApplyRoutes(context.Background(), c, plan(100, 0)); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}
	conflicts := 2
	client.PrependReactor("update", "virtualservices", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts == 0 {
			return false, nil, nil
		}
		conflicts--
		return true, nil, apierrors.NewConflict(vsResource, "podinfo", errors.New("the object has been modified"))
	})
	client.ClearActions()
	if err := router.ApplyRoutes(context.Background(), c, plan(90, 10)); err != nil {
		t.Fatalf("ApplyRoutes with two conflicts: %v", err)
	}
	gets := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "virtualservices" {
			gets++
		}
	}
	if gets != 3 {
		t.Errorf("VirtualService gets: got %d, want 3 (a fresh read per attempt)", gets)
	}
	if got, _ := WeightsOf(getVS(t, client, "podinfo")); got != plan(90, 10).Routing {
		t.Errorf("weights: got %+v, want 90/10", got)
	}
}

func TestApplyRoutesErrorKinds(t *testing.T) {
	tests := []struct {
		name    string
		verb    string
		err     error
		wantErr error
	}{
		{"conflict that never resolves", "update", apierrors.NewConflict(vsResource, "podinfo", errors.New("modified")), functions.ErrConflict},
		{"apiserver unavailable", "get", apierrors.NewServiceUnavailable("etcd is down"), functions.ErrUnavailable},
		{"timeout", "get", apierrors.NewTimeoutError("slow", 1), functions.ErrUnavailable},
		{"schema rejects the object", "update", apierrors.NewInvalid(schema.GroupKind{Group: "networking.istio.io", Kind: "VirtualService"}, "podinfo", nil), functions.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			router, client := newTestRouter(t)
			c := podinfo()
			if err := router.ApplyRoutes(context.Background(), c, plan(100, 0)); err != nil {
				t.Fatalf("ApplyRoutes: %v", err)
			}
			client.PrependReactor(tt.verb, "virtualservices", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tt.err
			})
			err := router.ApplyRoutes(context.Background(), c, plan(90, 10))
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ApplyRoutes: got %v, want an error wrapping %v", err, tt.wantErr)
			}
		})
	}
}

func TestApplyRoutesRejectsAnInvalidSpecBeforeCallingTheAPI(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo(func(c *functions.Canary) { c.Spec.Service.Match = json.RawMessage(`[{"urri":{}}]`) })
	err := router.ApplyRoutes(context.Background(), c, plan(100, 0))
	if !errors.Is(err, functions.ErrInvalid) {
		t.Fatalf("ApplyRoutes: got %v, want ErrInvalid", err)
	}
	if len(client.Actions()) != 0 {
		t.Errorf("API calls: got %d, want none", len(client.Actions()))
	}
}

func TestApplyRoutesAdoptsAnOrphanDestinationRule(t *testing.T) {
	orphan := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "podinfo-primary", Namespace: "default"}}
	orphan.Spec.Host = "podinfo-primary"
	router, client := newTestRouter(t, orphan)
	if err := router.ApplyRoutes(context.Background(), podinfo(), plan(100, 0)); err != nil {
		t.Fatalf("ApplyRoutes: %v", err)
	}
	if diff := cmp.Diff(canaryOwner(), getDR(t, client, "podinfo-primary").OwnerReferences); diff != "" {
		t.Errorf("owner references (-want +got):\n%s", diff)
	}
}

func TestObserveRoutes(t *testing.T) {
	t.Run("no VirtualService", func(t *testing.T) {
		router, _ := newTestRouter(t)
		got, found, err := router.ObserveRoutes(context.Background(), podinfo())
		if err != nil || found {
			t.Errorf("ObserveRoutes: got %+v found=%v err=%v, want not found", got, found, err)
		}
	})
	t.Run("a VirtualService with no canary route", func(t *testing.T) {
		router, _ := newTestRouter(t, preexisting())
		got, found, err := router.ObserveRoutes(context.Background(), podinfo())
		if err != nil || found {
			t.Errorf("ObserveRoutes: got %+v found=%v err=%v, want not found", got, found, err)
		}
	})
	t.Run("mirrored", func(t *testing.T) {
		c := podinfo(func(c *functions.Canary) { c.Spec.Analysis.Mirror = true })
		p := functions.RoutePlan{Routing: functions.Routing{Primary: 100, Mirrored: true}}
		router, _ := newTestRouter(t, mustRender(t, c, p))
		got, found, err := router.ObserveRoutes(context.Background(), c)
		if err != nil || !found || got != p.Routing {
			t.Errorf("ObserveRoutes: got %+v found=%v err=%v, want %+v", got, found, err, p.Routing)
		}
	})
	t.Run("apiserver down", func(t *testing.T) {
		router, client := newTestRouter(t)
		client.PrependReactor("get", "virtualservices", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewInternalError(errors.New("boom"))
		})
		_, _, err := router.ObserveRoutes(context.Background(), podinfo())
		if !errors.Is(err, functions.ErrUnavailable) {
			t.Errorf("ObserveRoutes: got %v, want ErrUnavailable", err)
		}
	})
}

func sameElements(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// A VirtualService as an ApiServerSource event carries it (Resource mode) is judged without a
// read: Siskin's own write coming back is as planned; a hand edit, another plan, another
// object or a body that does not decode is not, and gets read and corrected.
func TestAsPlannedJudgesTheEventsObject(t *testing.T) {
	router, client := newTestRouter(t)
	c := podinfo()
	if err := router.ApplyRoutes(context.Background(), c, plan(90, 10)); err != nil {
		t.Fatal(err)
	}
	asEvent := func(edit func(vs *networkingv1.VirtualService)) []byte {
		vs := getVS(t, client, "podinfo").DeepCopy()
		vs.Kind, vs.APIVersion = "VirtualService", "networking.istio.io/v1"
		vs.ResourceVersion = "12345"
		if edit != nil {
			edit(vs)
		}
		b, err := json.Marshal(vs)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name             string
		object           []byte
		plan             functions.RoutePlan
		want             bool
		weightsAsPlanned bool
	}{
		{name: "Siskin's own write coming back", object: asEvent(nil), plan: plan(90, 10), want: true},
		{name: "the plan moved on since", object: asEvent(nil), plan: plan(85, 15), want: false},
		{name: "a hand edit of the weights", object: asEvent(func(vs *networkingv1.VirtualService) {
			vs.Spec.Http[0].Route[0].Weight, vs.Spec.Http[0].Route[1].Weight = 50, 50
		}), plan: plan(90, 10), want: false},
		{name: "another canary's VirtualService", object: asEvent(func(vs *networkingv1.VirtualService) { vs.Name = "other" }), plan: plan(90, 10), want: false},
		{name: "not a VirtualService", object: []byte(`{"kind":"DestinationRule","metadata":{"name":"podinfo","namespace":"default"}}`), plan: plan(90, 10), want: false},
		{name: "garbage", object: []byte(`{"kind":`), plan: plan(90, 10), want: false},
		// Judged by its weights alone (known by its owner), an edit elsewhere waits for the
		// next re-assertion.
		{name: "a hand edit of the gateways", object: asEvent(func(vs *networkingv1.VirtualService) { vs.Spec.Gateways = []string{"public"} }),
			plan: plan(90, 10), want: false, weightsAsPlanned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := router.AsPlanned(c, tt.plan, tt.object); got != tt.want {
				t.Errorf("AsPlanned: got %v, want %v", got, tt.want)
			}
			if got, want := router.WeightsAsPlanned(tt.plan, tt.object), tt.want || tt.weightsAsPlanned; got != want {
				t.Errorf("WeightsAsPlanned: got %v, want %v", got, want)
			}
		})
	}
}
