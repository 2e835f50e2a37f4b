package gatewayapi

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/siskin-dev/siskin/functions"
)

func liveRoute(t *testing.T, client *fake.Clientset) *gwv1.HTTPRoute {
	t.Helper()
	got, err := client.GatewayV1().HTTPRoutes("test").Get(context.Background(), "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get HTTPRoute: %v", err)
	}
	return got
}

func writes(client *fake.Clientset) []string {
	var out []string
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" {
			out = append(out, a.GetVerb())
		}
	}
	return out
}

func TestApplyRoutes(t *testing.T) {
	ctx := context.Background()
	c := canary()
	plan := func(p, w int) functions.RoutePlan {
		return functions.RoutePlan{Routing: functions.Routing{Primary: p, Canary: w}}
	}

	t.Run("created, then left alone, then a weight change, then a hand edit put back", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		r := NewRouter(client, nil, 0)
		if err := r.ApplyRoutes(ctx, c, plan(100, 0)); err != nil {
			t.Fatal(err)
		}
		if err := r.ApplyRoutes(ctx, c, plan(100, 0)); err != nil {
			t.Fatal(err)
		}
		if got, want := writes(client), []string{"create"}; !cmp.Equal(got, want) {
			t.Errorf("writes: got %v, want %v (the second apply writes nothing)", got, want)
		}
		if err := r.ApplyRoutes(ctx, c, plan(90, 10)); err != nil {
			t.Fatal(err)
		}
		if got, ok := WeightsOf(liveRoute(t, client), false); !ok || got != (functions.Routing{Primary: 90, Canary: 10}) {
			t.Errorf("after the weight change: got %+v", got)
		}
		edited := liveRoute(t, client)
		*edited.Spec.Rules[0].BackendRefs[1].Weight = 100
		*edited.Spec.Rules[0].BackendRefs[0].Weight = 0
		edited.Annotations["team"] = "kept"
		if _, err := client.GatewayV1().HTTPRoutes("test").Update(ctx, edited, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := r.ApplyRoutes(ctx, c, plan(90, 10)); err != nil {
			t.Fatal(err)
		}
		got := liveRoute(t, client)
		if w, _ := WeightsOf(got, false); w != (functions.Routing{Primary: 90, Canary: 10}) {
			t.Errorf("hand edit: got %+v, want 90/10 again", w)
		}
		if got.Annotations["team"] != "kept" {
			t.Errorf("another tool's annotation was dropped: %v", got.Annotations)
		}
		if got.Annotations[OriginalConfigAnnotation] != "" {
			t.Errorf("an HTTPRoute Siskin created got an original-configuration annotation")
		}
	})

	t.Run("the apiserver's defaults are not a difference", func(t *testing.T) {
		want, err := RenderHTTPRoute(c, plan(100, 0))
		if err != nil {
			t.Fatal(err)
		}
		stored := want.DeepCopy()
		for i := range stored.Spec.ParentRefs {
			stored.Spec.ParentRefs[i].Group = ptr(gwv1.Group(gwv1.GroupName))
			stored.Spec.ParentRefs[i].Kind = ptr(gwv1.Kind("Gateway"))
		}
		client := fake.NewSimpleClientset(stored)
		if err := NewRouter(client, nil, 0).ApplyRoutes(ctx, c, plan(100, 0)); err != nil {
			t.Fatal(err)
		}
		if got := writes(client); len(got) != 0 {
			t.Errorf("writes: got %v, want none", got)
		}
	})

	t.Run("a user's HTTPRoute is taken over and restored by Finalize", func(t *testing.T) {
		user := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"},
			Spec: gwv1.HTTPRouteSpec{Hostnames: []gwv1.Hostname{"old.example.com"},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo", 100)}}}}}
		client := fake.NewSimpleClientset(user)
		r := NewRouter(client, nil, 0)
		if err := r.ApplyRoutes(ctx, c, plan(100, 0)); err != nil {
			t.Fatal(err)
		}
		taken := liveRoute(t, client)
		if taken.Annotations[OriginalConfigAnnotation] == "" || len(taken.OwnerReferences) != 0 {
			t.Errorf("takeover: annotations %v owners %v, want the original saved and no owner", taken.Annotations, taken.OwnerReferences)
		}
		if err := r.Finalize(ctx, c); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(user.Spec, liveRoute(t, client).Spec); d != "" {
			t.Errorf("restored spec (-want +got):\n%s", d)
		}
	})

	t.Run("Finalize deletes an HTTPRoute Siskin created", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		r := NewRouter(client, nil, 0)
		if err := r.ApplyRoutes(ctx, c, plan(100, 0)); err != nil {
			t.Fatal(err)
		}
		if err := r.Finalize(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := client.GatewayV1().HTTPRoutes("test").Get(ctx, "podinfo", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("got %v, want the HTTPRoute deleted", err)
		}
	})

	t.Run("an HTTPRoute of another Canary is not taken", func(t *testing.T) {
		other, err := RenderHTTPRoute(canary(func(c *functions.Canary) { c.UID = "uid-2" }), plan(100, 0))
		if err != nil {
			t.Fatal(err)
		}
		client := fake.NewSimpleClientset(other)
		err = NewRouter(client, nil, 0).ApplyRoutes(ctx, c, plan(100, 0))
		if !errors.Is(err, functions.ErrInvalid) || !strings.Contains(err.Error(), "controlled by Canary podinfo (uid uid-2)") {
			t.Errorf("got %v, want an invalid error naming the other Canary", err)
		}
	})
}

func TestObserveRoutesReadsFlaggersHTTPRoute(t *testing.T) {
	// Flagger's HTTPRoute at 70/30, as the apiserver stores it (defaults filled in): a Canary
	// Flagger managed goes on from these weights.
	flagger := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"},
		Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{prefix("/")},
			BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 70), backend("podinfo-canary", 30)}}}}}
	client := fake.NewSimpleClientset(flagger)
	got, found, err := NewRouter(client, nil, 0).ObserveRoutes(context.Background(), canary())
	if err != nil || !found || got != (functions.Routing{Primary: 70, Canary: 30}) {
		t.Errorf("ObserveRoutes: got %+v found=%v err=%v, want 70/30", got, found, err)
	}
	if _, found, err := NewRouter(fake.NewSimpleClientset(), nil, 0).ObserveRoutes(context.Background(), canary()); found || err != nil {
		t.Errorf("no HTTPRoute: got found=%v err=%v, want not found and no error", found, err)
	}
}

func TestMissingCRDIsNamed(t *testing.T) {
	client := fake.NewSimpleClientset()
	// What the apiserver answers for a resource it does not serve: a 404 with no object named.
	client.PrependReactor("*", "httproutes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 404,
			Reason: metav1.StatusReasonNotFound, Message: "the server could not find the requested resource"}}
	})
	r := NewRouter(client, nil, 0)
	for name, err := range map[string]error{
		"ApplyRoutes": r.ApplyRoutes(context.Background(), canary(), functions.RoutePlan{Routing: functions.AllToPrimary}),
		"ObserveRoutes": func() error {
			_, _, err := r.ObserveRoutes(context.Background(), canary())
			return err
		}(),
	} {
		if !errors.Is(err, functions.ErrInvalid) || !strings.Contains(err.Error(), CRDName) {
			t.Errorf("%s: got %v, want an invalid error naming %s", name, err, CRDName)
		}
	}
	// A 404 for one object is just "not there".
	notThere := apierrors.NewNotFound(schema.GroupResource{Group: gwv1.GroupName, Resource: "httproutes"}, "podinfo")
	if crdMissing(notThere) {
		t.Errorf("crdMissing(%v): got true, want false", notThere)
	}
}

func TestAsPlanned(t *testing.T) {
	c := canary()
	plan := functions.RoutePlan{Routing: functions.Routing{Primary: 80, Canary: 20}}
	route, err := RenderHTTPRoute(c, plan)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(route)
	r := NewRouter(fake.NewSimpleClientset(), nil, 0)
	if !r.AsPlanned(c, plan, raw) || !r.WeightsAsPlanned(plan, raw) {
		t.Errorf("the rendered HTTPRoute is not as planned")
	}
	other := functions.RoutePlan{Routing: functions.Routing{Primary: 70, Canary: 30}}
	if r.AsPlanned(c, other, raw) || r.WeightsAsPlanned(other, raw) {
		t.Errorf("an HTTPRoute at 80/20 is as planned for 70/30")
	}
}
