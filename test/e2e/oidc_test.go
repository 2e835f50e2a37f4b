//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A Knative Broker cannot send Siskin's bearer token; with Eventing's OIDC on, it sends a
// ServiceAccount token for the subscriber's audience, which Siskin verifies with the real
// TokenReview API (as its restricted identity). Only the senders on the allowlist pass: any
// pod can mint a token for the audience.
func TestCloudEventRouteTakesKnativeOIDCTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "oidc")
	ctx := context.Background()
	intruders := "oidc-intruder"
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: intruders}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []struct{ ns, name string }{{e.ns, "oidc-trigger-siskin-ticks"}, {intruders, "app"}} {
		if _, err := e.kube.CoreV1().ServiceAccounts(sa.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tokenOf := func(ns, sa, audience string) string {
		t.Helper()
		tr, err := e.kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	token := func(audience string) string { return tokenOf(e.ns, "oidc-trigger-siskin-ticks", audience) }
	// The lab's Triggers live in the test's namespace, not siskin-system.
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{"SISKIN_OIDC_AUDIENCE=siskin",
		"SISKIN_OIDC_SENDERS=system:serviceaccount:" + e.ns + ":oidc-*"}})
	ping := func(bearer string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, s.url+"/", bytes.NewReader([]byte(`{"tick":"advance"}`)))
		req.Header.Set("Authorization", "Bearer "+bearer)
		for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "oidc-1", "Ce-Type": "dev.knative.sources.ping",
			"Ce-Source": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "Content-Type": "application/json"} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name   string
		bearer string
		want   int
	}{
		{"a token for Siskin's audience", token("siskin"), http.StatusOK},
		{"a token for another audience", token("someone-else"), http.StatusUnauthorized},
		{"any pod's token for Siskin's audience", tokenOf(intruders, "app", "siskin"), http.StatusUnauthorized},
		{"not a token", "garbage", http.StatusUnauthorized},
	} {
		if code, body := ping(tc.bearer); code != tc.want {
			t.Errorf("%s: got %d %s, want %d", tc.name, code, body, tc.want)
		}
	}

	// A flood of bad tokens spends the review budget, not the steps': past it, 429 with
	// Retry-After; a known sender (cached) and the bearer token still pass meanwhile.
	good := token("siskin")
	if code, body := ping(good); code != http.StatusOK {
		t.Fatalf("known sender: got %d %s", code, body)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		codes   = map[int]int{}
		noRetry int
	)
	for i := range 200 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, s.url+"/", bytes.NewReader([]byte(`{}`)))
			req.Header.Set("Authorization", fmt.Sprintf("Bearer bad-%d", i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
				noRetry++
			}
		})
	}
	if code, body := ping(good); code != http.StatusOK {
		t.Errorf("known sender during the flood: got %d %s, want 200", code, body)
	}
	if code, body := s.tick("oidc-flood-tick"); code != http.StatusOK {
		t.Errorf("a tick with the bearer token during the flood: got %d %s, want 200", code, body)
	}
	wg.Wait()
	if codes[http.StatusTooManyRequests] == 0 || noRetry > 0 || codes[http.StatusOK] > 0 {
		t.Errorf("flood of 200 bad tokens: got %v (%d 429s without Retry-After), want 429s with Retry-After and 401s only", codes, noRetry)
	}
	t.Logf("flood of 200 bad tokens: %v", codes)
	// The raw webhook routes never take OIDC tokens: a registry or Alertmanager sends the token.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/webhooks/alertmanager", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Authorization", "Bearer "+token("siskin"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an OIDC token on /webhooks/alertmanager: got %d, want 401", resp.StatusCode)
	}
}
