package functions

import (
	"context"
	"sync"
	"testing"
	"time"
)

// lateness records every step's lateness and time, as the metrics see them.
type lateness struct {
	nopObserver
	mu    sync.Mutex
	late  []time.Duration
	times []time.Time
}

func (l *lateness) Stepped(_ Canary, _, after State, _ []MetricResult, _, late time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.late = append(l.late, late)
	l.times = append(l.times, after.LastStepAt)
}

// TestIntervalsHonouredWithOnceAMinutePing simulates a PingSource sending one tick a minute to
// a Service whose ticks keep dispatching until the next ping takes over (a window longer than
// the minute, cut short by the handover), for analysis intervals from Flagger's 10 s floor to
// an hour, over three hours, and checks that no step is early and none is late by more than
// the bound: steps due in the last seconds of a minute included.
func TestIntervalsHonouredWithOnceAMinutePing(t *testing.T) {
	const maxLate = time.Second
	// 55 s and 59 s fall due in the last seconds of most minutes.
	tests := []struct{ interval string }{{"10s"}, {"30s"}, {"55s"}, {"59s"}, {"1m"}, {"90s"}, {"60m"}}
	for _, tt := range tests {
		t.Run(tt.interval, func(t *testing.T) {
			c := seedCanary()
			c.Spec.Analysis.Interval = tt.interval
			// A release that stays in analysis for the three hours: every check fails, and the
			// threshold is out of reach.
			c.Spec.Analysis.Threshold = 1 << 20
			f := newFixture(t, c)
			obs := &lateness{}
			f.svc.d.Observer = obs
			f.svc.cfg.MinInterval = MinAnalysisInterval
			f.svc.cfg.Sleep = func(_ context.Context, d time.Duration) { f.advanceClock(d) }
			f.svc.d.Metrics = fakeAnalysis{metrics: []MetricResult{{Name: "request-success-rate", Value: 50}, {Name: "request-duration", Value: 10}}}
			f.store.states[c.Key] = State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{95, 5, false}}
			f.store.due[c.Key], f.store.releasing[c.Key] = t0, true

			for ping := t0; ping.Before(t0.Add(3 * time.Hour)); ping = ping.Add(time.Minute) {
				f.mu.Lock()
				f.now = ping
				f.mu.Unlock()
				// The next ping takes over at ping+1m: until then this tick dispatches.
				if _, err := f.svc.Tick(context.Background(), ping.Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			interval := c.Spec.Interval(MinAnalysisInterval)
			var worst time.Duration
			for i, l := range obs.late {
				worst = max(worst, l)
				if i > 0 && obs.times[i].Sub(obs.times[i-1]) < interval {
					t.Fatalf("steps %d and %d are %v apart, under the %v interval", i-1, i, obs.times[i].Sub(obs.times[i-1]), interval)
				}
			}
			if worst > maxLate {
				t.Errorf("a step ran %v late, want at most %v", worst, maxLate)
			}
			// At t0 and at every interval after it, up to three hours later included.
			if n, want := len(obs.late), int(3*time.Hour/interval)+1; n != want {
				t.Errorf("got %d steps in 3 h, want %d", n, want)
			}
			t.Logf("interval %s: %d steps in 3 h, the latest %v late", tt.interval, len(obs.late), worst)
		})
	}
}

func TestRetryDelayBacksOff(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		jitter   float64
		want     time.Duration
	}{
		{"first failure waits the base", 1, 0, 10 * time.Second},
		{"second doubles", 2, 0, 20 * time.Second},
		{"fourth", 4, 0, 80 * time.Second},
		{"capped", 10, 0, maxRetryDelay},
		{"many failures stay capped", 1000, 0, maxRetryDelay},
		{"jitter takes at most a fifth", 2, 0.999, 20*time.Second - time.Duration(float64(20*time.Second)*0.2*0.999)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryDelay(10*time.Second, tt.failures, tt.jitter); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
