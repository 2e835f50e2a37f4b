package functions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type fixture struct {
	store   *memStore
	cluster *fakeCluster
	svc     *Service
	now     time.Time
	mu      sync.Mutex
}

func newFixture(t *testing.T, cs ...Canary) *fixture {
	t.Helper()
	f := &fixture{store: newMemStore(), cluster: newFakeCluster(cs...), now: t0}
	an := fakeAnalysis{metrics: []MetricResult{{Name: "request-success-rate", Value: 100}, {Name: "request-duration", Value: 10}}}
	f.svc = New(Deps{Store: f.store, Workloads: f.cluster, Routers: Routers{DefaultProvider: fakeRouter{f.cluster}}, Metrics: an, Hooks: an,
		Images: f.cluster, Registry: fakeRegistry{digests: map[string]string{}},
		TargetFinalizer: f.cluster},
		Config{MinInterval: time.Second, Now: f.clock}, nil)
	return f
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advanceClock(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fixture) state(t *testing.T, k Key) State {
	t.Helper()
	st, err := f.store.Load(context.Background(), k)
	if err != nil {
		t.Fatalf("load %s: %v", k, err)
	}
	return st
}

// tickUntil runs ticks, moving the clock a step interval each time, until pred holds.
func (f *fixture) tickUntil(t *testing.T, pred func() bool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
			t.Fatalf("tick: %v", err)
		}
		if pred() {
			return
		}
		f.advanceClock(time.Minute)
	}
	t.Fatal("condition never reached")
}

func TestTickInitializesAndReleases(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseInitialized })
	if got := f.cluster.status[c.Key].Phase; got != PhaseInitialized {
		t.Errorf("status: got %s, want Initialized", got)
	}
	f.cluster.work[c.Key] = readyWorld("v2").work
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseSucceeded })
	st := f.state(t, c.Key)
	if st.LastPromotedSpec != "v2" || st.Routing != AllToPrimary {
		t.Errorf("got %+v", st)
	}
	if st.Trigger == nil || st.Trigger.Kind != "change" {
		t.Errorf("got trigger %+v, want a change trigger", st.Trigger)
	}
}

func TestConcurrentTicksStepEachCanaryOnce(t *testing.T) {
	var cs []Canary
	for i := range 20 {
		c := seedCanary()
		c.Name = fmt.Sprintf("app%d", i)
		c.Spec.TargetRef.Name = c.Name
		c.Spec.Service.Primary, c.Spec.Service.Canary = nil, nil
		cs = append(cs, c)
	}
	f := newFixture(t, cs...)
	f.cluster.slowAct = 5 * time.Millisecond
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
				t.Errorf("tick: %v", err)
			}
		})
	}
	wg.Wait()
	for _, c := range cs {
		if got := f.state(t, c.Key).Steps; got != 1 {
			t.Errorf("%s: got %d steps from 10 concurrent ticks, want 1", c.Key, got)
		}
	}
}

func TestCrashBetweenActAndSaveIsRepairedWithoutDoubleStep(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{90, 10, false}, Version: 7}
	f.store.due[c.Key] = t0
	crash := true
	f.svc.cfg.AfterAct = func(Key) error {
		if crash {
			crash = false
			return fmt.Errorf("killed")
		}
		return nil
	}
	if rep, _ := f.svc.Tick(context.Background(), f.clock()); rep.Failed != 1 {
		t.Fatalf("got %+v, want the step to fail", rep)
	}
	f.advanceClock(5 * time.Second) // the failed step was pushed back a little
	if got := f.cluster.routes[c.Key]; got != (Routing{85, 15, false}) {
		t.Fatalf("act before the crash: got %v, want 85/15", got)
	}
	if got := f.state(t, c.Key); got.Routing != (Routing{90, 10, false}) || got.Version != 7 {
		t.Fatalf("state after the crash: got %+v, want the old one", got)
	}
	// The lease dies with the process; here it is released by the deferred release.
	if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
		t.Fatal(err)
	}
	st := f.state(t, c.Key)
	if st.Routing != (Routing{85, 15, false}) {
		t.Errorf("after repair: got %v, want 85/15 (one step, not two)", st.Routing)
	}
	if got := f.cluster.routes[c.Key]; got != (Routing{85, 15, false}) {
		t.Errorf("VirtualService after repair: got %v, want 85/15", got)
	}
}

func TestRedisLossRebuildsFromCluster(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{80, 20, false}}
	f.store.due[c.Key] = t0
	if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
		t.Fatal(err)
	}
	f.store.flushAll()
	f.advanceClock(time.Minute)
	if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
		t.Fatal(err)
	}
	// When the last step ran is lost with the state: the rebuilt release waits an interval
	// rather than step early.
	st := f.state(t, c.Key)
	if st.Phase != PhaseProgressing || st.Routing != (Routing{75, 25, false}) || !st.NextStepAt.Equal(f.clock().Add(time.Minute)) {
		t.Errorf("after FLUSHALL: got phase %s routing %v next %v, want Progressing 75/25 rebuilt, next in a minute", st.Phase, st.Routing, st.NextStepAt)
	}
	f.advanceClock(time.Minute)
	if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
		t.Fatal(err)
	}
	st = f.state(t, c.Key)
	if st.Phase != PhaseProgressing || st.Routing != (Routing{70, 30, false}) {
		t.Errorf("an interval after FLUSHALL: got phase %s routing %v, want Progressing 70/30", st.Phase, st.Routing)
	}
}

func TestTickWindowKeepsStepping(t *testing.T) {
	fast := seedCanary()
	fast.Spec.Analysis.Interval = "1s"
	idle := seedCanary()
	idle.Name = "idle"
	idle.Spec.TargetRef.Name = "idle"
	idle.Spec.Service.Primary, idle.Spec.Service.Canary = nil, nil
	f := newFixture(t, fast, idle)
	f.svc.cfg.Now = time.Now
	now := time.Now()
	f.store.states[fast.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{95, 5, false}}
	f.store.states[idle.Key] = State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
	f.store.due[fast.Key], f.store.releasing[fast.Key] = now, true
	f.store.due[idle.Key] = now
	rep, err := f.svc.Tick(context.Background(), now.Add(2500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.state(t, fast.Key).Steps; got != 3 {
		t.Errorf("releasing canary: got %d steps in a 2.5 s window at a 1 s interval, want 3", got)
	}
	if got := f.state(t, idle.Key).Steps; got != 1 {
		t.Errorf("idle canary: got %d steps, want 1", got)
	}
	if rep.Rounds != 3 {
		t.Errorf("got %d rounds, want 3", rep.Rounds)
	}
	// Nothing releasing: the tick returns at once.
	f.store.states[fast.Key] = State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary, Version: f.state(t, fast.Key).Version}
	f.store.releasing[fast.Key] = false
	start := time.Now()
	if _, err := f.svc.Tick(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("idle tick took %v, want it to return at once", took)
	}
}

func TestAlertAbortsMatchingReleases(t *testing.T) {
	c := seedCanary()
	other := seedCanary()
	other.Name, other.Spec.TargetRef.Name = "other", "other"
	other.Spec.Service.Primary, other.Spec.Service.Canary = nil, nil
	f := newFixture(t, c, other)
	for _, k := range []Key{c.Key, other.Key} {
		f.store.states[k] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", Routing: Routing{70, 30, false}}
	}
	n := AlertNotification{Status: "firing", Alerts: []Alert{{Status: "firing", Fingerprint: "abc",
		Labels: map[string]string{"alertname": "HighErrors", "namespace": "default", "destination_workload": "podinfo"}}}}
	rep, err := f.svc.HandleAlerts(context.Background(), n, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Aborted) != 1 || rep.Aborted[0].Key != c.Key {
		t.Fatalf("got aborted %+v, want podinfo only", rep.Aborted)
	}
	st := f.state(t, c.Key)
	if st.Phase != PhaseFailed || st.Routing != AllToPrimary || st.Trigger == nil || st.Trigger.Kind != "alert" {
		t.Errorf("got %+v", st)
	}
	if got := f.cluster.routes[c.Key]; got != AllToPrimary {
		t.Errorf("VirtualService: got %v, want 100/0", got)
	}
	if got := f.state(t, other.Key).Phase; got != PhaseProgressing {
		t.Errorf("other canary: got %s, want untouched", got)
	}
	// Again: idempotent.
	rep, err = f.svc.HandleAlerts(context.Background(), n, "g1")
	if err != nil || len(rep.Aborted) != 0 || len(rep.Ignored) != 1 {
		t.Errorf("repeat: got %+v, %v", rep, err)
	}
	// Resolved: recorded, never undoes.
	n.Alerts[0].Status = "resolved"
	rep, _ = f.svc.HandleAlerts(context.Background(), n, "g2")
	if rep.Resolved != 1 || f.state(t, c.Key).Phase != PhaseFailed {
		t.Errorf("resolved: got %+v", rep)
	}
}

func TestAbortPreemptsStepInFlight(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", Routing: Routing{70, 30, false}}
	f.store.due[c.Key] = t0
	hold := newActHold()
	f.cluster.actHold = hold
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = f.svc.Tick(context.Background(), f.clock()) })
	<-hold.acting // the step is writing the routes now
	_, aborted, err := f.svc.Abort(context.Background(), c.Key, "manual")
	close(hold.proceed)
	if err != nil || !aborted {
		t.Fatalf("abort: %v %v", aborted, err)
	}
	wg.Wait()
	st := f.state(t, c.Key)
	if st.Phase != PhaseFailed {
		t.Errorf("got phase %s, want Failed", st.Phase)
	}
	f.cluster.mu.Lock()
	defer f.cluster.mu.Unlock()
	if got := f.cluster.routes[c.Key]; got != AllToPrimary {
		t.Errorf("VirtualService after the race: got %v, want 100/0", got)
	}
}

func TestAlertMatches(t *testing.T) {
	c := seedCanary()
	c.Spec.TargetRef.Name = "podinfo-app"
	tests := []struct {
		name   string
		labels map[string]string
		ann    string
		want   bool
	}{
		{"canary label", map[string]string{"namespace": "default", "canary": "podinfo"}, "", true},
		{"workload label names the target", map[string]string{"namespace": "default", "destination_workload": "podinfo-app"}, "", true},
		{"other namespace", map[string]string{"namespace": "prod", "canary": "podinfo"}, "", false},
		{"no namespace", map[string]string{"canary": "podinfo"}, "", false},
		{"other app", map[string]string{"namespace": "default", "app": "cart"}, "", false},
		{"selector met", map[string]string{"namespace": "default", "app": "podinfo", "severity": "critical"}, "severity=critical", true},
		{"selector unmet", map[string]string{"namespace": "default", "app": "podinfo", "severity": "warning"}, "severity=critical", false},
		{"selector exclusion", map[string]string{"namespace": "default", "app": "podinfo", "team": "x"}, "team!=x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c
			if tt.ann != "" {
				c.Annotations = map[string]string{AnnotationAbortOn: tt.ann}
			}
			if got := AlertMatches(c, tt.labels); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecidePush(t *testing.T) {
	ref := func(tag, digest string) ImageRef {
		return ImageRef{Registry: "r:5000", Repository: "lab/podinfo", Tag: tag, Digest: digest}
	}
	tests := []struct {
		name    string
		ann     map[string]string
		running ImageRef
		pushed  ImageRef
		want    string
	}{
		{"newer semver pinned", nil, ref("1.0.0", "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ref("1.1.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:1.1.0@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"older semver ignored", nil, ref("1.2.0", ""), ref("1.1.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"same tag same digest ignored", nil, ref("1.2.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ref("1.2.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"same tag new digest taken", nil, ref("1.2.0", "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ref("1.2.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:1.2.0@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"non-semver new digest", nil, ref("main", "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ref("main", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:main@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"pin off", map[string]string{AnnotationPinDigest: "false"}, ref("1.0.0", ""), ref("1.1.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:1.1.0"},
		{"constraint met", map[string]string{AnnotationSemver: "~1.4"}, ref("1.4.0", ""), ref("1.4.2", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:1.4.2@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"constraint unmet", map[string]string{AnnotationSemver: "~1.4"}, ref("1.4.0", ""), ref("1.5.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"range", map[string]string{AnnotationSemver: ">=1.0.0 <2.0.0"}, ref("1.4.0", ""), ref("2.0.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"pattern unmet", map[string]string{AnnotationTagPattern: `^v\d+$`}, ref("v1", ""), ref("1.5.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"pattern met", map[string]string{AnnotationTagPattern: `^v\d+$`}, ref("v1", ""), ref("v2", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:v2@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"non-semver never replaces semver", nil, ref("1.2.0", "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ref("latest", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"nor a branch build", nil, ref("1.2.0", "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ref("main-3f2a1c", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), ""},
		{"unless a tag pattern says so", map[string]string{AnnotationTagPattern: `^main-`}, ref("1.2.0", ""), ref("main-3f2a1c", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:main-3f2a1c@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"semver replaces non-semver", nil, ref("main", "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ref("1.0.0", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), "r:5000/lab/podinfo:1.0.0@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, why := DecidePush(tt.ann, tt.running, tt.pushed)
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("got (%q, %v, %q), want %q", got, ok, why, tt.want)
			}
		})
	}
}

func TestHandlePushesVerifiesAndDedupes(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.store.states[c.Key] = State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
	f.cluster.images[c.Key] = map[string]string{"podinfo": "r:5000/lab/podinfo:1.0.0"}
	f.svc.d.Registry = fakeRegistry{digests: map[string]string{"r:5000/lab/podinfo:1.1.0": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}}
	push := ImagePush{EventID: "e1", Source: "distribution", Registry: "r:5000", Repository: "lab/podinfo", Tag: "1.1.0", Digest: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		Namespaces: []string{c.Namespace}}

	forged := push
	forged.Digest = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	rep, err := f.svc.HandlePushes(context.Background(), []ImagePush{forged})
	if err != nil || rep.Pushes[0].Outcome != "rejected" || len(rep.Started) != 0 {
		t.Fatalf("forged: got %+v, %v", rep, err)
	}
	if got := f.cluster.images[c.Key]["podinfo"]; got != "r:5000/lab/podinfo:1.0.0" {
		t.Fatalf("forged push changed the image to %s", got)
	}

	rep, err = f.svc.HandlePushes(context.Background(), []ImagePush{push, push})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Started) != 1 || rep.Pushes[1].Outcome != "duplicate" {
		t.Fatalf("got %+v, want one start and one duplicate", rep)
	}
	if got := f.cluster.images[c.Key]["podinfo"]; got != "r:5000/lab/podinfo:1.1.0@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" {
		t.Errorf("got image %s", got)
	}
	st := f.state(t, c.Key)
	if st.Phase != PhaseProgressing || st.Trigger == nil || st.Trigger.Kind != "push" || st.Trigger.EventID != "e1" {
		t.Errorf("got phase %s trigger %+v, want Progressing from push e1", st.Phase, st.Trigger)
	}
}

func TestTickStepsOnlyItsNamespace(t *testing.T) {
	mine := seedCanary()
	mine.Namespace = "team-a"
	mine.Spec.Service.Primary, mine.Spec.Service.Canary = nil, nil
	theirs := seedCanary()
	theirs.Namespace = "team-b"
	theirs.Spec.Service.Primary, theirs.Spec.Service.Canary = nil, nil
	f := newFixture(t, mine, theirs)
	f.svc.cfg.Namespace = "team-a"
	// Another Siskin scoped to team-b shares the Redis and has scheduled its canary.
	f.store.due[theirs.Key] = t0
	if _, err := f.svc.Tick(context.Background(), f.clock()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Load(context.Background(), theirs.Key); err == nil {
		t.Error("a Siskin scoped to team-a stepped a canary of team-b")
	}
	if got := f.state(t, mine.Key).Steps; got != 1 {
		t.Errorf("own canary: got %d steps, want 1", got)
	}
}

// A release due but not steppable by this instance (another namespace's, or one whose lease
// another instance holds) must not keep a tick looping past its window.
func TestTickEndsWithItsWindowWhenAReleaseStaysDue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture, mine, theirs Canary)
	}{
		{"another namespace's release is overdue", func(f *fixture, _, theirs Canary) {
			f.store.due[theirs.Key], f.store.releasing[theirs.Key] = t0.Add(-time.Minute), true
		}},
		{"own release is overdue and its lease held elsewhere", func(f *fixture, mine, _ Canary) {
			f.store.states[mine.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{95, 5, false}}
			f.store.due[mine.Key], f.store.releasing[mine.Key] = t0.Add(-time.Minute), true
			f.store.leases[mine.Key] = 99
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mine := seedCanary()
			mine.Namespace = "team-a"
			mine.Spec.Service.Primary, mine.Spec.Service.Canary = nil, nil
			theirs := seedCanary()
			theirs.Namespace = "team-b"
			theirs.Spec.Service.Primary, theirs.Spec.Service.Canary = nil, nil
			f := newFixture(t, mine, theirs)
			f.svc.cfg.Namespace = "team-a"
			tc.setup(f, mine, theirs)
			done := make(chan error, 1)
			go func() {
				_, err := f.svc.Tick(context.Background(), f.clock().Add(300*time.Millisecond))
				done <- err
			}()
			// The fixture's clock stands still: the window is over only when the tick moves it.
			time.Sleep(50 * time.Millisecond)
			f.advanceClock(time.Second)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the tick was still looping 5 s after its window ended")
			}
		})
	}
}

func TestRevertOnDeletion(t *testing.T) {
	c := seedCanary()
	c.Spec.RevertOnDeletion = true
	f := newFixture(t, c)
	ctx := context.Background()
	if _, err := f.svc.Advance(ctx, c.Key); err != nil {
		t.Fatal(err)
	}
	if got := f.cluster.canaries[c.Key].Finalizers; len(got) != 1 || got[0] != FinalizerName {
		t.Fatalf("got finalizers %v, want %s", got, FinalizerName)
	}
	// Deleted: the target is restored first, then, once it is ready, the routes.
	cd := f.cluster.canaries[c.Key]
	cd.Deleting = true
	f.cluster.canaries[c.Key] = cd
	w := f.cluster.work[c.Key]
	w.Canary = Readiness{Reason: "scaling up"}
	f.cluster.work[c.Key] = w
	rep, err := f.svc.Advance(ctx, c.Key)
	if err != nil || rep.To != PhaseTerminating || f.cluster.count("workloads finalized") != 1 || f.cluster.count("routes restored") != 0 {
		t.Fatalf("first deletion step: got %+v, %v, actions %v", rep, err, f.cluster.applied)
	}
	if _, err := f.svc.Advance(ctx, c.Key); err != nil || f.cluster.count("routes restored") != 0 {
		t.Fatalf("target not ready: routes restored too early (%v)", err)
	}
	w.Canary = Readiness{Ready: true}
	f.cluster.work[c.Key] = w
	rep, err = f.svc.Advance(ctx, c.Key)
	if err != nil || rep.To != PhaseTerminated || f.cluster.count("routes restored") != 1 || f.cluster.count("finalizer false") != 1 {
		t.Fatalf("final step: got %+v, %v, actions %v", rep, err, f.cluster.applied)
	}
	if _, err := f.store.Load(ctx, c.Key); err == nil {
		t.Error("state kept after finalization")
	}
}

func TestTickDoesNotSpinOnAForeignDueCanary(t *testing.T) {
	theirs := seedCanary()
	theirs.Namespace = "team-b"
	theirs.Spec.Service.Primary, theirs.Spec.Service.Canary = nil, nil
	f := newFixture(t)
	f.svc.cfg.Namespace = "team-a"
	f.svc.cfg.Now = time.Now
	// team-b's canary is releasing and overdue, and its own Siskin is down.
	f.store.due[theirs.Key], f.store.releasing[theirs.Key] = time.Now().Add(-time.Second), true
	start := time.Now()
	rep, err := f.svc.Tick(context.Background(), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rounds != 1 {
		t.Errorf("got %d rounds in %v, want 1: the tick must not wait for a canary it may not step", rep.Rounds, time.Since(start))
	}
}

// countingMetrics counts the queries of a step.
type countingMetrics struct {
	fakeAnalysis
	mu    sync.Mutex
	calls int
}

func (m *countingMetrics) QueryMetrics(ctx context.Context, c Canary) []MetricResult {
	m.mu.Lock()
	m.calls++
	m.mu.Unlock()
	return m.fakeAnalysis.QueryMetrics(ctx, c)
}

func TestAnalysisStepQueriesMetricsOnceAlongsideTheWorkloads(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	m := &countingMetrics{fakeAnalysis: fakeAnalysis{metrics: []MetricResult{{Name: "request-success-rate", Value: 100}, {Name: "request-duration", Value: 10}}}}
	f.svc.d.Metrics = m
	f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{90, 10, false}}
	if _, err := f.svc.Advance(context.Background(), c.Key); err != nil {
		t.Fatal(err)
	}
	if m.calls != 1 || f.state(t, c.Key).Routing != (Routing{85, 15, false}) {
		t.Errorf("got %d queries and routing %v, want 1 query and 85/15", m.calls, f.state(t, c.Key).Routing)
	}
	// The first step of a release runs the pre-rollout hooks, not the metrics.
	f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: AllToPrimary, Version: f.state(t, c.Key).Version}
	m.calls = 0
	if _, err := f.svc.Advance(context.Background(), c.Key); err != nil {
		t.Fatal(err)
	}
	if m.calls != 0 {
		t.Errorf("first step: got %d metric queries, want 0", m.calls)
	}
}

// blockingHooks holds every call until released.
type blockingHooks struct {
	fakeAnalysis
	release chan struct{}
	called  chan HookType
}

func (b blockingHooks) CallHooks(ctx context.Context, c Canary, hooks []Webhook, call HookCall, stop bool) []HookResult {
	b.called <- hooks[0].EffectiveType()
	<-b.release
	return b.fakeAnalysis.CallHooks(ctx, c, hooks, call, stop)
}

func TestAbortDoesNotWaitForItsNotifications(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Webhooks = []Webhook{{Name: "notify", Type: HookPostRollout, URL: "http://x"}}
	f := newFixture(t, c)
	hooks := blockingHooks{release: make(chan struct{}), called: make(chan HookType, 1)}
	f.svc.d.Hooks = hooks
	f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", Routing: Routing{70, 30, false}}
	done := make(chan error, 1)
	go func() {
		_, _, err := f.svc.Abort(context.Background(), c.Key, "manual")
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the abort waited for its post-rollout hook")
	}
	if got := f.state(t, c.Key).Phase; got != PhaseFailed {
		t.Fatalf("got %s, want Failed when the abort answers", got)
	}
	if got := <-hooks.called; got != HookPostRollout {
		t.Errorf("got a %s hook, want post-rollout", got)
	}
	close(hooks.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.svc.Drain(ctx)
	if ctx.Err() != nil {
		t.Error("Drain did not return once the hook finished")
	}
}

// Regression: aborting a Waiting canary did not record the waiting revision, so the next tick
// started the aborted revision again.
func TestAbortWhileWaitingDoesNotRestartTheRevision(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	ctx := context.Background()
	f.cluster.work[c.Key] = readyWorld("v2").work
	if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseWaiting, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Schedule(ctx, c.Key, f.clock().Add(time.Minute), true); err != nil {
		t.Fatal(err)
	}
	if _, aborted, err := f.svc.Abort(ctx, c.Key, "not this one"); err != nil || !aborted {
		t.Fatalf("abort: aborted %v err %v", aborted, err)
	}
	for range 3 {
		f.advanceClock(time.Minute)
		if _, err := f.svc.Tick(ctx, f.clock()); err != nil {
			t.Fatal(err)
		}
		if st := f.state(t, c.Key); st.Phase != PhaseFailed || st.LastAppliedSpec != "v2" {
			t.Fatalf("after the abort: got %s lastAppliedSpec %q, want Failed with v2 recorded", st.Phase, st.LastAppliedSpec)
		}
	}
}

// Regression: a namespace-scoped Siskin whose shared schedule held another namespace's overdue
// releasing canary (whose own Siskin is gone) spun in its tick forever: that canary was always
// the next due, and never its to step.
func TestTickIgnoresOtherNamespacesOverdueReleases(t *testing.T) {
	mine := seedCanary()
	mine.Namespace = "team-a"
	mine.Spec.Analysis.Interval = "1s"
	mine.Spec.Service.Primary, mine.Spec.Service.Canary = nil, nil
	theirs := seedCanary()
	theirs.Namespace = "team-b"
	theirs.Spec.Service.Primary, theirs.Spec.Service.Canary = nil, nil
	f := newFixture(t, mine, theirs)
	f.svc.cfg.Namespace = "team-a"
	f.svc.cfg.Now = time.Now
	now := time.Now()
	f.store.states[theirs.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{95, 5, false}}
	f.store.due[theirs.Key], f.store.releasing[theirs.Key] = now.Add(-time.Minute), true
	f.store.states[mine.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{95, 5, false}}
	f.store.due[mine.Key], f.store.releasing[mine.Key] = now, true

	type result struct {
		rep TickReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := f.svc.Tick(context.Background(), now.Add(1500*time.Millisecond))
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		// Its own releasing canary still gets the window: a step now and one a second later.
		if got := f.state(t, mine.Key).Steps; got != 2 || r.rep.Rounds != 2 {
			t.Errorf("own canary: %d steps in %d rounds, want 2 in 2", got, r.rep.Rounds)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tick never returned: it spins on another namespace's overdue canary")
	}
	if st := f.state(t, theirs.Key); st.Steps != 0 {
		t.Errorf("stepped team-b's canary %d times", st.Steps)
	}
}

// rescheduledStore answers DueAt as if every canary had just been stepped and rescheduled an
// hour later by another instance, between the tick's listing and its reading.
type rescheduledStore struct{ *memStore }

func (r rescheduledStore) DueAt(_ context.Context, _ Key) (time.Time, bool, error) {
	return time.Now().Add(time.Hour), true, nil
}

// Regression: looking past another namespace's overdue release, a tick took its own canary's
// new schedule, an interval away, for a step due in its window and waited for it.
func TestTickDoesNotWaitPastItsWindow(t *testing.T) {
	mine := seedCanary()
	mine.Namespace = "team-a"
	mine.Spec.Service.Primary, mine.Spec.Service.Canary = nil, nil
	theirs := seedCanary()
	theirs.Namespace = "team-b"
	theirs.Spec.Service.Primary, theirs.Spec.Service.Canary = nil, nil
	f := newFixture(t, mine, theirs)
	f.svc.cfg.Namespace = "team-a"
	f.svc.cfg.Now = time.Now
	f.svc.d.Store = rescheduledStore{f.store}
	now := time.Now()
	for _, k := range []Key{mine.Key, theirs.Key} {
		f.store.states[k] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{95, 5, false}}
		f.store.releasing[k] = true
	}
	f.store.due[theirs.Key], f.store.due[mine.Key] = now.Add(-time.Minute), now
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Tick(context.Background(), now.Add(time.Second))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tick waits for a step due after its window")
	}
}

// readingRoutes is a Routes that can read ahead (RoutesReader), and counts how it was used.
type readingRoutes struct {
	*fakeCluster
	mu                     sync.Mutex
	reads, viaRead, direct int
}

type liveFake struct {
	r *readingRoutes
	c Canary
}

func (r *readingRoutes) ReadRoutes(_ context.Context, c Canary, _ bool, _ string) LiveRoutes {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	return liveFake{r, c}
}

func (r *readingRoutes) ApplyRoutes(ctx context.Context, c Canary, p RoutePlan) error {
	r.mu.Lock()
	r.direct++
	r.mu.Unlock()
	return r.fakeCluster.ApplyRoutes(ctx, c, p)
}

func (l liveFake) Apply(ctx context.Context, p RoutePlan) error {
	l.r.mu.Lock()
	l.r.viaRead++
	l.r.mu.Unlock()
	return l.r.fakeCluster.ApplyRoutes(ctx, l.c, p)
}

func TestStepCorrectsTheRoutesItReadAhead(t *testing.T) {
	c := seedCanary()
	tests := []struct {
		name                           string
		state                          State
		wantReads, wantVia, wantDirect int
		wantRouting                    Routing
	}{
		{"an analysis step reads the routes alongside the workloads", State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{90, 10, false}},
			1, 1, 0, Routing{85, 15, false}},
		{"an idle canary re-asserts from its read too", State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary},
			1, 1, 0, AllToPrimary},
		{"initialisation cannot tell, and reads when it routes", State{Phase: PhaseInitializing},
			0, 0, 1, AllToPrimary},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, c)
			r := &readingRoutes{fakeCluster: f.cluster}
			f.svc.d.Routers = Routers{DefaultProvider: r}
			f.store.states[c.Key] = tt.state
			if _, err := f.svc.Advance(context.Background(), c.Key); err != nil {
				t.Fatal(err)
			}
			if r.reads != tt.wantReads || r.viaRead != tt.wantVia || r.direct != tt.wantDirect {
				t.Errorf("read ahead %d, applied from the read %d, applied with its own read %d; want %d, %d, %d",
					r.reads, r.viaRead, r.direct, tt.wantReads, tt.wantVia, tt.wantDirect)
			}
			if got := f.cluster.routes[c.Key]; got != tt.wantRouting {
				t.Errorf("routes: got %v, want %v", got, tt.wantRouting)
			}
		})
	}
}

// overlappingLists is a cluster whose Canary LIST waits for a Deployment LIST to be under way.
type overlappingLists struct {
	*fakeCluster
	deploymentsListed chan struct{}
	once              sync.Once
}

func (o *overlappingLists) DeploymentImages(ctx context.Context, ns string) (map[string]map[string]string, error) {
	o.once.Do(func() { close(o.deploymentsListed) })
	return o.fakeCluster.DeploymentImages(ctx, ns)
}

func (o *overlappingLists) ListCanaries(ctx context.Context, ns string) ([]Canary, error) {
	select {
	case <-o.deploymentsListed:
	case <-time.After(2 * time.Second):
		return nil, fmt.Errorf("the Deployments were not being listed alongside the Canaries")
	}
	return o.fakeCluster.ListCanaries(ctx, ns)
}

// A Siskin scoped to a namespace lists its Canaries and its Deployments at once; the push
// then starts the release from the canary as listed.
func TestScopedPushListsCanariesAndDeploymentsTogether(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.svc.cfg.Namespace = c.Namespace
	o := &overlappingLists{fakeCluster: f.cluster, deploymentsListed: make(chan struct{})}
	f.svc.d.Workloads, f.svc.d.Images = o, o
	f.store.states[c.Key] = State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
	f.cluster.images[c.Key] = map[string]string{"podinfo": "r:5000/lab/podinfo:1.0.0"}
	f.svc.d.Registry = fakeRegistry{digests: map[string]string{"r:5000/lab/podinfo:1.1.0": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}}
	rep, err := f.svc.HandlePushes(context.Background(), []ImagePush{{EventID: "e1", Registry: "r:5000", Repository: "lab/podinfo", Tag: "1.1.0", Digest: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}})
	if err != nil || len(rep.Started) != 1 {
		t.Fatalf("got %+v, %v; want one release started", rep, err)
	}
	if st := f.state(t, c.Key); st.Phase != PhaseProgressing || st.Trigger == nil || st.Trigger.EventID != "e1" {
		t.Errorf("got phase %s trigger %+v, want Progressing from push e1", st.Phase, st.Trigger)
	}
}

// A push claimed by a process that died before applying it is not lost: while the claim
// lasts the retry is answered busy (503, retried), and once it has run out the retry applies
// the push; only an applied push is a duplicate afterwards.
func TestPushClaimedByADeadProcessIsRetriedNotLost(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	f.store.states[c.Key] = State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
	f.cluster.images[c.Key] = map[string]string{"podinfo": "r:5000/lab/podinfo:1.0.0"}
	digest := "sha256:" + strings.Repeat("b", 64)
	f.svc.d.Registry = fakeRegistry{digests: map[string]string{"r:5000/lab/podinfo:1.1.0": digest}}
	push := ImagePush{EventID: "e1", Source: "distribution", Registry: "r:5000", Repository: "lab/podinfo", Tag: "1.1.0", Digest: digest,
		Namespaces: []string{c.Namespace}}
	claim := "push:r:5000/lab/podinfo:1.1.0@" + digest + ":namespace default"
	f.store.seen[claim] = true // what the dead process left

	ctx := context.Background()
	if _, err := f.svc.HandlePushes(ctx, []ImagePush{push}); !errors.Is(err, ErrBusy) {
		t.Fatalf("retry while the claim lasts: got %v, want ErrBusy (a 503 the sender retries)", err)
	}
	if got := f.cluster.images[c.Key]["podinfo"]; got != "r:5000/lab/podinfo:1.0.0" {
		t.Fatalf("image changed to %s while claimed elsewhere", got)
	}
	delete(f.store.seen, claim) // the claim ran out
	rep, err := f.svc.HandlePushes(ctx, []ImagePush{push})
	if err != nil || len(rep.Started) != 1 {
		t.Fatalf("retry after the claim ran out: got %+v, %v; want the release started", rep, err)
	}
	rep, err = f.svc.HandlePushes(ctx, []ImagePush{push})
	if err != nil || rep.Pushes[0].Outcome != "duplicate" {
		t.Fatalf("after it was applied: got %+v, %v; want a duplicate", rep, err)
	}
}
