package handlers

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// reviewer plays the TokenReview API: tokens are "user|audience" (or "bad"), and a budget of
// reviews, as deploy.TokenReviewer has.
type reviewer struct {
	calls  atomic.Int64
	budget int64
}

func (r *reviewer) Review(_ context.Context, token string, aud []string) (functions.TokenIdentity, bool, error) {
	if n := r.calls.Add(1); r.budget > 0 && n > r.budget {
		return functions.TokenIdentity{}, false, fmt.Errorf("%w: review budget spent", functions.ErrRateLimited)
	}
	user, audience, ok := strings.Cut(token, "|")
	if !ok {
		return functions.TokenIdentity{}, false, nil
	}
	// The apiserver authenticates a token for another audience when asked for a list that
	// includes it; status.audiences says which it matched. Here it only says which it has.
	return functions.TokenIdentity{User: user, Audiences: []string{audience}}, true, nil
}

func ceRequest(t *testing.T, url, bearer string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/", nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestOIDCSendersOnTheCloudEventRoute(t *testing.T) {
	const broker = "system:serviceaccount:siskin-system:oidc-trigger-siskin-ticks"
	tests := []struct {
		name    string
		senders []string
		token   string
		want    int
	}{
		{"a Trigger of Siskin's Broker, by default", nil, broker + "|siskin", http.StatusOK},
		{"any service account with the right audience is not enough", nil, "system:serviceaccount:tenant:app|siskin", http.StatusUnauthorized},
		{"a sender on a configured list", []string{"system:serviceaccount:tenant:app"}, "system:serviceaccount:tenant:app|siskin", http.StatusOK},
		{"the defaults are replaced by a configured list", []string{"system:serviceaccount:tenant:app"}, broker + "|siskin", http.StatusUnauthorized},
		{"a pattern", []string{"system:serviceaccount:knative-*:*"}, "system:serviceaccount:knative-eventing:mt-broker-filter|siskin", http.StatusOK},
		{"another audience", nil, broker + "|someone-else", http.StatusUnauthorized},
		{"a token TokenReview rejects", nil, "bad", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, &fakeReleases{}, func(o *Options) {
				o.OIDC, o.OIDCAudience, o.OIDCSenders = &reviewer{}, "siskin", tt.senders
			})
			if got := ceRequest(t, srv.URL, tt.token).StatusCode; got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// A sender's token is reviewed once, then trusted until it expires (at most a few minutes);
// past the review budget the route answers 429 with Retry-After, and cached senders still
// pass.
func TestOIDCReviewsAreCachedAndBudgeted(t *testing.T) {
	const sender = "system:serviceaccount:siskin-system:oidc-trigger-siskin-ticks"
	rev := &reviewer{budget: 3}
	srv := newServer(t, &fakeReleases{}, func(o *Options) { o.OIDC, o.OIDCAudience = rev, "siskin" })
	good := sender + "|siskin"
	for i := range 20 {
		if got := ceRequest(t, srv.URL, good).StatusCode; got != http.StatusOK {
			t.Fatalf("delivery %d of a known sender: got %d, want 200", i, got)
		}
	}
	if n := rev.calls.Load(); n != 1 {
		t.Errorf("20 deliveries with one token: got %d reviews, want 1", n)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		codes    = map[int]int{}
		retryHdr = true
	)
	for i := range 50 {
		wg.Go(func() {
			resp := ceRequest(t, srv.URL, fmt.Sprintf("bad-%d", i))
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
				retryHdr = false
			}
		})
	}
	wg.Wait()
	if codes[http.StatusTooManyRequests] != 48 || codes[http.StatusUnauthorized] != 2 {
		t.Errorf("a flood of 50 bad tokens with 2 reviews left: got %v, want 2×401 and 48×429", codes)
	}
	if !retryHdr {
		t.Error("a 429 without Retry-After")
	}
	if got := ceRequest(t, srv.URL, good).StatusCode; got != http.StatusOK {
		t.Errorf("the known sender during the flood: got %d, want 200 from the cache", got)
	}
}

func TestOIDCCacheFollowsTheTokenExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	jwt := func(exp int64) string {
		payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"exp":%d,"aud":["siskin"]}`, exp))
		return "eyJhbGciOiJSUzI1NiJ9." + payload + ".sig"
	}
	tests := []struct {
		name  string
		token string
		want  time.Duration
	}{
		{"expires in a minute", jwt(now.Unix() + 60), time.Minute},
		{"expires in an hour: capped", jwt(now.Unix() + 3600), oidcCacheMax},
		{"already expired", jwt(now.Unix() - 1), -time.Second},
		{"not a JWT", "opaque", time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cacheFor(tt.token, now); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
