package functions

import (
	"errors"
	"strings"
	"testing"
)

func TestParseImageRef(t *testing.T) {
	tests := []struct {
		in   string
		want ImageRef
	}{
		{"nginx", ImageRef{Registry: "index.docker.io", Repository: "library/nginx", Tag: "latest"}},
		{"docker.io/library/nginx:1.27", ImageRef{Registry: "index.docker.io", Repository: "library/nginx", Tag: "1.27"}},
		{"registry-1.docker.io/acme/app:2", ImageRef{Registry: "registry-1.docker.io", Repository: "acme/app", Tag: "2"}},
		{"ghcr.io/Acme/App:1.0.0", ImageRef{}},
		{"127.0.0.1:5000/lab/podinfo:1.0.0@sha256:" + strings.Repeat("a", 64),
			ImageRef{Registry: "127.0.0.1:5000", Repository: "lab/podinfo", Tag: "1.0.0", Digest: "sha256:" + strings.Repeat("a", 64)}},
		{"127.0.0.1:5000/lab/podinfo@sha256:" + strings.Repeat("b", 64),
			ImageRef{Registry: "127.0.0.1:5000", Repository: "lab/podinfo", Digest: "sha256:" + strings.Repeat("b", 64)}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseImageRef(tt.in)
			if tt.want == (ImageRef{}) {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("got %+v, %v; want ErrInvalid (repositories are lowercase)", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestReferenceParts(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) bool
		in    string
		want  bool
	}{
		{"repository", ValidRepository, "acme/app", true},
		{"official image", ValidRepository, "nginx", true},
		{"uppercase repository", ValidRepository, "Acme/app", false},
		{"a host is no repository", ValidRepository, "ghcr.io/acme/app", false},
		{"a tag is no repository", ValidRepository, "acme/app:1", false},
		{"repository too long", ValidRepository, strings.Repeat("a", 256), false},
		{"tag", ValidTag, "v1.2.3-rc.1", true},
		{"tag with a slash", ValidTag, "v1/2", false},
		{"tag too long", ValidTag, strings.Repeat("a", 129), false},
		{"sha256", ValidDigest, "sha256:" + strings.Repeat("a", 64), true},
		{"sha512", ValidDigest, "sha512:" + strings.Repeat("b", 128), true},
		{"short digest", ValidDigest, "sha256:abc", false},
		{"uppercase hex", ValidDigest, "sha256:" + strings.Repeat("A", 64), false},
		{"unknown algorithm", ValidDigest, "md5:" + strings.Repeat("a", 32), false},
		{"host with port", ValidHost, "127.0.0.1:5000", true},
		{"ipv6 host", ValidHost, "[::1]:5000", true},
		{"host with a path", ValidHost, "ghcr.io/acme", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.check(tt.in); got != tt.want {
				t.Errorf("%q: got %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestImageHost(t *testing.T) {
	tests := []struct {
		in     string
		want   string
		wantOK bool
	}{
		{"quay.io/acme/app", "quay.io", true},
		{"Registry.Example.com:5000/app:1", "registry.example.com:5000", true},
		{"acme/app", "", false},
		{"not a reference!", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ImageHost(tt.in)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
