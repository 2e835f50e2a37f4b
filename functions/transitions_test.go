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
		if tr.From == tr.To && tr.From != AnyPhase {
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
		{AnyPhase, PhaseTerminating},       // deletion with revertOnDeletion
		{PhaseTerminating, PhaseTerminated},
		{AnyPhase, AnyPhase}, // suspended, invalid spec
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

// The decisions outside a release step are on the diagram too, with their causes.
func TestTransitionsCoverGatesSuspendInvalidAndDeletion(t *testing.T) {
	causes := map[[2]Phase][]string{}
	for _, tr := range Transitions() {
		causes[[2]Phase{tr.From, tr.To}] = tr.Causes
	}
	for _, want := range []struct {
		from, to Phase
		cause    string
	}{
		{PhaseProgressing, PhasePromoting, "manual Promote"},
		{PhaseWaiting, PhaseProgressing, "manual Resume"},
		{PhaseFailed, PhaseProgressing, "manual Resume"},
		{AnyPhase, AnyPhase, "spec.suspend: no step, the phase is kept"},
		{AnyPhase, AnyPhase, "invalid spec: reported on the status, the phase is kept"},
		{AnyPhase, PhaseTerminating, "Canary deleted with revertOnDeletion: the target gets its replicas back"},
	} {
		if !slices.Contains(causes[[2]Phase{want.from, want.to}], want.cause) {
			t.Errorf("%s -> %s: got causes %q, want %q among them", want.from, want.to, causes[[2]Phase{want.from, want.to}], want.cause)
		}
	}
}
