package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// DefaultOIDCSenders are the identities Knative Eventing sends with for the objects in
// knative/: every delivery reaches Siskin through the siskin Broker in siskin-system, whose
// Triggers' OIDC service accounts are created in that namespace.
var DefaultOIDCSenders = []string{"system:serviceaccount:siskin-system:oidc-*"}

const (
	// oidcCacheMax bounds how long a positive review is trusted without asking again.
	oidcCacheMax = 5 * time.Minute
	// oidcCacheEntries bounds the cache's memory.
	oidcCacheEntries = 4096
)

// oidcGate accepts a Knative Eventing OIDC token when the apiserver authenticates it for the
// service's audience, the audiences it reports include that audience, and the sender is on the
// allowlist. Positive reviews are cached by the token's hash until the token expires (at most
// oidcCacheMax), so steady traffic costs no review.
type oidcGate struct {
	reviewer TokenReviewer
	audience string
	senders  []string
	now      func() time.Time

	mu    sync.Mutex
	known map[[32]byte]cachedSender
}

type cachedSender struct {
	user    string
	expires time.Time
}

func newOIDCGate(r TokenReviewer, audience string, senders []string) *oidcGate {
	if len(senders) == 0 {
		senders = DefaultOIDCSenders
	}
	return &oidcGate{reviewer: r, audience: audience, senders: senders, now: time.Now, known: map[[32]byte]cachedSender{}}
}

// sender returns the token's user if it may send, or an error: ErrUnauthorized with the
// reason, ErrRateLimited when the review budget is spent, or a transient error.
func (g *oidcGate) sender(ctx context.Context, token string) (string, error) {
	sum := sha256.Sum256([]byte(token))
	now := g.now()
	g.mu.Lock()
	c, ok := g.known[sum]
	g.mu.Unlock()
	if !ok || !now.Before(c.expires) {
		id, authenticated, err := g.reviewer.Review(ctx, token, []string{g.audience})
		switch {
		case err != nil:
			return "", fmt.Errorf("review token: %w", err)
		case !authenticated:
			return "", fmt.Errorf("%w: token rejected by TokenReview", functions.ErrUnauthorized)
		case !slices.Contains(id.Audiences, g.audience):
			return "", fmt.Errorf("%w: token of %s is not for audience %q (TokenReview says %q)", functions.ErrUnauthorized, id.User, g.audience, id.Audiences)
		}
		c = cachedSender{user: id.User, expires: now.Add(cacheFor(token, now))}
		g.remember(sum, c, now)
	}
	if !g.allowed(c.user) {
		return "", fmt.Errorf("%w: %s is not an allowed OIDC sender (--oidc-senders %s)", functions.ErrUnauthorized, c.user, strings.Join(g.senders, ","))
	}
	return c.user, nil
}

func (g *oidcGate) allowed(user string) bool {
	return slices.ContainsFunc(g.senders, func(p string) bool {
		ok, err := path.Match(p, user)
		return err == nil && ok
	})
}

func (g *oidcGate) remember(sum [32]byte, c cachedSender, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.known) >= oidcCacheEntries {
		for k, v := range g.known {
			if !now.Before(v.expires) {
				delete(g.known, k)
			}
		}
		for k := range g.known { // still full: forget any one
			if len(g.known) < oidcCacheEntries {
				break
			}
			delete(g.known, k)
		}
	}
	g.known[sum] = c
}

// cacheFor is how long a reviewed token is trusted: until its exp claim, at most
// oidcCacheMax. The claim is read without checking the signature, which the apiserver has just
// done; a token without a readable exp is trusted for a minute.
func cacheFor(token string, now time.Time) time.Duration {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Minute
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Minute
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Minute
	}
	return min(time.Unix(claims.Exp, 0).Sub(now), oidcCacheMax)
}
