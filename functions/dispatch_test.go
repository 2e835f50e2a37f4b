package functions

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// relay plays the network between the dispatcher and the Service's pods: each step event is
// delivered to one of the services, and, as at-least-once delivery may, some are delivered
// twice, to two of them at once, out of order.
type relay struct {
	mu       sync.Mutex
	services []*Service
	rng      *rand.Rand
	sent     int
}

func (r *relay) DispatchStep(ctx context.Context, k Key, _ time.Time) error {
	r.mu.Lock()
	r.sent++
	first := r.services[r.rng.IntN(len(r.services))]
	var dup *Service
	if r.rng.IntN(10) < 3 {
		dup = r.services[r.rng.IntN(len(r.services))]
	}
	delay := time.Duration(r.rng.IntN(3)) * time.Millisecond
	late := r.rng.IntN(2) == 0
	r.mu.Unlock()
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { time.Sleep(delay); _, err = first.StepDue(ctx, k) })
	if dup != nil && !late {
		wg.Go(func() { _, _ = dup.StepDue(ctx, k) }) // at once, at another instance
	}
	wg.Wait()
	if dup != nil && late {
		_, _ = dup.StepDue(ctx, k) // a redelivery after the step was done
	}
	return err
}

func (r *relay) WakeDispatcher(context.Context, string) error { return nil }

// wakes counts the dispatcher wake-ups a Service sends.
type wakes struct {
	mu sync.Mutex
	n  int
}

func (w *wakes) DispatchStep(context.Context, Key, time.Time) error { return nil }
func (w *wakes) WakeDispatcher(context.Context, string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	return nil
}

// A step that leaves a release going on wakes a dispatcher only when none dispatches past its
// next due time; the steps of a fleet released at once wake one.
func TestAReleaseWithNoDispatcherWakesOne(t *testing.T) {
	releasing := State{Phase: PhaseProgressing}
	idle := State{Phase: PhaseSucceeded}
	tests := []struct {
		name string
		// dispatcher: a tick began (true) or ended early (false) before the saves.
		tickRunning bool
		saves       []State
		wantWakes   int
	}{
		{name: "a fleet released between pings wakes one", saves: []State{releasing, releasing, releasing, releasing}, wantWakes: 1},
		{name: "a release while a tick dispatches wakes none", tickRunning: true, saves: []State{releasing, releasing}, wantWakes: 0},
		{name: "an idle canary wakes none", saves: []State{idle, idle}, wantWakes: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, seedCanary())
			w := &wakes{}
			svc := New(Deps{Store: f.store, Workloads: f.cluster, Routers: Routers{DefaultProvider: fakeRouter{f.cluster}}, Dispatcher: w},
				Config{MinInterval: MinAnalysisInterval, Now: f.clock, DispatchWindow: 75 * time.Second}, nil)
			ctx := context.Background()
			gen, err := f.store.BeginDispatch(ctx, "*", f.clock().Add(75*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.tickRunning {
				if err := f.store.EndDispatch(ctx, "*", gen); err != nil {
					t.Fatal(err)
				}
			}
			for i, st := range tt.saves {
				st.NextStepAt = f.clock().Add(10 * time.Second)
				if err := svc.scheduleSaved(ctx, Key{Namespace: "default", Name: "app-" + string(rune('a'+i))}, st); err != nil {
					t.Fatal(err)
				}
			}
			svc.Drain(ctx)
			if w.n != tt.wantWakes {
				t.Errorf("wake-ups: got %d, want %d", w.n, tt.wantWakes)
			}
		})
	}
}

// A tick that finds nothing releasing stops and says so, and the next release started by an
// event wakes a dispatcher; past a woken dispatcher's window, the next step wakes another.
func TestAnEarlyEndedTickLetsTheNextReleaseWakeADispatcher(t *testing.T) {
	f := newFixture(t, seedCanary())
	w := &wakes{}
	svc := New(Deps{Store: f.store, Workloads: f.cluster, Routers: Routers{DefaultProvider: fakeRouter{f.cluster}}, Metrics: f.svc.d.Metrics, Hooks: f.svc.d.Hooks, Dispatcher: w},
		Config{MinInterval: MinAnalysisInterval, Now: f.clock, DispatchWindow: 75 * time.Second}, nil)
	ctx := context.Background()
	if _, err := svc.Tick(ctx, f.clock().Add(75*time.Second)); err != nil {
		t.Fatal(err)
	}
	k := Key{Namespace: "default", Name: "podinfo"}
	save := func() {
		t.Helper()
		if err := svc.scheduleSaved(ctx, k, State{Phase: PhaseProgressing, NextStepAt: f.clock().Add(10 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		svc.Drain(ctx)
	}
	save()
	if w.n != 1 {
		t.Fatalf("after the tick ended early, a release woke %d dispatchers, want 1", w.n)
	}
	f.advanceClock(30 * time.Second)
	save()
	if w.n != 1 {
		t.Fatalf("inside the woken dispatcher's window, a step woke %d in all, want 1", w.n)
	}
	f.advanceClock(50 * time.Second)
	save()
	if w.n != 2 {
		t.Fatalf("past the woken dispatcher's window, a step woke %d in all, want 2", w.n)
	}
}

// weights records each canary's VirtualService weights in the order they were written.
type weights struct {
	*fakeCluster
	clock func() time.Time
	mu    sync.Mutex
	seq   map[Key][]int
	at    map[Key][]time.Time
}

func (w *weights) ApplyRoutes(ctx context.Context, c Canary, p RoutePlan) error {
	w.mu.Lock()
	s := w.seq[c.Key]
	if len(s) == 0 || s[len(s)-1] != p.Routing.Canary {
		w.seq[c.Key] = append(s, p.Routing.Canary)
		w.at[c.Key] = append(w.at[c.Key], w.clock())
	}
	w.mu.Unlock()
	return w.fakeCluster.ApplyRoutes(ctx, c, p)
}

// The dispatcher sends every due step as an event; three instances receive them, duplicated
// (30 %), reordered and at two instances at once. Each canary's weights still go 5, 10, …, 50
// exactly once each, and on to the promotion.
func TestDispatchedStepsOverThreeInstancesNeverDouble(t *testing.T) {
	var canaries []Canary
	for i := range 12 {
		c := seedCanary()
		c.Name = "app-" + string(rune('a'+i))
		c.Key.Name = c.Name
		c.Spec.TargetRef.Name = c.Name
		c.Spec.Service.Primary = &ServiceMeta{Host: c.Name + "-primary.default.svc.cluster.local"}
		c.Spec.Service.Canary = &ServiceMeta{Host: c.Name + "-canary.default.svc.cluster.local"}
		c.Spec.Analysis.Interval = "10s"
		canaries = append(canaries, c)
	}
	f := newFixture(t, canaries...)
	rec := &weights{fakeCluster: f.cluster, clock: f.clock, seq: map[Key][]int{}, at: map[Key][]time.Time{}}
	r := &relay{rng: rand.New(rand.NewPCG(1, 2))}
	mk := func() *Service {
		return New(Deps{Store: f.store, Workloads: f.cluster, Routers: Routers{DefaultProvider: rec}, Metrics: f.svc.d.Metrics, Hooks: f.svc.d.Hooks, Dispatcher: r},
			Config{MinInterval: MinAnalysisInterval, Now: f.clock}, nil)
	}
	dispatcher := mk()
	r.services = []*Service{mk(), mk(), mk()}
	ctx := context.Background()
	for _, c := range canaries {
		if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: AllToPrimary}, nil); err != nil {
			t.Fatal(err)
		}
		if err := f.store.Schedule(ctx, c.Key, f.clock(), true); err != nil {
			t.Fatal(err)
		}
	}
	for range 30 { // ticks 10 s apart; a duplicated ping every third
		rep, err := dispatcher.Tick(ctx, f.clock())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Failed > 0 {
			t.Logf("tick: %+v", rep)
		}
		f.advanceClock(10 * time.Second)
	}
	want := []int{5, 10, 15, 20, 25, 30, 35, 40, 45, 50}
	for _, c := range canaries {
		got := rec.seq[c.Key]
		if i := slices.Index(got, 0); i >= 0 {
			got = got[:i] // after 50 comes the promotion, and 0
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: weights %v, want %v once each", c.Key, rec.seq[c.Key], want)
		}
		for i := 1; i < len(got); i++ {
			if gap := rec.at[c.Key][i].Sub(rec.at[c.Key][i-1]); gap < 10*time.Second {
				t.Errorf("%s: weight %d came %v after %d, under the 10 s interval (a double step)", c.Key, got[i], gap, got[i-1])
			}
		}
	}
	if r.sent < len(canaries)*len(want) {
		t.Errorf("dispatched %d step events, want at least one per step (%d)", r.sent, len(canaries)*len(want))
	}
}

// A newer ping takes the dispatching over: the older tick, still in its window, stops at its
// next wake-up instead of dispatching alongside.
func TestANewerTickTakesTheDispatchingOver(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Interval = "10s"
	f := newFixture(t, c)
	ctx := context.Background()
	if _, err := f.store.Save(ctx, c.Key, State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: AllToPrimary}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Schedule(ctx, c.Key, f.clock(), true); err != nil {
		t.Fatal(err)
	}
	woke := make(chan struct{})
	resume := make(chan struct{})
	f.svc.cfg.MinInterval = MinAnalysisInterval
	f.svc.cfg.Sleep = func(_ context.Context, d time.Duration) {
		woke <- struct{}{}
		<-resume
		f.advanceClock(d)
	}
	done := make(chan TickReport, 1)
	go func() {
		rep, err := f.svc.Tick(ctx, f.clock().Add(75*time.Second))
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	<-woke                                                                                    // the first tick stepped and sleeps until the next step is due
	if _, err := f.store.BeginDispatch(ctx, "*", f.clock().Add(75*time.Second)); err != nil { // the next ping
		t.Fatal(err)
	}
	before := f.state(t, c.Key).Steps
	close(resume)
	rep := <-done
	if !rep.HandedOver {
		t.Errorf("got %+v, want the older tick to hand over", rep)
	}
	if got := f.state(t, c.Key).Steps; got != before {
		t.Errorf("the older tick stepped after the newer began: %d steps, want %d", got, before)
	}
}
