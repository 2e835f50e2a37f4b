// Package kubeapi is what every adapter that talks to the Kubernetes API shares (deploy,
// istio): the one mapping of the API's answers to the error vocabulary of functions/errors.go,
// and the bound on a single call. It holds no client and decides nothing else.
package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/siskin-dev/siskin/functions"
)

// Error names the call op ("update VirtualService default/podinfo") and classifies err with
// functions.UpstreamStatus, keeping the original for callers that inspect it:
//
//	already exists, 409            ErrConflict (read again and retry)
//	403, 401                       ErrUpstreamDenied (Siskin's RBAC; retried slowly, named in an Event)
//	400, 422                       ErrInvalid (a schema or an admission webhook refused what the Canary asks)
//	404, 410                       ErrNotFound
//	408, 429, 5xx, no answer       ErrUnavailable (retried)
//
// An error already in the vocabulary (ErrInvalid, ErrNotFound) and a cancelled call pass
// through with the op added.
func Error(op string, err error) error {
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return nil
	case errors.Is(err, functions.ErrInvalid), errors.Is(err, functions.ErrNotFound), errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%s: %w: %w", op, functions.ErrConflict, err)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: %w: Siskin's ServiceAccount may not %s (check its RBAC): %w", op, functions.ErrUpstreamDenied, op, err)
	case errors.As(err, &status):
		if sentinel := functions.UpstreamStatus(int(status.Status().Code)); sentinel != nil {
			return fmt.Errorf("%s: %w: %w", op, sentinel, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	// No API status: the request got no answer (a timeout, a reset, DNS).
	return fmt.Errorf("%s: %w: %w", op, functions.ErrUnavailable, err)
}

// Call runs one API call with its own timeout, so a slow call cannot spend the step's budget.
func Call[T any](ctx context.Context, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return fn(ctx)
}
