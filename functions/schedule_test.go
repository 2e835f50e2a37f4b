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
// a Service whose ticks keep working for a 50 s window, for analysis intervals from Flagger's
// 10 s floor to an hour, over three hours, and checks how late each step runs.
func TestIntervalsHonouredWithOnceAMinutePing(t *testing.T) {
	tests := []struct {
		interval string
		maxLate  time.Duration
		steps    int
	}{
		// Within the window, a step runs when it is due.
		{"10s", 0, 3 * 60 * 6},
		{"30s", 0, 3 * 60 * 2},
		// A step due in the last 10 s of a minute (after the window) waits for the next ping.
		{"55s", 10 * time.Second, 3 * 60},
		// Past the window, a step waits for the next ping: never more than a minute late.
		{"1m", 0, 3 * 60},
		// 90 s: due at 1:30 falls in the window of the 1:00 ping, 3:00 at the 3:00 ping.
		{"90s", 0, 3 * 60 * 60 / 90},
		{"60m", 0, 3},
	}
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
				if _, err := f.svc.Tick(context.Background(), ping.Add(50*time.Second)); err != nil {
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
			if worst > tt.maxLate {
				t.Errorf("a step ran %v late, want at most %v", worst, tt.maxLate)
			}
			if n := len(obs.late); n < tt.steps-1 || n > tt.steps {
				t.Errorf("got %d steps in 3 h, want %d", n, tt.steps)
			}
			t.Logf("interval %s: %d steps in 3 h, the latest %v late", tt.interval, len(obs.late), worst)
		})
	}
}
