package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/siskin-dev/siskin/functions"
)

func float64p(f float64) *float64 { return &f }

func TestCanaryFromUnstructuredSeed(t *testing.T) {
	u := seed(t)
	now := metav1.NewTime(testNow)
	u.SetDeletionTimestamp(&now)
	u.SetFinalizers([]string{FinalizerName})
	u.SetAnnotations(map[string]string{"a": "b"})

	got, err := CanaryFromUnstructured(u)
	if err != nil {
		t.Fatalf("CanaryFromUnstructured: %v", err)
	}
	want := functions.Canary{
		Key:         functions.Key{Namespace: "default", Name: "podinfo"},
		UID:         "uid-podinfo",
		Generation:  1,
		Annotations: map[string]string{"a": "b"},
		Deleting:    true,
		Finalizers:  []string{FinalizerName},
		Spec: functions.Spec{
			TargetRef: functions.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service: functions.ServiceSpec{
				Port:       9898,
				TargetPort: json.RawMessage(`9898`),
				Primary:    &functions.ServiceMeta{Host: "podinfo-primary.default.svc.cluster.local"},
				Canary:     &functions.ServiceMeta{Host: "podinfo-canary.default.svc.cluster.local"},
			},
			Analysis: &functions.Analysis{
				Interval: "1m", Threshold: 5, MaxWeight: 50, StepWeight: 5,
				Metrics: []functions.Metric{
					{Name: "request-success-rate", Interval: "1m", ThresholdRange: &functions.ThresholdRange{Min: float64p(99)}},
					{Name: "request-duration", Interval: "30s", ThresholdRange: &functions.ThresholdRange{Max: float64p(500)}},
				},
			},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("canary mismatch (-want +got):\n%s", diff)
	}

	// Flagger's defaults, as the domain applies them to the converted spec.
	s := got.Spec
	checks := []struct {
		name      string
		got, want any
	}{
		{"interval", s.Interval(functions.MinAnalysisInterval), time.Minute},
		{"threshold", s.Threshold(), 5},
		{"maxWeight", s.MaxWeight(), 50},
		{"primaryReadyThreshold", s.PrimaryReadyThreshold(), 100},
		{"canaryReadyThreshold", s.CanaryReadyThreshold(), 100},
		{"progressDeadline", s.ProgressDeadline(), 600 * time.Second},
		{"strategy", s.Strategy(), functions.StrategyCanary},
		{"names", got.Names(), functions.Names{Target: "podinfo", Primary: "podinfo-primary", Apex: "podinfo",
			PrimarySvc: "podinfo-primary", CanarySvc: "podinfo-canary"}},
	}
	for _, c := range checks {
		if !cmp.Equal(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestCanaryFromUnstructuredDefaultsAndFallback(t *testing.T) {
	tests := []struct {
		name         string
		doc          string
		wantAnalysis *functions.Analysis
		wantErr      bool
	}{
		{
			name: "no analysis",
			doc: `
metadata: {name: a, namespace: ns}
spec: {targetRef: {name: a}, service: {port: 80}}`,
		},
		{
			name: "deprecated canaryAnalysis is the fallback",
			doc: `
metadata: {name: a, namespace: ns}
spec:
  targetRef: {name: a}
  service: {port: 80}
  canaryAnalysis: {interval: 30s, threshold: 2, iterations: 3}`,
			wantAnalysis: &functions.Analysis{Interval: "30s", Threshold: 2, Iterations: 3},
		},
		{
			name: "analysis wins over canaryAnalysis",
			doc: `
metadata: {name: a, namespace: ns}
spec:
  targetRef: {name: a}
  service: {port: 80}
  analysis: {interval: 20s}
  canaryAnalysis: {interval: 30s}`,
			wantAnalysis: &functions.Analysis{Interval: "20s"},
		},
		{
			name: "a type error keeps the rest of the spec",
			doc: `
metadata: {name: a, namespace: ns}
spec:
  targetRef: {name: a}
  service: {port: "eighty"}
  analysis: {interval: 20s}`,
			wantAnalysis: &functions.Analysis{Interval: "20s"},
			wantErr:      true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanaryFromUnstructured(unstructuredFromYAML(t, tt.doc))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && (!errors.Is(err, functions.ErrInvalid) || got.Status.SpecError == "") {
				t.Errorf("got err %v and SpecError %q, want ErrInvalid and a SpecError", err, got.Status.SpecError)
			}
			if diff := cmp.Diff(tt.wantAnalysis, got.Spec.Analysis); diff != "" {
				t.Errorf("analysis (-want +got):\n%s", diff)
			}
			if got.Spec.TargetRef.Name != "a" {
				t.Errorf("got targetRef %q, want a", got.Spec.TargetRef.Name)
			}
			// Defaults come from the domain.
			if got.Spec.ProgressDeadline() != 600*time.Second || got.Spec.Threshold() < 1 {
				t.Errorf("got deadline %v threshold %d, want Flagger's defaults", got.Spec.ProgressDeadline(), got.Spec.Threshold())
			}
		})
	}
}

func TestListAndGetCanaries(t *testing.T) {
	other := unstructuredFromYAML(t, `
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: broken, namespace: prod}
spec: {targetRef: {name: x}, service: {port: "not a number"}}`)
	f := newFixture(t, nil, seed(t), other)
	ctx := context.Background()

	all, err := f.c.ListCanaries(ctx, "")
	if err != nil {
		t.Fatalf("ListCanaries: %v", err)
	}
	var keys []string
	for _, cd := range all {
		keys = append(keys, cd.Key.String())
	}
	slices.Sort(keys)
	if want := []string{"default/podinfo", "prod/broken"}; !slices.Equal(keys, want) {
		t.Errorf("got %v, want %v", keys, want)
	}
	for _, cd := range all {
		if (cd.Name == "broken") != (cd.Status.SpecError != "") {
			t.Errorf("%s: SpecError %q", cd.Key, cd.Status.SpecError)
		}
	}

	prod, err := f.c.ListCanaries(ctx, "prod")
	if err != nil || len(prod) != 1 {
		t.Fatalf("ListCanaries(prod) = %d, %v; want 1 canary", len(prod), err)
	}

	got, err := f.c.GetCanary(ctx, functions.Key{Namespace: "default", Name: "podinfo"})
	if err != nil || got.Spec.Service.Port != 9898 {
		t.Fatalf("GetCanary = %+v, %v", got.Spec.Service, err)
	}
	_, err = f.c.GetCanary(ctx, functions.Key{Namespace: "default", Name: "missing"})
	if !errors.Is(err, functions.ErrNotFound) {
		t.Errorf("GetCanary(missing): got %v, want ErrNotFound", err)
	}
}

func statusUpdates(f *fixture) int {
	n := 0
	for _, a := range f.dyn.Actions() {
		if a.GetVerb() == "patch" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

func TestWriteStatusOnlyIfChanged(t *testing.T) {
	f := newFixture(t, nil, seed(t))
	ctx := context.Background()
	cd := seedDomain(t)
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	st := functions.State{Phase: functions.PhaseProgressing, Routing: functions.Routing{Primary: 90, Canary: 10},
		LastAppliedSpec: "abc", LastTransitionTime: at, TrackedConfigs: map[string]string{"secret/s": "01"}}.Status()

	if err := f.c.WriteStatus(ctx, cd, st); err != nil {
		t.Fatalf("WriteStatus: %v", err)
	}
	if n := statusUpdates(f); n != 1 {
		t.Fatalf("got %d status updates, want 1", n)
	}
	u, _ := f.dyn.Resource(CanaryGVR).Namespace("default").Get(ctx, "podinfo", metav1.GetOptions{})
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	if status["phase"] != "Progressing" || status["canaryWeight"] != int64(10) && status["canaryWeight"] != float64(10) {
		t.Errorf("got status %v, want phase Progressing weight 10", status)
	}
	if status["lastTransitionTime"] != "2026-03-01T11:00:00.123456789Z" {
		t.Errorf("got lastTransitionTime %v, want it in UTC", status["lastTransitionTime"])
	}
	if _, ok := status["trigger"]; ok {
		t.Errorf("got a nil trigger written: %v", status["trigger"])
	}

	// The same status as the step read, with times in another zone and an empty map for nil:
	// no write.
	cd.Status = st
	same := st
	same.LastTransitionTime = at.UTC()
	if err := f.c.WriteStatus(ctx, cd, same); err != nil {
		t.Fatalf("WriteStatus (same): %v", err)
	}
	if n := statusUpdates(f); n != 1 {
		t.Errorf("got %d status updates after an identical write, want 1", n)
	}

	changed := st
	changed.CanaryWeight = 20
	if err := f.c.WriteStatus(ctx, cd, changed); err != nil {
		t.Fatalf("WriteStatus (changed): %v", err)
	}
	if n := statusUpdates(f); n != 2 {
		t.Errorf("got %d status updates after a change, want 2", n)
	}
}

func TestWriteStatusReplacesTheWholeStatus(t *testing.T) {
	f := newFixture(t, nil, seed(t))
	ctx := context.Background()
	cd := seedDomain(t)
	aborted := functions.State{Phase: functions.PhaseFailed, Message: "Canary aborted: alert X",
		Trigger: &functions.Trigger{Kind: "alert", Detail: "X"}}.Status()
	if err := f.c.WriteStatus(ctx, cd, aborted); err != nil {
		t.Fatal(err)
	}
	cd.Status = aborted
	// The next release has no trigger yet: the old one must not linger.
	next := functions.State{Phase: functions.PhaseProgressing}.Status()
	if err := f.c.WriteStatus(ctx, cd, next); err != nil {
		t.Fatal(err)
	}
	u, _ := f.dyn.Resource(CanaryGVR).Namespace("default").Get(ctx, "podinfo", metav1.GetOptions{})
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	if _, ok := status["trigger"]; ok || status["phase"] != "Progressing" {
		t.Errorf("got status %v, want phase Progressing and no trigger", status)
	}
}

func TestEnsureFinalizer(t *testing.T) {
	f := newFixture(t, nil, seed(t))
	ctx := context.Background()
	cd := seedDomain(t)
	finalizers := func() []string {
		u, err := f.dyn.Resource(CanaryGVR).Namespace("default").Get(ctx, "podinfo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return u.GetFinalizers()
	}
	updates := func() int {
		n := 0
		for _, a := range f.dyn.Actions() {
			if a.GetVerb() == "update" {
				n++
			}
		}
		return n
	}
	steps := []struct {
		present     bool
		want        []string
		wantUpdates int
	}{
		{true, []string{FinalizerName}, 1},
		{true, []string{FinalizerName}, 1}, // already there: no write
		{false, nil, 2},
		{false, nil, 2},
	}
	for i, s := range steps {
		if err := f.c.EnsureFinalizer(ctx, cd, s.present); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := finalizers(); !slices.Equal(got, s.want) {
			t.Errorf("step %d: got finalizers %v, want %v", i, got, s.want)
		}
		if got := updates(); got != s.wantUpdates {
			t.Errorf("step %d: got %d updates, want %d", i, got, s.wantUpdates)
		}
	}
}

func TestFactsOfWhatAnEventCarried(t *testing.T) {
	f := newFixture(t, nil)
	dep := podinfo()
	dep.APIVersion, dep.Kind = "apps/v1", "Deployment"
	depJSON, err := json.Marshal(dep)
	if err != nil {
		t.Fatal(err)
	}
	deleting := metav1.Now()
	gone := podinfo()
	gone.APIVersion, gone.Kind, gone.DeletionTimestamp = "apps/v1", "Deployment", &deleting
	goneJSON, _ := json.Marshal(gone)
	rolling := podinfo()
	rolling.APIVersion, rolling.Kind, rolling.Name = "apps/v1", "Deployment", "podinfo-primary"
	rolling.Status.ObservedGeneration = rolling.Generation - 1
	rollingJSON, _ := json.Marshal(rolling)
	tests := []struct {
		name   string
		object string
		want   functions.ObjectFacts
		wantOK bool
	}{
		{"a Canary", `{"apiVersion":"flagger.app/v1beta1","kind":"Canary","metadata":{"name":"podinfo","generation":7},"status":{"phase":"Progressing"}}`,
			functions.ObjectFacts{Kind: "Canary", Generation: 7}, true},
		{"a Deployment, hashed as an observation hashes it", string(depJSON),
			functions.ObjectFacts{Kind: "Deployment", Generation: dep.Generation, TemplateHash: TemplateHash(podinfo().Spec.Template), Ready: true}, true},
		{"a primary still rolling out", string(rollingJSON),
			functions.ObjectFacts{Kind: "Deployment", Generation: rolling.Generation, TemplateHash: TemplateHash(podinfo().Spec.Template)}, true},
		{"a Deployment being deleted", string(goneJSON),
			functions.ObjectFacts{Kind: "Deployment", Generation: gone.Generation, Deleting: true, TemplateHash: TemplateHash(podinfo().Spec.Template), Ready: true}, true},
		{"a Deployment of another group", `{"apiVersion":"extensions/v1beta1","kind":"Deployment","metadata":{"name":"podinfo"}}`, functions.ObjectFacts{}, false},
		{"a Secret", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"token"}}`, functions.ObjectFacts{}, false},
		{"not JSON", `<html>`, functions.ObjectFacts{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := f.c.FactsOf(seedDomain(t), []byte(tt.object))
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("facts (-want +got):\n%s", diff)
			}
		})
	}
}
