package functions

import "time"

// Observer is told what happens, for metrics. The default does nothing.
type Observer interface {
	// Stepped: a step of c moved its state from before to after.
	Stepped(c Canary, before, after State, metrics []MetricResult, took, late time.Duration)
	// Aborted: an alert or a manual abort failed a release; took is from the call's start.
	Aborted(c Canary, took time.Duration)
	// Counted: the number of canaries per namespace, seen by a tick.
	Counted(perNamespace map[string]int)
}

type nopObserver struct{}

func (nopObserver) Stepped(Canary, State, State, []MetricResult, time.Duration, time.Duration) {}
func (nopObserver) Aborted(Canary, time.Duration)                                              {}
func (nopObserver) Counted(map[string]int)                                                     {}
