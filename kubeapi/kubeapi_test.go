package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/siskin-dev/siskin/functions"
)

// Every adapter classifies the API's answers with this one table: an RBAC denial is a denial
// (not a transient error, not a 500), a schema refusal is invalid, no answer is transient.
func TestError(t *testing.T) {
	gr := schema.GroupResource{Group: "networking.istio.io", Resource: "virtualservices"}
	op := "update VirtualService default/podinfo"
	tests := []struct {
		name     string
		err      error
		want     error
		wantText string
	}{
		{"RBAC denial", apierrors.NewForbidden(gr, "podinfo", errors.New("RBAC: access denied")), functions.ErrUpstreamDenied,
			"may not update VirtualService default/podinfo (check its RBAC)"},
		{"expired credentials", apierrors.NewUnauthorized("token expired"), functions.ErrUpstreamDenied, "check its RBAC"},
		{"schema refusal", apierrors.NewInvalid(schema.GroupKind{Group: gr.Group, Kind: "VirtualService"}, "podinfo", nil), functions.ErrInvalid, op},
		{"bad request", apierrors.NewBadRequest("spec.http: Invalid value"), functions.ErrInvalid, "spec.http"},
		{"conflict", apierrors.NewConflict(gr, "podinfo", errors.New("changed")), functions.ErrConflict, op},
		{"already exists", apierrors.NewAlreadyExists(gr, "podinfo"), functions.ErrConflict, op},
		{"not found", apierrors.NewNotFound(gr, "podinfo"), functions.ErrNotFound, op},
		{"gone", apierrors.NewGone("too old"), functions.ErrNotFound, op},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), functions.ErrUnavailable, op},
		{"server error", apierrors.NewInternalError(errors.New("etcd")), functions.ErrUnavailable, "etcd"},
		{"server timeout", apierrors.NewTimeoutError("slow", 1), functions.ErrUnavailable, op},
		{"no answer", errors.New("connection reset by peer"), functions.ErrUnavailable, "connection reset"},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), functions.ErrUnavailable, op},
		{"cancelled passes through", context.Canceled, context.Canceled, op},
		{"already invalid passes through", fmt.Errorf("%w: bad match", functions.ErrInvalid), functions.ErrInvalid, "bad match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Error(op, tt.err)
			if !errors.Is(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("got %v, want it to keep the original %v", got, tt.err)
			}
			if !strings.Contains(got.Error(), tt.wantText) {
				t.Errorf("got %q, want it to contain %q", got, tt.wantText)
			}
		})
	}
	if got := Error(op, nil); got != nil {
		t.Errorf("nil: got %v, want nil", got)
	}
}

func TestEachCallHasItsOwnTimeout(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	_, err := Call(parent, 20*time.Millisecond, func(ctx context.Context) (struct{}, error) {
		deadline, ok := ctx.Deadline()
		if !ok || deadline.Sub(start) > time.Second {
			t.Errorf("call deadline: got %v (set=%v), want about 20ms from now", deadline.Sub(start), ok)
		}
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call: got %v, want DeadlineExceeded", err)
	}
	if parent.Err() != nil {
		t.Errorf("the caller's context ended with the call: %v", parent.Err())
	}
	if got := Error("get VirtualService default/podinfo", err); !errors.Is(got, functions.ErrUnavailable) {
		t.Errorf("Error(deadline): got %v, want ErrUnavailable", got)
	}
}
