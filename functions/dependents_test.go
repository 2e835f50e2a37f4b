package functions

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// indexedStore is the in-memory store with a dependents index, kept as the Redis one keeps it.
type indexedStore struct {
	*memStore
	mu      sync.Mutex
	entries map[string]map[string]string
	epochs  map[string]int64
	marks   map[string]int64 // the epoch each namespace's entries were built at
}

func newIndexedStore(m *memStore) *indexedStore {
	return &indexedStore{memStore: m, entries: map[string]map[string]string{}, epochs: map[string]int64{}, marks: map[string]int64{}}
}

func (s *indexedStore) Dependents(_ context.Context, ns, object string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mark, built := s.marks[ns]
	if !built || mark != s.epochs[ns] {
		return "", false, nil
	}
	return s.entries[ns][object], true, nil
}

func (s *indexedStore) DependentsEpoch(_ context.Context, ns string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epochs[ns], nil
}

func (s *indexedStore) ReplaceDependents(_ context.Context, ns string, epoch int64, entries map[string]string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epochs[ns] != epoch {
		return false, nil
	}
	s.entries[ns], s.marks[ns] = entries, epoch
	return true, nil
}

func (s *indexedStore) InvalidateDependents(_ context.Context, ns string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epochs[ns]++
	return nil
}

func (s *indexedStore) lose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries, s.epochs, s.marks = map[string]map[string]string{}, map[string]int64{}, map[string]int64{}
}

func TestIndexEntriesReadBackAsDependsOn(t *testing.T) {
	a := seedCanary()
	b := seedCanary()
	b.Name, b.Spec.Service.Name = "other", "podinfo" // a second canary on the same apex Service
	b.Spec.TargetRef.Name = "other"
	noTarget := seedCanary()
	noTarget.Name, noTarget.Spec.TargetRef.Name = "empty", ""
	cs := []Canary{a, b, noTarget}
	entries := indexEntries(cs)
	objects := []ObjectRef{
		{Group: "apps", Kind: "Deployment", Name: "podinfo"},
		{Group: "apps", Kind: "Deployment", Name: "podinfo-primary"},
		{Group: "apps", Kind: "Deployment", Name: "other"},
		{Group: "apps", Kind: "Deployment", Name: "unrelated"},
		{Kind: "Service", Name: "podinfo"},
		{Kind: "Service", Name: "podinfo-canary"},
		{Group: "networking.istio.io", Kind: "DestinationRule", Name: "podinfo-primary"},
		{Group: "networking.istio.io", Kind: "VirtualService", Name: "podinfo"},
		{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Name: "podinfo"},
		{Group: "networking.istio.io", Kind: "Deployment", Name: "podinfo"},
	}
	for _, obj := range objects {
		t.Run(obj.String(), func(t *testing.T) {
			obj.Namespace = a.Namespace
			want := map[string]changeCause{}
			for _, c := range cs {
				if cause, ok := dependsOn(c, obj); ok {
					want[c.Name] = cause
				}
			}
			deps, err := parseIndexEntry(a.Namespace, entries[objectIndexKey(obj.Group, obj.Kind, obj.Name)])
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]changeCause{}
			for _, d := range deps {
				if d.canary.Namespace != a.Namespace {
					t.Errorf("dependent %s: namespace %q, want %q", d.canary.Name, d.canary.Namespace, a.Namespace)
				}
				got[d.canary.Name] = d.cause
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("dependents from the index differ from dependsOn (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseIndexEntryRefusesMalformedEntries(t *testing.T) {
	for _, entry := range []string{"podinfo", "podinfo=", "=1", "podinfo=x", "podinfo=99", "podinfo=-1"} {
		if deps, err := parseIndexEntry("ns", entry); err == nil {
			t.Errorf("parseIndexEntry(%q) = %v, want an error (the caller then lists)", entry, deps)
		}
	}
	deps, err := parseIndexEntry("ns", "")
	if err != nil || len(deps) != 0 {
		t.Errorf(`parseIndexEntry("") = %v, %v; want no dependents`, deps, err)
	}
}

// An object event finds its canaries in the index: one list builds it, later events list
// nothing, and a Canary created, changed or deleted (or Redis losing the index) makes the
// next event list again. What is stepped is the same as with a list.
func TestObjectEventsFindCanariesInTheIndex(t *testing.T) {
	c := seedCanary()
	c.Generation = 5
	f := newFixture(t, c)
	store := newIndexedStore(f.store)
	f.svc.d.Store = store
	gets, observations, lists := 0, 0, 0
	f.svc.d.Workloads = readingWorkloads{fakeCluster: f.cluster, gets: &gets, observations: &observations, lists: &lists}
	ctx := context.Background()
	st := State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{90, 10, false},
		Steps: 4, NextStepAt: t0.Add(time.Minute), AssertedAt: t0, AssertedGeneration: 5}
	if _, err := f.store.Save(ctx, c.Key, st, nil); err != nil {
		t.Fatal(err)
	}
	target := ObjectRef{Group: "apps", Kind: "Deployment", Namespace: c.Namespace, Name: c.Spec.TargetRef.Name, Object: []byte(`{"Kind":"Deployment","TemplateHash":"v1"}`)}
	newRevision := target
	newRevision.Object = []byte(`{"Kind":"Deployment","TemplateHash":"v2"}`)
	unrelated := ObjectRef{Group: "apps", Kind: "Deployment", Namespace: c.Namespace, Name: "unrelated", Object: target.Object}
	canary := func(generation string) ObjectRef {
		return ObjectRef{Group: "flagger.app", Kind: "Canary", Namespace: c.Namespace, Name: c.Name, Object: []byte(`{"Kind":"Canary","Generation":` + generation + `}`)}
	}
	seq := 0
	steps := []struct {
		name      string
		before    func()
		obj       ObjectRef
		wantLists int
		wantSteps int
	}{
		{name: "the first event builds the index", obj: target, wantLists: 1},
		{name: "the target's rollout again: from the index", obj: target},
		{name: "a Deployment no canary uses: from the index", obj: unrelated},
		{name: "the Canary's own status write keeps the index", obj: canary("5")},
		{name: "after it, still from the index", obj: target},
		{name: "a spec change of the Canary", obj: canary("6"), wantSteps: 0},
		{name: "makes the next event list", obj: target, wantLists: 1},
		{name: "Redis lost the index", before: store.lose, obj: target, wantLists: 1},
		{name: "a new revision from the index starts at once", obj: newRevision, wantSteps: 1},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if step.before != nil {
				step.before()
			}
			if string(step.obj.Object) == string(newRevision.Object) {
				f.cluster.mu.Lock()
				w := f.cluster.work[c.Key]
				w.TemplateHash = "v2"
				f.cluster.work[c.Key] = w
				f.cluster.mu.Unlock()
			}
			listsBefore, stepsBefore := lists, f.state(t, c.Key).Steps
			seq++
			if _, err := f.svc.ObjectChanged(ctx, step.obj, "ev-"+string(rune('a'+seq))); err != nil {
				t.Fatal(err)
			}
			if got := lists - listsBefore; got != step.wantLists {
				t.Errorf("listed the Canaries %d times, want %d", got, step.wantLists)
			}
			if got := f.state(t, c.Key).Steps - stepsBefore; got != int64(step.wantSteps) {
				t.Errorf("stepped %d times, want %d", got, step.wantSteps)
			}
		})
	}
}
