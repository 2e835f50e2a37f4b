package chaos

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// ladder is a clean release of canary c: image set at start, steps every interval from
// start+1, promotion and Succeeded at the end.
func ladder(start float64, tag string) ([]Weight, []Phase, []Image, []Image) {
	ws := []Weight{{at(start), 0}}
	s := start
	for w := 5; w <= 50; w += 5 {
		s += 2
		ws = append(ws, Weight{at(s), w})
	}
	s += 2
	ws = append(ws, Weight{at(s + 1), 0})
	phases := []Phase{{at(start + 0.5), "Progressing"}, {at(s), "Promoting"}, {at(s + 1), "Finalising"}, {at(s + 3), "Succeeded"}}
	return ws, phases, []Image{{at(start), "127.0.0.1:5000/lab/a:" + tag + "@sha256:1"}}, []Image{{at(s), "127.0.0.1:5000/lab/a:" + tag + "@sha256:1"}}
}

func baseHistory(edit func(h *History)) History {
	ws, ps, ts, prim := ladder(10, "2.0.0")
	h := History{
		Interval: 2 * time.Second, StepWeight: 5, MaxWeight: 50, Threshold: 5, Slack: 5 * time.Second,
		Weights:   map[string][]Weight{"a": ws},
		Phases:    map[string][]Phase{"a": ps},
		Targets:   map[string][]Image{"a": append([]Image{{at(0), "127.0.0.1:5000/lab/a:1.0.0"}}, ts...)},
		Primaries: map[string][]Image{"a": append([]Image{{at(1), "127.0.0.1:5000/lab/a:1.0.0"}}, prim...)},
		Releases:  []Release{{Canary: "a", Tag: "2.0.0", Good: true, Acked: at(9.9)}},
	}
	if edit != nil {
		edit(&h)
	}
	return h
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		h    History
		// want is the figure that must be non-zero (empty: a clean run), and a word of the
		// violation.
		want    func(f Figures) int
		message string
	}{
		{"a clean release", baseHistory(nil), nil, ""},
		{"a double step", baseHistory(func(h *History) {
			ws := h.Weights["a"]
			ws[3].At = ws[2].At.Add(200 * time.Millisecond) // 10 → 15 right after 5 → 10
		}), func(f Figures) int { return f.DoubleSteps }, "double step"},
		{"a double step right after a state loss, strict", baseHistory(func(h *History) {
			ws := h.Weights["a"]
			ws[3].At = ws[2].At.Add(200 * time.Millisecond)
			h.StateLost, h.Strict = []time.Time{ws[3].At.Add(-100 * time.Millisecond)}, true
		}), func(f Figures) int { return f.DoubleSteps }, "double step"},
		{"a skipped step", baseHistory(func(h *History) {
			ws := h.Weights["a"]
			h.Weights["a"] = append(ws[:3:3], ws[4:]...) // 10 → 20
		}), func(f Figures) int { return f.SkippedSteps }, "jumped"},
		{"a weight going back", baseHistory(func(h *History) {
			ws := h.Weights["a"]
			h.Weights["a"] = append(append(ws[:4:4], Weight{ws[3].At.Add(time.Second), 10}), ws[4:]...)
		}), func(f Figures) int { return f.Regressions }, "went back"},
		{"a step while Prometheus was down", baseHistory(func(h *History) {
			h.MetricsDown = []Window{{"prometheus", at(11), at(30)}}
		}), func(f Figures) int { return f.StepsWithoutMetrics }, "Prometheus"},
		{"a bad revision promoted", baseHistory(func(h *History) {
			h.Releases[0].Good = false
		}), func(f Figures) int { return f.BadPromotions }, "bad revision"},
		{"a promotion before the maximum weight", baseHistory(func(h *History) {
			ws := h.Weights["a"]
			h.Weights["a"] = append(ws[:6:6], Weight{ws[10].At.Add(2 * time.Second), 0})
		}), func(f Figures) int { return f.UnanalysedPromotions }, "without its weight"},
		{"an abort ignored", baseHistory(func(h *History) {
			h.Releases[0].AbortAcked = at(15)
		}), func(f Figures) int { return f.AbortsIgnored }, "abort"},
		{"a push acknowledged and lost", baseHistory(func(h *History) {
			h.Releases = append(h.Releases, Release{Canary: "a", Tag: "3.0.0", Good: true, Acked: at(50)})
		}), func(f Figures) int { return f.LostEvents }, "never ran it"},
		{"a push set by a delivery that failed, acknowledged more than a minute later", baseHistory(func(h *History) {
			h.Releases[0].Sent, h.Releases[0].Acked = at(9.5), at(90)
		}), nil, ""},
		{"a push acknowledged more than a minute after it was set, with no send time", baseHistory(func(h *History) {
			h.Releases[0].Acked = at(90)
		}), func(f Figures) int { return f.LostEvents }, "never ran it"},
		{"a push answered duplicate and lost is the known defect", baseHistory(func(h *History) {
			h.Releases = append(h.Releases, Release{Canary: "a", Tag: "3.0.0", Good: true, Acked: at(50), AckOutcome: "duplicate"})
		}), nil, ""},
		{"a push answered duplicate and lost, strict", baseHistory(func(h *History) {
			h.Releases = append(h.Releases, Release{Canary: "a", Tag: "3.0.0", Good: true, Acked: at(50), AckOutcome: "duplicate"})
			h.Strict = true
		}), func(f Figures) int { return f.LostEvents }, "never ran it"},
		{"a release stuck", baseHistory(func(h *History) {
			h.Phases["a"] = h.Phases["a"][:2]
		}), func(f Figures) int { return f.Stuck }, "not Succeeded or Failed"},
		{"a release late past its bound", baseHistory(func(h *History) {
			ps := h.Phases["a"]
			ps[len(ps)-1].At = ps[len(ps)-1].At.Add(time.Minute)
		}), func(f Figures) int { return f.Stuck }, "not Succeeded or Failed"},
		{"a double step right after a state loss is the known defect", baseHistory(func(h *History) {
			ws := h.Weights["a"]
			ws[3].At = ws[2].At.Add(200 * time.Millisecond)
			h.StateLost = []time.Time{ws[3].At.Add(-100 * time.Millisecond)}
		}), nil, ""},
		{"late, but within the outage it met", baseHistory(func(h *History) {
			ps := h.Phases["a"]
			ps[len(ps)-1].At = ps[len(ps)-1].At.Add(20 * time.Second)
			h.Faults = []Window{{"redis", at(12), at(40)}}
		}), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Check(tt.h)
			if tt.want == nil {
				if !f.OK() {
					t.Errorf("got violations %q, want none", f.Violations)
				}
				if f.Steps != 10 {
					t.Errorf("got %d steps, want 10", f.Steps)
				}
				return
			}
			if got := tt.want(f); got == 0 {
				t.Errorf("got figure 0, want > 0; figures %+v", f)
			}
			if !strings.Contains(strings.Join(f.Violations, "\n"), tt.message) {
				t.Errorf("violations %q do not say %q", f.Violations, tt.message)
			}
		})
	}
}

func TestTagOf(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"127.0.0.1:5000/lab/a:1.2.0@sha256:abc", "1.2.0"},
		{"127.0.0.1:5000/lab/a:1.2.0", "1.2.0"},
		{"lab/a", ""},
	} {
		if got := TagOf(tt.in); got != tt.want {
			t.Errorf("TagOf(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOverlapMergesWindows(t *testing.T) {
	ws := []Window{{"a", at(0), at(10)}, {"b", at(5), at(15)}, {"c", at(20), at(30)}}
	if got, want := overlap(ws, at(2), at(25)), 18*time.Second; got != want {
		t.Errorf("overlap = %v, want %v", got, want)
	}
}
