package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// steppingReleases logs a step with the request's context, as the use cases do.
type steppingReleases struct {
	*fakeReleases
	log *slog.Logger
}

func (s steppingReleases) Tick(ctx context.Context, until time.Time) (functions.TickReport, error) {
	s.log.InfoContext(ctx, "step", "canary", "test/podinfo", "namespace", "test")
	return functions.TickReport{}, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func TestStepLogsCarryTheEvent(t *testing.T) {
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name    string
		headers map[string]string
		want    map[string]any
	}{
		{
			name: "with trace context",
			headers: map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "tick-42", "Ce-Type": TypePing,
				"Ce-Source": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "Ce-Traceparent": traceparent},
			want: map[string]any{"msg": "step", "canary": "test/podinfo", "namespace": "test", "eventID": "tick-42",
				"eventType": TypePing, "eventSource": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "traceparent": traceparent},
		},
		{
			name: "without",
			headers: map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "tick-43", "Ce-Type": TypePing,
				"Ce-Source": "/s"},
			want: map[string]any{"msg": "step", "canary": "test/podinfo", "namespace": "test", "eventID": "tick-43",
				"eventType": TypePing, "eventSource": "/s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			log := slog.New(NewContextLogHandler(slog.NewJSONHandler(&buf, nil)))
			rel := steppingReleases{&fakeReleases{}, log}
			srv := httptest.NewServer(New(rel, Options{WebhookTokens: []string{token}, TickWindow: time.Millisecond}, log))
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(`{"tick":"advance"}`))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
			buf.mu.Lock()
			lines := strings.Split(strings.TrimSpace(buf.b.String()), "\n")
			buf.mu.Unlock()
			var step map[string]any
			for _, l := range lines {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatalf("not a JSON log line: %q", l)
				}
				if rec["msg"] == "step" {
					step = rec
				}
			}
			if step == nil {
				t.Fatalf("no step record in:\n%s", strings.Join(lines, "\n"))
			}
			delete(step, "time")
			delete(step, "level")
			if diff := cmp.Diff(tt.want, step); diff != "" {
				t.Errorf("step record (-want +got):\n%s", diff)
			}
		})
	}
}

func TestContextLogHandlerKeepsGroupsAndAttrs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewContextLogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "x")
	ctx := WithLogAttrs(WithLogAttrs(context.Background(), slog.String("eventID", "1")), slog.String("traceparent", "t"))
	log.InfoContext(ctx, "a")
	log.Info("b") // no context: nothing added
	var a, b map[string]any
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &a) != nil || json.Unmarshal([]byte(lines[1]), &b) != nil {
		t.Fatalf("got %q", buf.String())
	}
	if a["component"] != "x" || a["eventID"] != "1" || a["traceparent"] != "t" {
		t.Errorf("with context: got %v, want component, eventID and traceparent", a)
	}
	if _, ok := b["eventID"]; ok || b["component"] != "x" {
		t.Errorf("without context: got %v, want component only", b)
	}
}
