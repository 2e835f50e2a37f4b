package handlers

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/siskin-dev/siskin/functions"
)

// A body within the size limit must not decode into many times its size: a 1 MiB array of
// empty objects, or deep nesting, is refused before decoding.
func TestHostileJSONIsRefusedBeforeDecoding(t *testing.T) {
	manyObjects := []byte(`{"version":"4","status":"firing","alerts":[` + strings.Repeat(`{},`, 340_000) + `{}]}`)
	deep := []byte(strings.Repeat("[", 100) + strings.Repeat("]", 100))
	inStrings := []byte(`{"version":"4","status":"firing","alerts":[],"groupKey":"` + strings.Repeat(`{[`, 100_000) + `"}`)
	tests := []struct {
		name    string
		body    []byte
		wantErr string
	}{
		{"hundreds of thousands of objects", manyObjects, "more than 50000 JSON objects and arrays"},
		{"nesting", deep, "nested deeper than 64"},
		{"braces inside a string are not containers", inStrings, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := DecodeAlertmanager(tt.body)
			runtime.ReadMemStats(&after)
			if tt.wantErr == "" {
				if err != nil && strings.Contains(err.Error(), "JSON objects") {
					t.Fatalf("got %v, want strings skipped", err)
				}
				return
			}
			if !errors.Is(err, functions.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tt.wantErr)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 4*uint64(len(tt.body))+1<<20 {
				t.Errorf("refusing a %d-byte body allocated %d bytes", len(tt.body), grew)
			}
		})
	}
}
