// Package functions is Siskin's domain: the Canary as Siskin sees it, the release State kept in
// Redis, the pure step machine (Decide) with Flagger's semantics, and the use cases that the
// three event functions call (Tick, Advance, Abort, StartFromPush, and the manual gates).
//
// It imports no SDK. The adapters (state, analysis, istio, deploy) implement the small
// interfaces declared next to the use cases that need them, and convert their wire types to the
// types declared here.
package functions
