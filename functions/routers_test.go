package functions

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// strictRouter refuses canaries without service.gatewayRefs-like hosts, to stand for a
// router with rules of its own.
type strictRouter struct{ fakeRouter }

func (strictRouter) ValidateRoutes(c Canary) []string {
	if len(c.Spec.Service.Hosts) == 0 {
		return []string{"spec.service.hosts is required by this router"}
	}
	return nil
}

func TestRoutersValidate(t *testing.T) {
	routers := Routers{DefaultProvider: fakeRouter{}, "strict": strictRouter{}}
	tests := []struct {
		name     string
		provider string
		hosts    []string
		want     []string
	}{
		{name: "no provider is istio", want: nil},
		{name: "istio by name", provider: "istio", want: nil},
		{name: "an unknown provider names the known ones", provider: "linkerd",
			want: []string{"spec.provider linkerd is not supported: this Siskin routes with istio, strict"}},
		{name: "the router's own rule", provider: "strict",
			want: []string{"spec.service.hosts is required by this router"}},
		{name: "the router's rule met", provider: "strict", hosts: []string{"app.example.com"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			c.Spec.Provider, c.Spec.Service.Hosts = tt.provider, tt.hosts
			got := routers.validate(c)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("validate (-want +got):\n%s", diff)
			}
		})
	}
}

// A canary with an unknown provider is reported invalid and touches no routes; the canary
// beside it releases.
func TestUnknownProviderIsAnInvalidSpecAndBlocksNoOther(t *testing.T) {
	bad, good := seedCanary(), seedCanary()
	bad.Name, bad.Key.Name, bad.Spec.TargetRef.Name = "other", "other", "other"
	bad.Spec.Service.Primary, bad.Spec.Service.Canary = nil, nil
	bad.Spec.Provider = "linkerd"
	f := newFixture(t, bad, good)
	ctx := context.Background()
	if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
		t.Fatalf("tick: %v", err)
	}
	st, err := f.store.Load(ctx, bad.Key)
	if err != nil {
		t.Fatalf("load %s: %v", bad.Key, err)
	}
	if !strings.Contains(st.SpecError, "spec.provider linkerd is not supported") {
		t.Errorf("unknown provider: got spec error %q, want one naming the provider", st.SpecError)
	}
	if n := f.cluster.count(bad.Key.String() + " routes"); n != 0 {
		t.Errorf("unknown provider: got %d route writes, want 0", n)
	}
	gst, err := f.store.Load(ctx, good.Key)
	if err != nil {
		t.Fatalf("load %s: %v", good.Key, err)
	}
	if gst.Phase != PhaseInitialized {
		t.Errorf("the other canary: got phase %s, want Initialized", gst.Phase)
	}
}

// refusingRouter stands for a cluster that refuses the canary's route (a CRD's schema, or a
// route CRD that is not installed).
type refusingRouter struct{ fakeRouter }

func (refusingRouter) ApplyRoutes(context.Context, Canary, RoutePlan) error {
	return fmt.Errorf("apply HTTPRoute test/other: %w: spec.hostnames[0]: Invalid value", ErrInvalid)
}

// A route the cluster refuses is reported on the Canary's status (the spec error, its Valid
// condition and one Warning Event), not retried as an outage; the canary beside it goes on.
func TestRefusedRouteIsReportedOnTheStatus(t *testing.T) {
	bad, good := seedCanary(), seedCanary()
	bad.Name, bad.Key.Name, bad.Spec.TargetRef.Name = "other", "other", "other"
	bad.Spec.Service.Primary, bad.Spec.Service.Canary = nil, nil
	bad.Spec.Provider = "refusing"
	f := newFixture(t, bad, good)
	an := fakeAnalysis{}
	f.svc = New(Deps{Store: f.store, Workloads: f.cluster,
		Routers: Routers{DefaultProvider: fakeRouter{f.cluster}, "refusing": refusingRouter{fakeRouter{f.cluster}}},
		Metrics: an, Hooks: an, Images: f.cluster, Registry: fakeRegistry{digests: map[string]string{}}, TargetFinalizer: f.cluster},
		Config{MinInterval: time.Second, Now: f.clock}, nil)
	ctx := context.Background()
	for range 4 {
		if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
			t.Fatalf("tick: %v", err)
		}
		f.advanceClock(time.Minute)
	}
	st, err := f.store.Load(ctx, bad.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.SpecError, "spec.hostnames[0]: Invalid value") {
		t.Errorf("got spec error %q, want the refusal", st.SpecError)
	}
	warnings := 0
	for _, e := range f.cluster.events {
		if strings.HasPrefix(e, bad.Key.String()+": Invalid canary spec:") && strings.Contains(e, "apply HTTPRoute") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("got %d Invalid canary spec events, want 1 (said once, not at every step): %q", warnings, f.cluster.events)
	}
	gst, err := f.store.Load(ctx, good.Key)
	if err != nil {
		t.Fatal(err)
	}
	if gst.Phase != PhaseInitialized {
		t.Errorf("the other canary: got phase %s, want Initialized", gst.Phase)
	}
}

// A Canary that Flagger was releasing is taken over where Flagger left it: its status's
// revision (Flagger's FNV hash) is the target as found, and the live route's weights are the
// state, so the next step advances from 15 instead of restarting at 0.
func TestTakeoverFromFlaggerMovesNoTraffic(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.cluster.status[c.Key] = Status{Phase: PhaseProgressing, CanaryWeight: 15, LastAppliedSpec: "7c8dbf5d94", LastPromotedSpec: "5b9f4d7c6"}
	f.cluster.routes[c.Key] = Routing{Primary: 85, Canary: 15}
	f.cluster.work[c.Key] = readyWorld("0123456789abcdef").work
	ctx := context.Background()
	for range 2 {
		if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
			t.Fatalf("tick: %v", err)
		}
		f.advanceClock(time.Minute)
	}
	st, err := f.store.Load(ctx, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseProgressing || st.Routing.Canary < 15 || st.LastAppliedSpec != "0123456789abcdef" {
		t.Errorf("after the takeover: got %s at %+v applied %q, want Progressing from 15 on, the target's revision", st.Phase, st.Routing, st.LastAppliedSpec)
	}
	for _, a := range f.cluster.applied {
		if strings.Contains(a, "routes 100/0") {
			t.Errorf("the takeover sent traffic back to the primary: %q", f.cluster.applied)
			break
		}
	}
}

func TestForeignRevision(t *testing.T) {
	for _, tt := range []struct {
		hash string
		want bool
	}{{"", false}, {"0123456789abcdef", false}, {"7c8dbf5d94", true}, {"0123456789ABCDEF", true}} {
		if got := ForeignRevision(tt.hash); got != tt.want {
			t.Errorf("ForeignRevision(%q): got %v, want %v", tt.hash, got, tt.want)
		}
	}
}
