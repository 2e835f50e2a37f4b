package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// statusOf is the one mapping from the error vocabulary to HTTP. Every sender Siskin serves
// (Knative Eventing, Alertmanager, registries) retries 5xx and 429 and drops other 4xx:
//
//	retried (503, Retry-After)   ErrUnavailable, ErrConflict, ErrBusy, ErrLeaseLost, a deadline;
//	                             ErrUpstreamDenied (Siskin's own RBAC or credentials refused:
//	                             the event stays valid, and passes once they are fixed)
//	retried (429, Retry-After)   ErrRateLimited
//	dropped (4xx)                ErrInvalid 400, ErrUnauthorized 401, ErrForbidden 403,
//	                             ErrNotFound 404, ErrAlreadyPromoted 409, a body over the
//	                             limit 413, ErrRejected 422
//
// An error that joins several (one canary's failure among others) is retried if any part is:
// dropping it would lose the part that a retry would have done.
func statusOf(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, functions.ErrUnavailable), errors.Is(err, functions.ErrConflict),
		errors.Is(err, functions.ErrBusy), errors.Is(err, functions.ErrLeaseLost),
		errors.Is(err, functions.ErrUpstreamDenied), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, functions.ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, functions.ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, functions.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, functions.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, functions.ErrAlreadyPromoted):
		return http.StatusConflict
	case errors.Is(err, functions.ErrRejected):
		return http.StatusUnprocessableEntity
	case errors.Is(err, functions.ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// retryAfter is how long a sender should wait: a denial needs a human, the rest a moment.
func retryAfter(err error) time.Duration {
	if errors.Is(err, functions.ErrUpstreamDenied) {
		return 30 * time.Second
	}
	return time.Second
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter(err).Seconds())))
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="siskin"`)
	}
	writeJSON(w, code, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
