package functions

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// memStore is an in-memory Store with the same compare-and-set and lease semantics as the
// Redis one, for tests of the use cases' orchestration. The Redis store has its own tests
// against a real server.
type memStore struct {
	mu        sync.Mutex
	states    map[Key]State
	due       map[Key]time.Time
	releasing map[Key]bool
	leases    map[Key]int64
	tokens    map[Key]int64
	seen      map[string]bool
	// failSchedule makes Schedule fail as an unreachable Redis would.
	failSchedule bool
	dispatch     map[string]int64
	dispatching  map[string]time.Time
	// lostSaveReplies makes that many saves write, then report ErrUnavailable, as a save
	// whose reply was lost would.
	lostSaveReplies int
}

func newMemStore() *memStore {
	return &memStore{states: map[Key]State{}, due: map[Key]time.Time{}, releasing: map[Key]bool{},
		leases: map[Key]int64{}, tokens: map[Key]int64{}, seen: map[string]bool{}}
}

func (m *memStore) flushAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	fresh := newMemStore()
	m.states, m.due, m.releasing, m.leases, m.tokens, m.seen = fresh.states, fresh.due, fresh.releasing, fresh.leases, fresh.tokens, fresh.seen
}

func (m *memStore) Load(_ context.Context, k Key) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.states[k]
	if !ok {
		return State{}, ErrNotFound
	}
	return st, nil
}

func (m *memStore) Save(_ context.Context, k Key, next State, lease Lease) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if lease != nil && m.leases[k] != lease.Token() {
		return State{}, fmt.Errorf("save %s: %w", k, ErrLeaseLost)
	}
	if m.states[k].Version != next.Version {
		return State{}, fmt.Errorf("save %s: %w", k, ErrConflict)
	}
	next.Version++
	m.states[k] = next
	if m.lostSaveReplies > 0 {
		m.lostSaveReplies--
		return State{}, fmt.Errorf("save %s: %w: reply lost", k, ErrUnavailable)
	}
	return next, nil
}

func (m *memStore) Delete(_ context.Context, k Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.states, k)
	delete(m.due, k)
	return nil
}

type memLease struct {
	m     *memStore
	k     Key
	token int64
}

func (l memLease) Token() int64 { return l.token }
func (l memLease) Release(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.m.leases[l.k] == l.token {
		delete(l.m.leases, l.k)
	}
	return nil
}

func (l memLease) Renew(context.Context, time.Duration) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.m.leases[l.k] != l.token {
		return ErrLeaseLost
	}
	return nil
}

// expireLease lets the canary's lease lapse, as if its holder had stalled past the ttl.
func (m *memStore) expireLease(k Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases, k)
}

func (m *memStore) Seize(_ context.Context, k Key, _ time.Duration) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[k]++
	m.leases[k] = m.tokens[k]
	return memLease{m, k, m.tokens[k]}, nil
}

func (m *memStore) Claim(_ context.Context, k Key, _ time.Duration) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, held := m.leases[k]; held {
		return nil, ErrBusy
	}
	m.tokens[k]++
	m.leases[k] = m.tokens[k]
	return memLease{m, k, m.tokens[k]}, nil
}

func (m *memStore) Schedule(_ context.Context, k Key, at time.Time, releasing bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failSchedule {
		return fmt.Errorf("schedule %s: %w", k, ErrUnavailable)
	}
	m.due[k] = at
	m.releasing[k] = releasing
	return nil
}

func (m *memStore) Due(_ context.Context, now time.Time, limit int) ([]Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []Key
	for k, at := range m.due {
		if !at.After(now) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return m.due[keys[i]].Before(m.due[keys[j]]) })
	if len(keys) > limit {
		keys = keys[:limit]
	}
	return keys, nil
}

func (m *memStore) NextDue(_ context.Context, releasingOnly bool) (Key, time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var best Key
	var at time.Time
	found := false
	for k, t := range m.due {
		if releasingOnly && !m.releasing[k] {
			continue
		}
		if !found || t.Before(at) {
			best, at, found = k, t, true
		}
	}
	return best, at, found, nil
}

func (m *memStore) DueAt(_ context.Context, k Key) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.due[k]
	return at, ok, nil
}

func (m *memStore) BeginDispatch(_ context.Context, scope string, until time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dispatch == nil {
		m.dispatch, m.dispatching = map[string]int64{}, map[string]time.Time{}
	}
	m.dispatch[scope]++
	m.dispatching[scope] = until
	return m.dispatch[scope], nil
}

func (m *memStore) EndDispatch(_ context.Context, scope string, gen int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dispatch[scope] == gen {
		m.dispatching[scope] = time.Time{}
	}
	return nil
}

func (m *memStore) ReserveDispatch(_ context.Context, scope string, dueAt, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dispatching == nil {
		m.dispatch, m.dispatching = map[string]int64{}, map[string]time.Time{}
	}
	if m.dispatching[scope].After(dueAt) {
		return false, nil
	}
	m.dispatching[scope] = until
	return true, nil
}

func (m *memStore) DispatchGeneration(_ context.Context, scope string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dispatch[scope], nil
}

func (m *memStore) Postpone(_ context.Context, k Key, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.due[k]; ok {
		m.due[k] = at
	}
	return nil
}

func (m *memStore) SaveReplicated(ctx context.Context, k Key, next State, lease Lease) (State, error) {
	return m.Save(ctx, k, next, lease)
}

func (m *memStore) FirstSeen(_ context.Context, id string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[id] {
		return false, nil
	}
	m.seen[id] = true
	return true, nil
}

func (m *memStore) Seen(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen[id], nil
}

func (m *memStore) Forget(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.seen, id)
	return nil
}

// fakeCluster plays the Kubernetes and Istio adapters: canaries, observations, and a record
// of every action applied.
type fakeCluster struct {
	mu       sync.Mutex
	canaries map[Key]Canary
	work     map[Key]WorkloadObservation
	routes   map[Key]Routing
	applied  []string
	status   map[Key]Status
	events   []string
	images   map[Key]map[string]string
	// slowAct delays ApplyRoutes, to hold a step in flight.
	slowAct time.Duration
	// actHold, when set, holds the first ApplyRoutes: it is signalled on acting, and waits
	// until proceed is closed.
	actHold *actHold
}

type actHold struct {
	taken   atomic.Bool
	acting  chan struct{}
	proceed chan struct{}
}

func newActHold() *actHold {
	return &actHold{acting: make(chan struct{}), proceed: make(chan struct{})}
}

func newFakeCluster(cs ...Canary) *fakeCluster {
	f := &fakeCluster{canaries: map[Key]Canary{}, work: map[Key]WorkloadObservation{}, routes: map[Key]Routing{},
		status: map[Key]Status{}, images: map[Key]map[string]string{}}
	for _, c := range cs {
		f.canaries[c.Key] = c
		f.work[c.Key] = readyWorld("v1").work
	}
	return f
}

func (f *fakeCluster) ListCanaries(_ context.Context, ns string) ([]Canary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Canary
	for _, c := range f.canaries {
		if ns == "" || c.Namespace == ns {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeCluster) GetCanary(_ context.Context, k Key) (Canary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.canaries[k]
	if !ok {
		return Canary{}, ErrNotFound
	}
	c.Status = f.status[k]
	return c, nil
}

func (f *fakeCluster) ObserveWorkloads(_ context.Context, c Canary) (WorkloadObservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.work[c.Key], nil
}

func (f *fakeCluster) ApplyWorkloads(_ context.Context, c Canary, p WorkloadPlan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.work[c.Key]
	if now := Revision(w.TemplateHash, w.TrackedConfigs); p.Promote && p.PromoteRevision != now {
		f.applied = append(f.applied, fmt.Sprintf("%s promotion of %s refused: target runs %s", c.Key, p.PromoteRevision, now))
		return fmt.Errorf("promote: %w", ErrRevisionChanged)
	}
	if p.Promote {
		w.PrimaryRevision = p.PromoteRevision
		f.work[c.Key] = w
	}
	p.PromoteRevision = ""
	f.applied = append(f.applied, fmt.Sprintf("%s workloads %+v", c.Key, p))
	return nil
}

func (f *fakeCluster) PrimaryRevision(_ context.Context, c Canary) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.work[c.Key].PrimaryRevision, nil
}

// setTemplate changes the target's template, as `kubectl set image` does.
func (f *fakeCluster) setTemplate(k Key, hash string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.work[k]
	w.TemplateHash = hash
	f.work[k] = w
}

func (f *fakeCluster) WriteStatus(_ context.Context, c Canary, st Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[c.Key] = st
	return nil
}

func (f *fakeCluster) RecordEvent(_ context.Context, c Canary, e Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, c.Key.String()+": "+e.Message)
	return nil
}

func (f *fakeCluster) ApplyRoutes(_ context.Context, c Canary, p RoutePlan) error {
	time.Sleep(f.slowAct)
	if h := f.actHold; h != nil && h.taken.CompareAndSwap(false, true) {
		close(h.acting)
		<-h.proceed
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[c.Key] = p.Routing
	f.applied = append(f.applied, fmt.Sprintf("%s routes %d/%d", c.Key, p.Routing.Primary, p.Routing.Canary))
	return nil
}

func (f *fakeCluster) ObserveRoutes(_ context.Context, c Canary) (Routing, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routes[c.Key]
	return r, ok, nil
}

func (f *fakeCluster) DeploymentImages(_ context.Context, ns string) (map[string]map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[string]string{}
	for k, images := range f.images {
		if c := f.canaries[k]; c.Namespace == ns {
			out[c.Spec.TargetRef.Name] = images
		}
	}
	return out, nil
}

func (f *fakeCluster) SetImage(_ context.Context, dep Key, container, image string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.canaries {
		if c.Namespace == dep.Namespace && c.Spec.TargetRef.Name == dep.Name {
			f.images[k][container] = image
			w := f.work[k]
			w.TemplateHash = image
			f.work[k] = w
		}
	}
	return nil
}

func (f *fakeCluster) count(substr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.applied {
		if strings.Contains(a, substr) {
			n++
		}
	}
	return n
}

type fakeAnalysis struct{ metrics []MetricResult }

func (f fakeAnalysis) QueryMetrics(context.Context, Canary) []MetricResult { return f.metrics }
func (f fakeAnalysis) CallHooks(_ context.Context, _ Canary, hooks []Webhook, _ HookCall, _ bool) []HookResult {
	var out []HookResult
	for _, h := range hooks {
		out = append(out, HookResult{Name: h.Name, OK: true})
	}
	return out
}

// fakeRegistry knows a set of image references and their digests.
type fakeRegistry struct{ digests map[string]string }

func (r fakeRegistry) Resolve(_ context.Context, ref ImageRef) (string, error) {
	if ref.Digest != "" {
		for _, d := range r.digests {
			if d == ref.Digest {
				return d, nil
			}
		}
		return "", ErrNotFound
	}
	d, ok := r.digests[ref.Repo()+":"+ref.Tag]
	if !ok {
		return "", ErrNotFound
	}
	return d, nil
}

func (f *fakeCluster) EnsureFinalizer(_ context.Context, c Canary, present bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cd := f.canaries[c.Key]
	cd.Finalizers = nil
	if present {
		cd.Finalizers = []string{FinalizerName}
	}
	f.canaries[c.Key] = cd
	f.applied = append(f.applied, fmt.Sprintf("%s finalizer %v", c.Key, present))
	return nil
}

func (f *fakeCluster) Finalize(_ context.Context, c Canary) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, fmt.Sprintf("%s workloads finalized", c.Key))
	return nil
}

func (f *fakeCluster) TargetReadiness(_ context.Context, c Canary) (Readiness, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.work[c.Key].Canary, nil
}

// fakeRouter is the fake cluster's routing, and records the VirtualService restore.
type fakeRouter struct{ f *fakeCluster }

func (r fakeRouter) ApplyRoutes(ctx context.Context, c Canary, p RoutePlan) error {
	return r.f.ApplyRoutes(ctx, c, p)
}

func (r fakeRouter) ObserveRoutes(ctx context.Context, c Canary) (Routing, bool, error) {
	return r.f.ObserveRoutes(ctx, c)
}

func (r fakeRouter) Finalize(_ context.Context, c Canary) error {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	r.f.applied = append(r.f.applied, fmt.Sprintf("%s routes restored", c.Key))
	return nil
}
