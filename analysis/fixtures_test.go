package analysis

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/siskin-dev/siskin/functions"
)

// fakeSource is an in-memory TemplateSource keyed "namespace/name".
type fakeSource struct {
	mu        sync.Mutex
	templates map[string]MetricTemplate
	secrets   map[string]map[string][]byte
	providers map[string]AlertProvider
	reads     []string // "kind namespace/name", in order
}

func (f *fakeSource) record(kind, ns, name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, kind+" "+ns+"/"+name)
	return ns + "/" + name
}

func (f *fakeSource) MetricTemplate(_ context.Context, ns, name string) (MetricTemplate, error) {
	k := f.record("template", ns, name)
	if t, ok := f.templates[k]; ok {
		return t, nil
	}
	return MetricTemplate{}, fmt.Errorf("get MetricTemplate %s: %w", k, functions.ErrNotFound)
}

func (f *fakeSource) Secret(_ context.Context, ns, name string) (map[string][]byte, error) {
	k := f.record("secret", ns, name)
	if s, ok := f.secrets[k]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("get Secret %s: %w", k, functions.ErrNotFound)
}

func (f *fakeSource) AlertProvider(_ context.Context, ns, name string) (AlertProvider, error) {
	k := f.record("provider", ns, name)
	if p, ok := f.providers[k]; ok {
		return p, nil
	}
	return AlertProvider{}, fmt.Errorf("get AlertProvider %s: %w", k, functions.ErrNotFound)
}

func (f *fakeSource) Reads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reads...)
}

func ptr[T any](v T) *T { return &v }

// seedCanary is the engine issue's seed Canary.
func seedCanary() functions.Canary {
	return functions.Canary{
		Key: functions.Key{Namespace: "default", Name: "podinfo"},
		Spec: functions.Spec{
			TargetRef: functions.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service:   functions.ServiceSpec{Port: 9898},
			Analysis: &functions.Analysis{
				Interval:   "1m",
				Threshold:  5,
				MaxWeight:  50,
				StepWeight: 5,
				Metrics: []functions.Metric{
					{Name: "request-success-rate", Interval: "1m", ThresholdRange: &functions.ThresholdRange{Min: ptr(99.0)}},
					{Name: "request-duration", Interval: "30s", ThresholdRange: &functions.ThresholdRange{Max: ptr(500.0)}},
				},
			},
		},
	}
}

// logBuffer is a concurrency-safe log sink for asserting what was logged.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
