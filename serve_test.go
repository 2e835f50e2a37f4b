package main

import (
	"bytes"
	"context"
	"net"
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

// `siskin dashboard` needs no senders' token, and listens on loopback by default.
func TestDashboardConfiguration(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1", "SISKIN_UI_READONLY": "true"}
	c, err := parseConfig("dashboard", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if !c.dashboard || c.addr != "127.0.0.1:8090" || !c.uiReadOnly {
		t.Errorf("got dashboard=%v addr=%q readOnly=%v, want true, 127.0.0.1:8090, true", c.dashboard, c.addr, c.uiReadOnly)
	}
	if _, err := parseConfig("serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{}); err == nil {
		t.Error("serve without tokens: got no error")
	}
	for addr, want := range map[string]string{"127.0.0.1:8090": "localhost:8090", "[::]:9000": "localhost:9000", "10.0.0.7:80": "10.0.0.7:80"} {
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := dashboardHost(tcp); got != want {
			t.Errorf("dashboardHost(%s) = %s, want %s", addr, got, want)
		}
	}
}
