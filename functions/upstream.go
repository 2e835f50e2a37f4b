package functions

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrUpstreamDenied: a dependency refused Siskin's own credentials or permissions (the
// cluster's RBAC, a registry's or Prometheus's 401 or 403). The event that needed the call is
// still valid, and succeeds once an operator fixes the permission: it is answered 503 with a
// long Retry-After, so the sender keeps it instead of dropping it, and the canary gets an
// Event that names the call.
var ErrUpstreamDenied = errors.New("denied by a dependency")

// UpstreamStatus is the one mapping from a dependency's HTTP status (the Kubernetes API, a
// registry, Prometheus) to the error vocabulary, for every adapter. It returns nil for a
// success and for the statuses an adapter must interpret itself (other 4xx).
func UpstreamStatus(code int) error {
	switch {
	case code < 400:
		return nil
	case code == http.StatusNotFound, code == http.StatusGone:
		return ErrNotFound
	case code == http.StatusConflict:
		return ErrConflict
	case code == http.StatusBadRequest, code == http.StatusUnprocessableEntity:
		// The request Siskin built was refused (a CRD schema, an admission webhook): it
		// fails the same way until the Canary changes.
		return ErrInvalid
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusProxyAuthRequired:
		return ErrUpstreamDenied
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return ErrUnavailable
	}
	return nil
}

// upstreamDenied names the call a dependency refused.
func upstreamDenied(call string, err error) string {
	return fmt.Sprintf("%s was refused by a dependency; fix Siskin's credentials or RBAC: %v", call, err)
}
