package functions

import (
	"slices"
	"testing"
)

func TestTransitionsCoverTheRelease(t *testing.T) {
	got := map[[2]Phase]bool{}
	for _, tr := range Transitions() {
		got[[2]Phase{tr.From, tr.To}] = true
		if len(tr.Causes) == 0 {
			t.Errorf("%s -> %s has no cause", tr.From, tr.To)
		}
		if tr.From == tr.To {
			t.Errorf("self edge %s", tr.From)
		}
	}
	for _, want := range [][2]Phase{
		{PhaseInitializing, PhaseInitialized},
		{PhaseInitialized, PhaseProgressing},
		{PhaseInitialized, PhaseWaiting},
		{PhaseWaiting, PhaseProgressing},
		{PhaseProgressing, PhasePromoting},
		{PhaseProgressing, PhaseWaitingPromotion},
		{PhaseWaitingPromotion, PhasePromoting},
		{PhasePromoting, PhaseFinalising},
		{PhaseFinalising, PhaseSucceeded},
		{PhaseProgressing, PhaseFailed},
		{PhasePromoting, PhaseFailed},
		{PhaseSucceeded, PhaseProgressing},
		{PhaseFailed, PhaseProgressing},
		{PhaseProgressing, PhaseSucceeded}, // skipAnalysis
	} {
		if !got[want] {
			t.Errorf("missing transition %s -> %s", want[0], want[1])
		}
	}
	for _, never := range [][2]Phase{
		{PhaseInitialized, PhasePromoting},
		{PhaseFailed, PhaseSucceeded},
	} {
		if got[never] {
			t.Errorf("unexpected transition %s -> %s", never[0], never[1])
		}
	}
}

func TestTransitionCausesAreReadable(t *testing.T) {
	for _, tr := range Transitions() {
		for _, c := range tr.Causes {
			if c == "" || slices.Contains([]string{"app", "ns"}, c) {
				t.Errorf("%s -> %s: unreadable cause %q", tr.From, tr.To, c)
			}
		}
	}
}
