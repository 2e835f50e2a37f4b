package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/siskin-dev/siskin/functions"
)

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"transient", fmt.Errorf("get: %w", functions.ErrUnavailable), 503},
		{"lost the lease", functions.ErrLeaseLost, 503},
		{"Siskin's RBAC denied", fmt.Errorf("update VirtualService: %w", functions.ErrUpstreamDenied), 503},
		{"a deadline", context.DeadlineExceeded, 503},
		{"review budget spent", functions.ErrRateLimited, 429},
		{"bad input", functions.ErrInvalid, 400},
		{"the caller's credentials", functions.ErrUnauthorized, 401},
		{"the caller may not", functions.ErrForbidden, 403},
		{"abort after promotion", functions.ErrAlreadyPromoted, 409},
		{"refused", functions.ErrRejected, 422},
		{"unknown", errors.New("boom"), 500},
		{"too big", &http.MaxBytesError{Limit: 1}, 413},
		// One canary's bad spec beside another's transient failure: the retry must happen,
		// or the second canary's work is lost.
		{"invalid joined with transient", errors.Join(fmt.Errorf("a: %w", functions.ErrInvalid), fmt.Errorf("b: %w", functions.ErrUnavailable)), 503},
		{"transient joined with invalid", errors.Join(fmt.Errorf("b: %w", functions.ErrUnavailable), fmt.Errorf("a: %w", functions.ErrInvalid)), 503},
		{"rejected joined with denied", errors.Join(functions.ErrRejected, functions.ErrUpstreamDenied), 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(tt.err); got != tt.want {
				t.Errorf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}
