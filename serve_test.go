package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The configuration errors `siskin serve` reports before it connects to anything.
func TestServeRefusesABadConfiguration(t *testing.T) {
	base := map[string]string{"REDIS_URL": "redis://127.0.0.1:1", "SISKIN_WEBHOOK_TOKEN": "sender", "SISKIN_API_TOKEN": "operator"}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"no Redis", map[string]string{"REDIS_URL": ""}, nil, "--redis-url"},
		{"no senders' token", map[string]string{"SISKIN_WEBHOOK_TOKEN": ""}, nil, "--webhook-token"},
		{"no operators' token", map[string]string{"SISKIN_API_TOKEN": ""}, nil, "--api-token"},
		{"one token for both", map[string]string{"SISKIN_API_TOKEN": "other,sender"}, nil, "must differ"},
		{"a bad duration in the environment", map[string]string{"SISKIN_LEASE_TTL": "30"}, nil, `SISKIN_LEASE_TTL="30": not a duration`},
		{"two bad durations", map[string]string{"SISKIN_STEP_TIMEOUT": "soon", "SISKIN_TICK_WINDOW": "1 minute"}, nil, `SISKIN_TICK_WINDOW="1 minute"`},
		{"a bad flag", nil, []string{"--lease-ttl", "x"}, "invalid value"},
		{"an unknown push scope", map[string]string{"SISKIN_PUSH_SCOPE": "everywhere"}, nil, "--push-scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			var stderr bytes.Buffer
			err := run(context.Background(), append([]string{"siskin", "serve"}, tt.args...), func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
