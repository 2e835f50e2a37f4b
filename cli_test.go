package main

import (
	"flag"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args      []string
		wantPos   []string
		wantWatch bool
		wantURL   string
	}{
		{[]string{"test/podinfo", "--watch"}, []string{"test/podinfo"}, true, "http://127.0.0.1:8080"},
		{[]string{"--watch", "test/podinfo"}, []string{"test/podinfo"}, true, "http://127.0.0.1:8080"},
		{[]string{"test/podinfo", "--server", "http://x", "--watch"}, []string{"test/podinfo"}, true, "http://x"},
		{[]string{"a", "b"}, []string{"a", "b"}, false, "http://127.0.0.1:8080"},
		{nil, nil, false, "http://127.0.0.1:8080"},
	}
	for _, tt := range tests {
		fs, server, _ := cliFlags("status", func(string) string { return "" }, io.Discard)
		watch := fs.Bool("watch", false, "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if diff := cmp.Diff(tt.wantPos, pos); diff != "" {
			t.Errorf("%q: positional (-want +got):\n%s", tt.args, diff)
		}
		if *watch != tt.wantWatch || *server != tt.wantURL {
			t.Errorf("%q: got watch=%v server=%s, want %v %s", tt.args, *watch, *server, tt.wantWatch, tt.wantURL)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterspersed(fs, []string{"a", "--nope"}); err == nil {
		t.Error("an unknown flag after an argument: got no error")
	}
}
