package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// slowReleases holds each use case until released, and reports whether its context was
// cancelled meanwhile.
type slowReleases struct {
	fakeReleases
	started   chan struct{}
	release   chan struct{}
	cancelled chan bool
}

func (s *slowReleases) wait(ctx context.Context) {
	s.started <- struct{}{}
	select {
	case <-s.release:
		s.cancelled <- ctx.Err() != nil
	case <-ctx.Done():
		s.cancelled <- true
	}
}

func (s *slowReleases) Tick(ctx context.Context, until time.Time) (functions.TickReport, error) {
	s.wait(ctx)
	return functions.TickReport{}, nil
}
func (s *slowReleases) HandlePushes(ctx context.Context, p []functions.ImagePush) (functions.PushReport, error) {
	s.wait(ctx)
	return functions.PushReport{}, nil
}
func (s *slowReleases) RequestPromotion(ctx context.Context, k functions.Key) (functions.StepReport, error) {
	s.wait(ctx)
	return functions.StepReport{}, nil
}
func (s *slowReleases) ObjectChanged(ctx context.Context, o functions.ObjectRef, _ string) ([]functions.StepReport, error) {
	s.wait(ctx)
	return nil, nil
}

// Work a request started goes on when the sender hangs up: a push that set an image, or a
// tick in its window, must not stop half-way.
func TestWorkSurvivesTheSenderHangingUp(t *testing.T) {
	manifest := payload(t, "testdata/distribution/registry-2.8.2-push-manifest-oci.json")
	tests := []struct {
		name, path, token string
		headers           map[string]string
		body              string
	}{
		{"tick", "/", token, nil, ""},
		{"push", "/webhooks/registry", token, map[string]string{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}, string(manifest)},
		{"promote", "/api/v1/canaries/default/podinfo/promote", apiToken, nil, ""},
		{"deployment change", "/", token, map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Source": "/apiserver",
			"Ce-Type": "dev.knative.apiserver.ref.update", "Content-Type": "application/json"},
			`{"kind":"Deployment","apiVersion":"apps/v1","namespace":"default","name":"podinfo"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel := &slowReleases{started: make(chan struct{}, 1), release: make(chan struct{}), cancelled: make(chan bool, 1)}
			srv := newServer(t, nil, nil)
			srv.Config.Handler = New(rel, Options{WebhookTokens: []string{token}, APITokens: []string{apiToken}, TickWindow: time.Second}, slog.New(slog.DiscardHandler))
			ctx, hangUp := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+tt.token)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			done := make(chan struct{})
			go func() {
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
				close(done)
			}()
			select {
			case <-rel.started:
			case <-time.After(5 * time.Second):
				t.Fatal("the request never reached the use case")
			}
			hangUp()
			<-done
			time.Sleep(50 * time.Millisecond) // the server notices the closed connection
			close(rel.release)
			if <-rel.cancelled {
				t.Error("the work was cancelled when the sender hung up")
			}
		})
	}
}
