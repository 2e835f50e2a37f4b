package analysis

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// The step sender speaks CloudEvents binary mode with the sender's token, and maps the
// Service's answers to retried and final errors.
func TestStepSender(t *testing.T) {
	type sent struct {
		Type, ID, Subject, Auth, Body string
	}
	due := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	k := functions.Key{Namespace: "shop", Name: "cart"}
	tests := []struct {
		name    string
		status  int
		send    func(ctx context.Context, s *StepSender) error
		want    sent
		wantErr error
	}{
		{
			name: "a step", status: http.StatusOK,
			send: func(ctx context.Context, s *StepSender) error { return s.DispatchStep(ctx, k, due) },
			want: sent{Type: functions.StepEventType, ID: "shop/cart@1796284800000", Subject: "shop/cart", Auth: "Bearer tok",
				Body: `{"dueAt":"2026-12-03T08:00:00Z","name":"cart","namespace":"shop"}`},
		},
		{
			name: "a wake-up", status: http.StatusOK,
			send: func(ctx context.Context, s *StepSender) error { return s.WakeDispatcher(ctx, "wake:*@1") },
			want: sent{Type: functions.WakeEventType, ID: "wake:*@1", Auth: "Bearer tok", Body: `{}`},
		},
		{
			name: "a busy Service is retried", status: http.StatusServiceUnavailable,
			send: func(ctx context.Context, s *StepSender) error { return s.DispatchStep(ctx, k, due) },
			want: sent{Type: functions.StepEventType, ID: "shop/cart@1796284800000", Subject: "shop/cart", Auth: "Bearer tok",
				Body: `{"dueAt":"2026-12-03T08:00:00Z","name":"cart","namespace":"shop"}`},
			wantErr: functions.ErrUnavailable,
		},
		{
			name: "a refusal is final", status: http.StatusUnauthorized,
			send:    func(ctx context.Context, s *StepSender) error { return s.WakeDispatcher(ctx, "wake:*@2") },
			want:    sent{Type: functions.WakeEventType, ID: "wake:*@2", Auth: "Bearer tok", Body: `{}`},
			wantErr: functions.ErrRejected,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got sent
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got = sent{Type: r.Header.Get("Ce-Type"), ID: r.Header.Get("Ce-Id"), Subject: r.Header.Get("Ce-Subject"),
					Auth: r.Header.Get("Authorization"), Body: string(b)}
				if r.Header.Get("Ce-Specversion") != "1.0" || r.Header.Get("Ce-Source") == "" {
					t.Errorf("not a binary-mode CloudEvent: %v", r.Header)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			err := tt.send(context.Background(), NewStepSender(srv.URL, "tok", 5*time.Second))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("error: got %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}
