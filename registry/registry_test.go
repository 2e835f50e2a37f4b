package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/siskin-dev/siskin/functions"
)

// The lab's end-to-end tests use the real docker-registry; this uses go-containerregistry's
// in-process registry to cover the status mapping.
func TestResolve(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(host+"/lab/podinfo:1.0.0", name.Insecure)
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	c := New(Options{Insecure: []string{host}})
	ctx := context.Background()
	ref, _ := functions.ParseImageRef(host + "/lab/podinfo:1.0.0")
	if got, err := c.Resolve(ctx, ref); err != nil || got != want.String() {
		t.Errorf("by tag: got %q, %v; want %s", got, err, want)
	}
	ref.Digest = want.String()
	if got, err := c.Resolve(ctx, ref); err != nil || got != want.String() {
		t.Errorf("by digest: got %q, %v", got, err)
	}
	ref.Digest = "sha256:" + strings.Repeat("0", 64)
	if _, err := c.Resolve(ctx, ref); !errors.Is(err, functions.ErrNotFound) {
		t.Errorf("forged digest: got %v, want ErrNotFound", err)
	}
	ref = functions.ImageRef{Registry: host, Repository: "lab/absent", Tag: "1"}
	if _, err := c.Resolve(ctx, ref); !errors.Is(err, functions.ErrNotFound) {
		t.Errorf("absent repo: got %v, want ErrNotFound", err)
	}
}

// A registry's refusal of Siskin's credentials is a denial (retried by the sender once fixed),
// not a rejection of the push; an unreachable or failing registry is transient.
func TestResolveClassifiesTheRegistrysAnswer(t *testing.T) {
	tests := []struct {
		name   string
		status int
		want   error
	}{
		{"credentials refused", http.StatusUnauthorized, functions.ErrUpstreamDenied},
		{"not allowed", http.StatusForbidden, functions.ErrUpstreamDenied},
		{"throttled", http.StatusTooManyRequests, functions.ErrUnavailable},
		{"failing", http.StatusBadGateway, functions.ErrUnavailable},
		{"gone", http.StatusNotFound, functions.ErrNotFound},
		{"other refusal", http.StatusMethodNotAllowed, functions.ErrRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					w.WriteHeader(http.StatusOK)
					return
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			c := New(Options{Insecure: []string{host}})
			_, err := c.Resolve(context.Background(), functions.ImageRef{Registry: host, Repository: "lab/podinfo", Tag: "1.0.0"})
			if !errors.Is(err, tt.want) {
				t.Errorf("HTTP %d: got %v, want %v", tt.status, err, tt.want)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		c := New(Options{Insecure: []string{"127.0.0.1:1"}})
		if _, err := c.Resolve(context.Background(), functions.ImageRef{Registry: "127.0.0.1:1", Repository: "x", Tag: "1"}); !errors.Is(err, functions.ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
	})
}
