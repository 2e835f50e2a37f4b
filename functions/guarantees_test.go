package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file pin down the guarantees a review found broken: each failed before its
// fix.

// hookScript answers hooks by type, and can hold the calls of one type until released.
type hookScript struct {
	fakeAnalysis
	mu       sync.Mutex
	fail     map[HookType]bool
	hold     HookType
	held     chan struct{}
	released chan struct{}
}

func (h *hookScript) CallHooks(ctx context.Context, c Canary, hooks []Webhook, call HookCall, stop bool) []HookResult {
	t := hooks[0].EffectiveType()
	h.mu.Lock()
	hold, fail := h.hold == t, h.fail[t]
	h.mu.Unlock()
	if hold {
		h.held <- struct{}{}
		<-h.released
	}
	var out []HookResult
	for _, w := range hooks {
		out = append(out, HookResult{Name: w.Name, OK: !fail})
	}
	return out
}

func (f *fixture) applied() []string {
	f.cluster.mu.Lock()
	defer f.cluster.mu.Unlock()
	return append([]string(nil), f.cluster.applied...)
}

// The reviewer's interleaving: A's step waits on a slow pre-rollout webhook and its lease
// expires; B takes the canary and rolls it back (traffic to the primary, the canary scaled to
// zero); A wakes. A must write nothing: its weights would send traffic to a canary with no
// pods.
func TestStepThatLostItsLeaseWritesNothing(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Webhooks = []Webhook{
		{Name: "slow-pre", Type: HookPreRollout, URL: "http://pre"},
		{Name: "rollback", Type: HookRollback, URL: "http://rollback"},
	}
	f := newFixture(t, c)
	ctx := context.Background()
	if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: AllToPrimary}, nil); err != nil {
		t.Fatal(err)
	}
	hooksA := &hookScript{fail: map[HookType]bool{HookRollback: true}, hold: HookPreRollout,
		held: make(chan struct{}), released: make(chan struct{})}
	f.svc.d.Hooks = hooksA
	doneA := make(chan error, 1)
	go func() { _, err := f.svc.Advance(ctx, c.Key); doneA <- err }()
	<-hooksA.held

	f.store.expireLease(c.Key)
	// B: the rollback hook now asks for a rollback.
	svcB := New(f.svc.d, f.svc.cfg, nil)
	svcB.d.Hooks = &hookScript{}
	if _, err := svcB.Advance(ctx, c.Key); err != nil {
		t.Fatalf("B's step: %v", err)
	}
	if st := f.state(t, c.Key); st.Phase != PhaseFailed {
		t.Fatalf("after B's rollback: got phase %s, want Failed", st.Phase)
	}
	before := len(f.applied())

	close(hooksA.released)
	errA := <-doneA
	if errA == nil {
		t.Errorf("A's step: got no error, want the lease loss reported")
	}
	for _, a := range f.applied()[before:] {
		if strings.Contains(a, "routes") && !strings.Contains(a, "routes 100/0") {
			t.Errorf("A wrote %q after losing its lease; want nothing but the stored state", a)
		}
	}
	if got := f.routes(c.Key); got != AllToPrimary {
		t.Errorf("VirtualService: got %v, want 100/0", got)
	}
}

func (f *fixture) routes(k Key) Routing {
	f.cluster.mu.Lock()
	defer f.cluster.mu.Unlock()
	return f.cluster.routes[k]
}

// ApiServerSource delivers at least once, and one rollout makes several update events (the
// template, then the status as pods come up). Five copies of one event plus three other events
// for the same rollout, reordered and sent to two processes, must step the canary exactly once
// (a new revision restarts the analysis); with no new revision, they must not step it at all
// before it is due.
func TestDeploymentChangeEventsStepOnce(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	ctx := context.Background()
	progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0",
		Routing: Routing{Primary: 95, Canary: 5}, Steps: 7, NextStepAt: t0.Add(time.Minute)}
	if _, err := f.store.Save(ctx, c.Key, progressing, nil); err != nil {
		t.Fatal(err)
	}
	dep := Key{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}
	svcB := New(f.svc.d, f.svc.cfg, nil)
	deliver := func(ids []string) {
		var wg sync.WaitGroup
		for i, id := range ids {
			svc := f.svc
			if i%2 == 1 {
				svc = svcB
			}
			wg.Go(func() {
				for {
					_, err := svc.ObjectChanged(ctx, ObjectRef{Group: "apps", Kind: "Deployment", Namespace: dep.Namespace, Name: dep.Name}, id)
					if err == nil || !isRetryable(err) {
						return
					}
					time.Sleep(time.Millisecond) // a sender retries a 503
				}
			})
		}
		wg.Wait()
	}
	events := []string{"e1", "e1", "e2", "e1", "e3", "e1", "e4", "e1"}

	deliver(events)
	if st := f.state(t, c.Key); st.Steps != progressing.Steps || st.Routing != progressing.Routing {
		t.Fatalf("no new revision, not due: got %d steps at %v, want %d at %v", st.Steps, st.Routing, progressing.Steps, progressing.Routing)
	}

	f.cluster.mu.Lock()
	w := f.cluster.work[c.Key]
	w.TemplateHash = "v2"
	f.cluster.work[c.Key] = w
	f.cluster.mu.Unlock()
	for i := range events {
		events[i] = "rollout-" + events[i]
	}
	deliver(events)
	st := f.state(t, c.Key)
	if st.Steps != progressing.Steps+1 {
		t.Errorf("new revision: got %d steps, want exactly one more than %d", st.Steps, progressing.Steps)
	}
	if st.LastAppliedSpec != "v2" || st.Routing != AllToPrimary {
		t.Errorf("new revision: got lastAppliedSpec %q at %v, want the analysis restarted on v2 at 100/0", st.LastAppliedSpec, st.Routing)
	}
}

func isRetryable(err error) bool {
	return errors.Is(err, ErrBusy) || errors.Is(err, ErrConflict) || errors.Is(err, ErrLeaseLost)
}

// A step whose next due time cannot be scheduled must not be acknowledged as if all was well:
// the canary would wait for a schedule entry that never comes, or be stepped again at once
// from the old one. The step fails (a 503 for the sender), and the next tick, finding the
// saved due time, repairs the schedule without stepping early.
func TestScheduleFailureFailsTheStepAndIsRepaired(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	ctx := context.Background()
	if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0",
		Routing: Routing{Primary: 95, Canary: 5}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Schedule(ctx, c.Key, f.clock(), true); err != nil {
		t.Fatal(err)
	}
	f.store.failSchedule = true
	rep, err := f.svc.Tick(ctx, f.clock())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 1 {
		t.Errorf("tick with the schedule unwritable: got %d failed steps, want 1", rep.Failed)
	}
	if _, err := f.svc.Advance(ctx, c.Key); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Advance with the schedule unwritable: got %v, want ErrUnavailable", err)
	}
	f.store.failSchedule = false
	stepped := f.state(t, c.Key)
	if stepped.Routing.Canary != 15 {
		t.Fatalf("got weight %d, want 15 after two saved steps", stepped.Routing.Canary)
	}
	// The schedule still says the step was due at t0: the next tick must not step it.
	f.advanceClock(time.Second)
	if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
		t.Fatal(err)
	}
	if got := f.state(t, c.Key); got.Steps != stepped.Steps {
		t.Errorf("tick before the saved due time: got %d steps, want %d", got.Steps, stepped.Steps)
	}
	if at, ok, _ := f.store.DueAt(ctx, c.Key); !ok || !at.Equal(stepped.NextStepAt) {
		t.Errorf("schedule after the resync: got %v (%v), want the saved %v", at, ok, stepped.NextStepAt)
	}
	f.advanceClock(time.Minute)
	if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
		t.Fatal(err)
	}
	if got := f.state(t, c.Key); got.Steps != stepped.Steps+1 {
		t.Errorf("tick at the saved due time: got %d steps, want %d", got.Steps, stepped.Steps+1)
	}
}

// A save that wrote but could not say so (its reply lost) fails the step; the retry a moment
// later must not step again before the saved due time.
func TestUnknownSaveOutcomeDoesNotStepEarly(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	ctx := context.Background()
	if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0",
		Routing: Routing{Primary: 95, Canary: 5}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Schedule(ctx, c.Key, f.clock(), true); err != nil {
		t.Fatal(err)
	}
	f.store.lostSaveReplies = 1
	if rep, err := f.svc.Tick(ctx, f.clock()); err != nil || rep.Failed != 1 {
		t.Fatalf("tick whose save reply is lost: got %d failed, %v; want 1 failed", rep.Failed, err)
	}
	for range 5 {
		f.advanceClock(time.Second)
		if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.state(t, c.Key).Routing.Canary; got != 10 {
		t.Errorf("5 s after a step with a 1 m interval: got weight %d, want 10 (one step)", got)
	}
}

// hookFunc runs a function when a hook of one type is called, then answers OK.
type hookFunc struct {
	fakeAnalysis
	on HookType
	do func()
}

func (h hookFunc) CallHooks(ctx context.Context, c Canary, hooks []Webhook, call HookCall, stop bool) []HookResult {
	if hooks[0].EffectiveType() == h.on {
		h.do()
	}
	return h.fakeAnalysis.CallHooks(ctx, c, hooks, call, stop)
}

// The target changes between the step's observation and its promotion (the confirm-promotion
// gate is the moment): the primary must never get the revision no check saw, and the analysis
// restarts on it, as Flagger does for a new revision.
func TestPromotionOfAChangedTargetRestartsTheAnalysis(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Webhooks = []Webhook{{Name: "promotion", Type: HookConfirmPromotion, URL: "http://gate"}}
	f := newFixture(t, c)
	ctx := context.Background()
	if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0",
		Routing: Routing{Primary: 50, Canary: 50}}, nil); err != nil {
		t.Fatal(err)
	}
	f.svc.d.Hooks = hookFunc{on: HookConfirmPromotion, do: func() { f.cluster.setTemplate(c.Key, "v2") }}
	if _, err := f.svc.Advance(ctx, c.Key); err != nil {
		t.Fatalf("step: %v", err)
	}
	for _, a := range f.applied() {
		if strings.Contains(a, "Promote:true") {
			t.Errorf("applied %q: the primary got a revision no check saw", a)
		}
	}
	if got := f.cluster.work[c.Key].PrimaryRevision; got != "" {
		t.Errorf("primary revision: got %q, want it untouched", got)
	}
	st := f.state(t, c.Key)
	if st.Phase != PhaseProgressing || st.LastAppliedSpec != "v2" || st.Routing != AllToPrimary {
		t.Errorf("got %s on %q at %v, want Progressing restarted on v2 at 100/0", st.Phase, st.LastAppliedSpec, st.Routing)
	}
	if !slices.ContainsFunc(f.cluster.events, func(e string) bool { return strings.Contains(e, "New revision detected! Restarting analysis") }) {
		t.Errorf("events %q: want the restart said", f.cluster.events)
	}
}

// Once the primary runs the new revision, an abort cannot take it back: it is refused with a
// reason and an Event, and the status keeps saying what serves traffic. That holds too when
// the step that wrote the promotion crashed before saving it, and the next step carries the
// promotion on instead of analysing again.
func TestAbortAfterPromotionIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name      string
		phase     Phase
		promoted  bool // the primary carries the analysed revision
		wantPhase Phase
	}{
		{"promoting", PhasePromoting, true, PhasePromoting},
		{"finalising", PhaseFinalising, true, PhaseFinalising},
		{"crash after the promotion was written", PhaseProgressing, true, PhaseProgressing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := seedCanary()
			f := newFixture(t, c)
			ctx := context.Background()
			f.cluster.setTemplate(c.Key, "v2")
			if tc.promoted {
				w := f.cluster.work[c.Key]
				w.PrimaryRevision = Revision("v2", nil)
				f.cluster.work[c.Key] = w
			}
			if _, err := f.store.Save(ctx, c.Key, State{Phase: tc.phase, LastAppliedSpec: "v2", LastPromotedSpec: "v1",
				Routing: Routing{Primary: 50, Canary: 50}}, nil); err != nil {
				t.Fatal(err)
			}
			_, aborted, err := f.svc.Abort(ctx, c.Key, "too late")
			if aborted || !errors.Is(err, ErrAlreadyPromoted) {
				t.Fatalf("abort: got aborted %v, %v; want refused with ErrAlreadyPromoted", aborted, err)
			}
			if st := f.state(t, c.Key); st.Phase != tc.wantPhase {
				t.Errorf("after the refusal: got %s, want %s", st.Phase, tc.wantPhase)
			}
			if !slices.ContainsFunc(f.cluster.events, func(e string) bool { return strings.Contains(e, "Abort refused") }) {
				t.Errorf("events %q: want the refusal said", f.cluster.events)
			}
			rep, err := f.svc.HandleAlerts(ctx, AlertNotification{Alerts: []Alert{{Status: "firing",
				Labels: map[string]string{"namespace": c.Namespace, "canary": c.Name}}}}, "alert-1")
			if err != nil || len(rep.Aborted) != 0 || len(rep.Ignored) != 1 || !strings.Contains(rep.Ignored[0], "already runs the new revision") {
				t.Errorf("alert: got %+v, %v; want it acknowledged as ignored, with the reason", rep, err)
			}
			if tc.phase == PhaseProgressing {
				if _, err := f.svc.Advance(ctx, c.Key); err != nil {
					t.Fatal(err)
				}
				if st := f.state(t, c.Key); st.Phase != PhasePromoting {
					t.Errorf("step after the crash: got %s, want Promoting carried on", st.Phase)
				}
			}
		})
	}
}

// countingRegistry counts resolutions, and answers them with err when set.
type countingRegistry struct {
	fakeRegistry
	mu    sync.Mutex
	calls int
	err   error
}

func (r *countingRegistry) Resolve(ctx context.Context, ref ImageRef) (string, error) {
	r.mu.Lock()
	r.calls++
	err := r.err
	r.mu.Unlock()
	if err != nil {
		return "", err
	}
	return r.fakeRegistry.Resolve(ctx, ref)
}

// A push releases only in the namespaces it names: one team's push of an image another team
// also runs must not release the other team's canaries. A push nobody in scope runs never
// reaches the registry (a forged or unreachable registry must not become a message that is
// retried forever), and a registry that refuses Siskin's credentials is a retryable failure
// with an Event on the canaries it blocks, never a drop.
func TestPushScope(t *testing.T) {
	teamA, teamB := seedCanary(), seedCanary()
	teamA.Namespace, teamB.Namespace = "team-a", "team-b"
	teamA.Key.Namespace, teamB.Key.Namespace = "team-a", "team-b"
	push := func(ns ...string) ImagePush {
		return ImagePush{EventID: "e-" + strings.Join(ns, "-"), Registry: "r:5000", Repository: "lab/podinfo", Tag: "1.1.0", Digest: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", Namespaces: ns}
	}
	tests := []struct {
		name        string
		anyNS       bool
		push        ImagePush
		registryErr error
		wantStarted []string
		wantErr     error
		wantLookups int
	}{
		{"named namespace only", false, push("team-a"), nil, []string{"team-a/podinfo"}, nil, 1},
		{"two named", false, push("team-a", "team-b"), nil, []string{"team-a/podinfo", "team-b/podinfo"}, nil, 1},
		{"no namespace named", false, push(), nil, nil, ErrInvalid, 0},
		{"any namespace when configured", true, push(), nil, []string{"team-a/podinfo", "team-b/podinfo"}, nil, 1},
		{"a namespace without the image", false, push("team-c"), nil, nil, nil, 0},
		{"unreachable registry nobody in scope uses", false, ImagePush{EventID: "x", Registry: "evil.example:5000", Repository: "lab/podinfo", Tag: "9.9.9", Namespaces: []string{"team-a"}}, ErrUnavailable, nil, nil, 0},
		{"registry refuses Siskin's credentials", false, push("team-a"), fmt.Errorf("HEAD manifest: %w: 401", ErrUpstreamDenied), nil, ErrUpstreamDenied, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, teamA, teamB)
			f.svc.cfg.PushAnyNamespace = tt.anyNS
			for _, c := range []Canary{teamA, teamB} {
				f.store.states[c.Key] = State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
				f.cluster.images[c.Key] = map[string]string{"podinfo": "r:5000/lab/podinfo:1.0.0"}
			}
			reg := &countingRegistry{fakeRegistry: fakeRegistry{digests: map[string]string{"r:5000/lab/podinfo:1.1.0": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}}, err: tt.registryErr}
			f.svc.d.Registry = reg
			rep, err := f.svc.HandlePushes(context.Background(), []ImagePush{tt.push})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			slices.Sort(rep.Started)
			if !slices.Equal(rep.Started, tt.wantStarted) {
				t.Errorf("started %v, want %v", rep.Started, tt.wantStarted)
			}
			if reg.calls != tt.wantLookups {
				t.Errorf("registry lookups: got %d, want %d", reg.calls, tt.wantLookups)
			}
			if errors.Is(tt.wantErr, ErrUpstreamDenied) && !slices.ContainsFunc(f.cluster.events, func(e string) bool {
				return strings.HasPrefix(e, "team-a/podinfo: ") && strings.Contains(e, "fix Siskin's credentials")
			}) {
				t.Errorf("events %q: want the denial said on team-a/podinfo", f.cluster.events)
			}
		})
	}
}

// An abort acknowledged just before a Redis failover: the replica that takes over never got
// the abort's save and still says Progressing. The Canary's status, written before the abort
// was acknowledged, wins: the next step must not carry the aborted release on.
func TestAbortSurvivesAFailoverThatLosesItsSave(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	ctx := context.Background()
	f.cluster.setTemplate(c.Key, "v2")
	before, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1",
		Routing: Routing{Primary: 70, Canary: 30}, LastTransitionTime: t0.Add(-time.Minute)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, aborted, err := f.svc.Abort(ctx, c.Key, "bad release"); err != nil || !aborted {
		t.Fatalf("abort: %v %v", aborted, err)
	}
	// The failover: the replica has the state from before the abort.
	f.store.mu.Lock()
	f.store.states[c.Key] = before
	f.store.mu.Unlock()
	for range 3 {
		f.advanceClock(time.Minute)
		if _, err := f.svc.Advance(ctx, c.Key); err != nil {
			t.Fatal(err)
		}
		if st := f.state(t, c.Key); st.Phase != PhaseFailed || st.Routing != AllToPrimary {
			t.Fatalf("after the failover: got %s at %v, want the abort kept (Failed at 100/0)", st.Phase, st.Routing)
		}
		if got := f.routes(c.Key); got != AllToPrimary {
			t.Fatalf("VirtualService after the failover: got %v, want 100/0", got)
		}
	}
}

func TestAbortLostByRedis(t *testing.T) {
	at := t0
	aborted := Status{Phase: PhaseFailed, LastAppliedSpec: "v2", Trigger: &Trigger{Kind: "alert", At: at}}
	progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastTransitionTime: at.Add(-time.Minute)}
	tests := []struct {
		name   string
		state  State
		status Status
		want   bool
	}{
		{"the replica lost the abort", progressing, aborted, true},
		{"a manual abort too", progressing, Status{Phase: PhaseFailed, LastAppliedSpec: "v2", Trigger: &Trigger{Kind: "manual", At: at}}, true},
		{"Redis has the abort", State{Phase: PhaseFailed, LastAppliedSpec: "v2"}, aborted, false},
		{"a failed check, not an abort", progressing, Status{Phase: PhaseFailed, LastAppliedSpec: "v2", Trigger: &Trigger{Kind: "push", At: at}}, false},
		{"a later release of another revision", State{Phase: PhaseProgressing, LastAppliedSpec: "v3", LastTransitionTime: at.Add(time.Minute)}, aborted, false},
		{"the same revision resumed after the abort", State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastTransitionTime: at.Add(time.Second)}, aborted, false},
		{"a status that lags", progressing, Status{Phase: PhaseProgressing, LastAppliedSpec: "v2"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AbortLostByRedis(tt.state, tt.status); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// panickingWorkloads panics when it observes one canary: a bug in an adapter.
type panickingWorkloads struct {
	*fakeCluster
	victim Key
}

func (p panickingWorkloads) ObserveWorkloads(ctx context.Context, c Canary) (WorkloadObservation, error) {
	if c.Key == p.victim {
		panic("adapter bug")
	}
	return p.fakeCluster.ObserveWorkloads(ctx, c)
}

// One canary's panic is that canary's failure: the tick steps the others and the process
// lives on.
func TestAPanicInOneStepDoesNotStopTheTick(t *testing.T) {
	a, b := seedCanary(), seedCanary()
	b.Name, b.Key.Name = "other", "other"
	f := newFixture(t, a, b)
	f.svc.d.Workloads = panickingWorkloads{fakeCluster: f.cluster, victim: a.Key}
	ctx := context.Background()
	for _, c := range []Canary{a, b} {
		if err := f.store.Schedule(ctx, c.Key, f.clock(), false); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := f.svc.Tick(ctx, f.clock())
	if err != nil {
		t.Fatalf("tick: %v", err)
	}
	if rep.Failed != 1 || len(rep.Stepped) != 1 || rep.Stepped[0].Key != b.Key {
		t.Errorf("got %d failed and stepped %v, want the panicking canary failed and the other stepped", rep.Failed, rep.Stepped)
	}
}

// A ConfigMap or Secret event steps a canary only if its target referenced that config when
// last observed, and only when the config's data changed (a new revision); other configs, the
// -primary copies Siskin writes, and a config of the same name in another kind do nothing.
func TestConfigEventsStepOnlyTheCanariesTrackingThem(t *testing.T) {
	tests := []struct {
		name      string
		obj       ObjectRef
		newData   bool
		wantSteps int64
	}{
		{name: "a tracked Secret with new data restarts the analysis", obj: ObjectRef{Kind: "Secret", Name: "app-secret"}, newData: true, wantSteps: 1},
		{name: "a tracked ConfigMap with new data restarts the analysis", obj: ObjectRef{Kind: "ConfigMap", Name: "app-config"}, newData: true, wantSteps: 1},
		{name: "a tracked ConfigMap with the same data does nothing", obj: ObjectRef{Kind: "ConfigMap", Name: "app-config"}},
		{name: "a ConfigMap the target does not use does nothing", obj: ObjectRef{Kind: "ConfigMap", Name: "leader-election"}, newData: true},
		{name: "the primary copy Siskin writes does nothing", obj: ObjectRef{Kind: "ConfigMap", Name: "app-config-primary"}, newData: true},
		{name: "a Secret named like a tracked ConfigMap does nothing", obj: ObjectRef{Kind: "Secret", Name: "app-config"}, newData: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			f := newFixture(t, c)
			ctx := context.Background()
			tracked := map[string]string{"configmap/app-config": "c1", "secret/app-secret": "s1"}
			progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", TrackedConfigs: tracked,
				Routing: Routing{Primary: 95, Canary: 5}, Steps: 7, NextStepAt: t0.Add(time.Minute)}
			if _, err := f.store.Save(ctx, c.Key, progressing, nil); err != nil {
				t.Fatal(err)
			}
			f.cluster.mu.Lock()
			w := f.cluster.work[c.Key]
			w.TemplateHash, w.TrackedConfigs = "v1", maps.Clone(tracked)
			if tt.newData {
				w.TrackedConfigs["configmap/app-config"], w.TrackedConfigs["secret/app-secret"] = "c2", "s2"
			}
			f.cluster.work[c.Key] = w
			f.cluster.mu.Unlock()
			tt.obj.Namespace = c.Namespace
			if _, err := f.svc.ObjectChanged(ctx, tt.obj, "ev-1"); err != nil {
				t.Fatal(err)
			}
			if got := f.state(t, c.Key).Steps - progressing.Steps; got != tt.wantSteps {
				t.Errorf("%s: got %d steps, want %d", tt.obj, got, tt.wantSteps)
			}
		})
	}
}

// judgingRoutes is the fake cluster's Routes that can also judge an event's VirtualService.
type judgingRoutes struct {
	*fakeCluster
	asPlanned bool
	judged    *int
}

func (r judgingRoutes) AsPlanned(c Canary, p RoutePlan, object []byte) bool {
	*r.judged++
	return r.asPlanned
}

func (r judgingRoutes) WeightsAsPlanned(p RoutePlan, object []byte) bool {
	*r.judged++
	return r.asPlanned
}

func TestARouteEventThatCarriesThePlannedObjectCostsNothing(t *testing.T) {
	tests := []struct {
		name       string
		object     []byte
		owner      string
		asPlanned  bool
		wantJudged int
		wantApply  bool
		wantLists  int
	}{
		{name: "Siskin's own write coming back is left alone", object: []byte(`{}`), asPlanned: true, wantJudged: 1, wantLists: 1},
		{name: "a hand edit in the event is put back", object: []byte(`{}`), asPlanned: false, wantJudged: 1, wantApply: true, wantLists: 1},
		{name: "an event without the object (Reference mode) is read and put back", wantApply: true, wantLists: 1},
		{name: "its own write, known by its owner, lists no Canary", object: []byte(`{}`), owner: "podinfo", asPlanned: true, wantJudged: 1},
		{name: "a hand edit of the weights, known by its owner, is put back", object: []byte(`{}`), owner: "podinfo", asPlanned: false, wantJudged: 1, wantApply: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			f := newFixture(t, c)
			judged, gets, observations, lists := 0, 0, 0, 0
			f.svc.d.Routers = Routers{DefaultProvider: judgingRoutes{fakeCluster: f.cluster, asPlanned: tt.asPlanned, judged: &judged}}
			f.svc.d.Workloads = readingWorkloads{fakeCluster: f.cluster, gets: &gets, observations: &observations, lists: &lists}
			ctx := context.Background()
			progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0",
				Routing: Routing{Primary: 95, Canary: 5}, Steps: 3, NextStepAt: t0.Add(time.Minute)}
			if _, err := f.store.Save(ctx, c.Key, progressing, nil); err != nil {
				t.Fatal(err)
			}
			vs := ObjectRef{Group: "networking.istio.io", Kind: "VirtualService", Namespace: c.Namespace, Name: c.Names().Apex, Object: tt.object, Owner: tt.owner}
			if _, err := f.svc.ObjectChanged(ctx, vs, "ev-1"); err != nil {
				t.Fatal(err)
			}
			applied := false
			for _, a := range f.applied() {
				applied = applied || strings.Contains(a, " routes ")
			}
			if judged != tt.wantJudged || applied != tt.wantApply || lists != tt.wantLists {
				t.Errorf("got %d judged, routes applied %v (%v), %d lists; want %d judged, applied %v, %d lists",
					judged, applied, f.applied(), lists, tt.wantJudged, tt.wantApply, tt.wantLists)
			}
			if got := f.state(t, c.Key); got.Steps != progressing.Steps || got.Routing != progressing.Routing {
				t.Errorf("state: got %d steps at %v, want %d at %v: a route event is no step", got.Steps, got.Routing, progressing.Steps, progressing.Routing)
			}
		})
	}
}

// readingWorkloads is the fake cluster's Workloads, counting its reads, that can also read the
// facts of an object an event carried (here a small JSON of the facts themselves).
type readingWorkloads struct {
	*fakeCluster
	gets, observations, lists *int
}

func (r readingWorkloads) ListCanaries(ctx context.Context, ns string) ([]Canary, error) {
	if r.lists != nil {
		*r.lists++
	}
	return r.fakeCluster.ListCanaries(ctx, ns)
}

func (r readingWorkloads) GetCanary(ctx context.Context, k Key) (Canary, error) {
	*r.gets++
	return r.fakeCluster.GetCanary(ctx, k)
}

func (r readingWorkloads) ObserveWorkloads(ctx context.Context, c Canary) (WorkloadObservation, error) {
	*r.observations++
	return r.fakeCluster.ObserveWorkloads(ctx, c)
}

func (r readingWorkloads) FactsOf(_ Canary, object []byte) (ObjectFacts, bool) {
	var f ObjectFacts
	return f, json.Unmarshal(object, &f) == nil && f.Kind != ""
}

func TestObjectEventsThatChangeNothingCostNoRead(t *testing.T) {
	c := seedCanary()
	c.Generation = 5
	deployment := func(name string) ObjectRef {
		return ObjectRef{Group: "apps", Kind: "Deployment", Namespace: c.Namespace, Name: name}
	}
	canary := ObjectRef{Group: "flagger.app", Kind: "Canary", Namespace: c.Namespace, Name: c.Name}
	owned := func(o ObjectRef) ObjectRef { o.Owner = c.Name; return o }
	tests := []struct {
		name                 string
		phase                Phase
		obj                  ObjectRef
		object               string
		due                  bool
		noList               bool
		wantGets, wantObserv int
		wantSteps            int64
	}{
		{name: "the Canary's own status write coming back", obj: canary, object: `{"Kind":"Canary","Generation":5}`},
		{name: "a Canary of a new generation is read (and waits for its step)", obj: canary, object: `{"Kind":"Canary","Generation":6}`, wantGets: 1},
		{name: "a Canary being deleted is read and acted on", obj: canary, object: `{"Kind":"Canary","Generation":5,"Deleting":true}`, wantGets: 1},
		{name: "a Canary event without the object is read", obj: canary, wantGets: 1},
		{name: "the target's rollout progressing", obj: deployment(c.Spec.TargetRef.Name), object: `{"Kind":"Deployment","TemplateHash":"v1"}`},
		{name: "a new revision of the target restarts the analysis at once", obj: deployment(c.Spec.TargetRef.Name), object: `{"Kind":"Deployment","TemplateHash":"v2"}`, wantGets: 1, wantObserv: 1, wantSteps: 1},
		{name: "the primary's rollout, past initialisation", obj: deployment(c.Names().Primary)},
		{name: "a due canary steps whatever the event", obj: deployment(c.Spec.TargetRef.Name), object: `{"Kind":"Deployment","TemplateHash":"v1"}`, due: true, wantGets: 1, wantObserv: 1, wantSteps: 1},
		{name: "an initialising canary waits for its primary's rollout", phase: PhaseInitializing, obj: deployment(c.Names().Primary), object: `{"Kind":"Deployment","TemplateHash":"v1"}`},
		{name: "an initialising canary goes on when its primary is ready", phase: PhaseInitializing, obj: deployment(c.Names().Primary), object: `{"Kind":"Deployment","TemplateHash":"v1","Ready":true}`,
			wantGets: 1, wantObserv: 1, wantSteps: 1},
		{name: "an initialising canary reads a primary event without the object", phase: PhaseInitializing, obj: deployment(c.Names().Primary), wantGets: 1, wantObserv: 1, wantSteps: 1},
		{name: "an initialising canary's own status write", phase: PhaseInitializing, obj: canary, object: `{"Kind":"Canary","Generation":5}`},
		{name: "an initialising canary's Service created", phase: PhaseInitializing, obj: ObjectRef{Kind: "Service", Namespace: c.Namespace, Name: c.Names().CanarySvc}},
		{name: "an initialising canary's VirtualService created", phase: PhaseInitializing,
			obj: ObjectRef{Group: "networking.istio.io", Kind: "VirtualService", Namespace: c.Namespace, Name: c.Names().Apex}, object: `{}`},
		{name: "an initialising canary's spec changed", phase: PhaseInitializing, obj: canary, object: `{"Kind":"Canary","Generation":6}`, wantGets: 1, wantObserv: 1, wantSteps: 1},
		{name: "the primary's rollout, known by its owner, lists no Canary", obj: owned(deployment(c.Names().Primary)), object: `{"Kind":"Deployment","TemplateHash":"v1"}`, noList: true},
		{name: "an initialising canary's primary ready, known by its owner", phase: PhaseInitializing, obj: owned(deployment(c.Names().Primary)),
			object: `{"Kind":"Deployment","TemplateHash":"v1","Ready":true}`, noList: true, wantGets: 1, wantObserv: 1, wantSteps: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, c)
			gets, observations, lists := 0, 0, 0
			f.svc.d.Workloads = readingWorkloads{fakeCluster: f.cluster, gets: &gets, observations: &observations, lists: &lists}
			ctx := context.Background()
			next := t0.Add(time.Minute)
			if tt.due {
				next = t0
			}
			progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{90, 10, false},
				Steps: 4, NextStepAt: next, AssertedAt: t0, AssertedGeneration: 5}
			if tt.phase != "" {
				progressing = State{Phase: tt.phase, Steps: 4, NextStepAt: next, AssertedAt: t0, AssertedGeneration: 5}
			}
			if _, err := f.store.Save(ctx, c.Key, progressing, nil); err != nil {
				t.Fatal(err)
			}
			if newRev := strings.Contains(tt.object, `"v2"`); newRev {
				f.cluster.mu.Lock()
				w := f.cluster.work[c.Key]
				w.TemplateHash = "v2"
				f.cluster.work[c.Key] = w
				f.cluster.mu.Unlock()
			}
			obj := tt.obj
			if tt.object != "" {
				obj.Object = []byte(tt.object)
			}
			if _, err := f.svc.ObjectChanged(ctx, obj, "ev-1"); err != nil {
				t.Fatal(err)
			}
			steps := f.state(t, c.Key).Steps - progressing.Steps
			if tt.noList && lists != 0 {
				t.Errorf("listed the Canaries %d times, want none: the event named the owner", lists)
			}
			if gets != tt.wantGets || observations != tt.wantObserv || steps != tt.wantSteps {
				t.Errorf("got %d Canary reads, %d observations, %d steps; want %d, %d, %d", gets, observations, steps, tt.wantGets, tt.wantObserv, tt.wantSteps)
			}
		})
	}
}

// A Canary created just after its target's events is not hidden from the next ones: a
// `kubectl set image` right after the Canary's initialisation starts its release at once,
// although the target's earlier events found no Canary (a reused list of a namespace's
// Canaries once missed it: TestEventsActWithoutAnyPing).
func TestATargetEventRightAfterACanaryIsCreatedStartsItsRelease(t *testing.T) {
	for _, resource := range []bool{true, false} {
		name := "Reference mode"
		if resource {
			name = "Resource mode"
		}
		t.Run(name, func(t *testing.T) {
			c := seedCanary()
			c.Generation = 1
			f := newFixture(t)
			cfg := f.svc.cfg
			d := f.svc.d
			gets, observations := 0, 0
			if resource {
				d.Workloads = readingWorkloads{fakeCluster: f.cluster, gets: &gets, observations: &observations}
			}
			f.svc = New(d, cfg, nil)
			ctx := context.Background()
			event := func(id string, obj ObjectRef, object string) {
				t.Helper()
				if resource && object != "" {
					obj.Object = []byte(object)
				}
				if _, err := f.svc.ObjectChanged(ctx, obj, id); err != nil {
					t.Fatal(err)
				}
			}
			target := ObjectRef{Group: "apps", Kind: "Deployment", Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}
			canary := ObjectRef{Group: "flagger.app", Kind: "Canary", Namespace: c.Namespace, Name: c.Name}

			event("ev-0", target, `{"Kind":"Deployment","TemplateHash":"v1"}`) // before the Canary: no canary
			f.cluster.mu.Lock()
			f.cluster.canaries[c.Key] = c
			f.cluster.work[c.Key] = readyWorld("v1").work
			f.cluster.mu.Unlock()
			event("ev-1", canary, `{"Kind":"Canary","Generation":1}`)
			f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseInitialized })

			f.cluster.setTemplate(c.Key, "v2")
			event("ev-2", target, `{"Kind":"Deployment","TemplateHash":"v2"}`)
			if got := f.state(t, c.Key).Phase; got != PhaseProgressing {
				t.Errorf("after the target's new revision: phase %s, want Progressing", got)
			}
		})
	}
}
