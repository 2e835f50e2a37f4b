package functions

import "errors"

// The error vocabulary. Adapters wrap these with %w; handlers map them to HTTP status in one
// place.
var (
	// ErrInvalid: the input can never succeed (4xx, not retried).
	ErrInvalid = errors.New("invalid")
	// ErrUnauthorized: missing or bad credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: someone else changed the state first; retry against fresh state.
	ErrConflict = errors.New("conflict")
	// ErrBusy: another instance holds the canary's lease; retry later.
	ErrBusy = errors.New("busy")
	// ErrUnavailable: a dependency failed transiently; retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrRejected: the input is well-formed but refused (for example a digest not in the
	// registry). Acknowledged with a reason, never retried.
	ErrRejected = errors.New("rejected")
)
