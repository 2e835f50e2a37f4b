// Package registry talks to container registries with go-containerregistry: it checks, with a
// HEAD of the manifest (references are parsed by functions.ParseImageRef), that a pushed digest really exists
// before a notification is allowed to change a Deployment.
//
// It is a top-level adapter of its own because none of the design's other folders is about
// registries: pushes come in through handlers, decisions are in functions, and this is the
// one outbound call to a registry.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/siskin-dev/siskin/functions"
)

// Client resolves references against registries.
type Client struct {
	insecure  map[string]bool
	timeout   time.Duration
	keychain  authn.Keychain
	transport http.RoundTripper
}

// Options configure a Client.
type Options struct {
	// Insecure lists registries reached over plain HTTP (loopback registries always are).
	Insecure []string
	// Timeout bounds each registry call (5 s by default).
	Timeout time.Duration
	// Keychain finds credentials (the default keychain, ~/.docker/config.json, when nil).
	Keychain authn.Keychain
	// Transport carries the calls (remote.DefaultTransport when nil); Siskin's applies the
	// egress policy.
	Transport http.RoundTripper
}

func New(opts Options) *Client {
	c := &Client{insecure: map[string]bool{}, timeout: opts.Timeout, keychain: opts.Keychain, transport: opts.Transport}
	if c.transport == nil {
		c.transport = remote.DefaultTransport
	}
	for _, r := range opts.Insecure {
		c.insecure[strings.ToLower(r)] = true
	}
	if c.timeout <= 0 {
		c.timeout = 5 * time.Second
	}
	if c.keychain == nil {
		c.keychain = authn.DefaultKeychain
	}
	return c
}

func (c *Client) nameOptions(ref string) []name.Option {
	host := strings.ToLower(strings.SplitN(ref, "/", 2)[0])
	if c.insecure[host] {
		return []name.Option{name.Insecure}
	}
	return nil
}

// Resolve HEADs the manifest of ref (by digest if it has one, else by tag) and returns its
// digest. A registry that does not have it gives ErrNotFound.
func (c *Client) Resolve(ctx context.Context, ref functions.ImageRef) (string, error) {
	s := ref.Repo()
	if ref.Digest != "" {
		s += "@" + ref.Digest
	} else {
		s += ":" + ref.Tag
	}
	r, err := name.ParseReference(s, c.nameOptions(s)...)
	if err != nil {
		return "", fmt.Errorf("%w: image reference %q: %v", functions.ErrInvalid, s, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(c.keychain), remote.WithTransport(c.transport))
	if errors.Is(err, functions.ErrRejected) {
		return "", fmt.Errorf("manifest %s: %w", s, err) // the egress policy
	}
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && (terr.StatusCode == http.StatusNotFound || isManifestUnknown(terr)) {
			return "", fmt.Errorf("manifest %s: %w", s, functions.ErrNotFound)
		}
		if errors.As(err, &terr) {
			if sentinel := functions.UpstreamStatus(terr.StatusCode); sentinel != nil {
				return "", fmt.Errorf("%w: manifest %s: %v", sentinel, s, err)
			}
			return "", fmt.Errorf("%w: manifest %s: %v", functions.ErrRejected, s, err)
		}
		return "", fmt.Errorf("%w: manifest %s: %v", functions.ErrUnavailable, s, err)
	}
	return desc.Digest.String(), nil
}

func isManifestUnknown(e *transport.Error) bool {
	for _, d := range e.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return false
}
