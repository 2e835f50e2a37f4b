package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/siskin-dev/siskin/functions"
)

// statusOf is the one mapping from the error vocabulary to HTTP. Every sender Siskin serves
// (Knative Eventing, Alertmanager, registries) retries 5xx and drops 4xx, so anything worth
// retrying is a 503 with Retry-After, and anything that can never succeed is a 4xx.
func statusOf(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, functions.ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, functions.ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, functions.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, functions.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, functions.ErrRejected):
		return http.StatusUnprocessableEntity
	case errors.Is(err, functions.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, functions.ErrConflict), errors.Is(err, functions.ErrBusy), errors.Is(err, functions.ErrLeaseLost),
		errors.Is(err, functions.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
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
