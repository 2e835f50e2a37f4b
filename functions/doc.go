// Package functions is Siskin's domain: the Canary as Siskin sees it, the release State kept in
// Redis, the pure step machine (Decide) with Flagger's semantics, and the use cases that the
// three event functions call (Tick, Advance, Abort, StartFromPush, and the manual gates).
//
// It imports no SDK. The adapters (state, analysis, istio, deploy, registry) implement the
// small interfaces this package declares, and convert their wire types to its types.
//
// Ports live next to their use case: the step's (Store, Workloads, Router and its optional
// extensions, Metrics, Hooks, Alerter) in ports.go, the pushes' (Registry, Images) in
// push.go, the deletion flow's (TargetFinalizer) in finalize.go, the observers' in
// observer.go, the history's in history.go. The pure decisions are Decide (machine.go), AbortRelease, and those of
// decisions.go; docs/architecture.md follows one step through them.
package functions
