package functions

import "errors"

// The error vocabulary. Adapters wrap these with %w; handlers map them to HTTP status in one
// place.
var (
	// ErrInvalid: the input can never succeed (4xx, not retried).
	ErrInvalid = errors.New("invalid")
	// ErrUnauthorized: missing or bad credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the credentials are valid but do not allow this, or the cluster's RBAC
	// denies Siskin a call (not retried: it fails until someone changes the permissions).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: someone else changed the state first; retry against fresh state.
	ErrConflict = errors.New("conflict")
	// ErrBusy: another instance holds the canary's lease; retry later.
	ErrBusy = errors.New("busy")
	// ErrLeaseLost: the lease a step held expired or was taken (by an abort, or by another
	// instance after the holder stalled); the step gave up before writing. Retry later.
	ErrLeaseLost = errors.New("lease lost")
	// ErrUnavailable: a dependency failed transiently; retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrRevisionChanged: the target changed after the step observed it, so the write that
	// depended on the observation (a promotion) was not made. The step observes again.
	ErrRevisionChanged = errors.New("revision changed")
	// ErrAlreadyPromoted: the primary already runs the revision an abort would stop; an abort
	// cannot take it back. Acknowledged with a reason (409), never retried.
	ErrAlreadyPromoted = errors.New("already promoted")
	// ErrRateLimited: a budget is spent (token reviews); retry after a moment (429).
	ErrRateLimited = errors.New("rate limited")
	// ErrRejected: the input is well-formed but refused (for example a digest not in the
	// registry). Acknowledged with a reason, never retried.
	ErrRejected = errors.New("rejected")
)
