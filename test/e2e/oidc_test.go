//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A Knative Broker cannot send Siskin's bearer token; with Eventing's OIDC on, it sends a
// ServiceAccount token for the subscriber's audience, which Siskin verifies with the real
// TokenReview API (as its restricted identity).
func TestCloudEventRouteTakesKnativeOIDCTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "oidc")
	ctx := context.Background()
	if _, err := e.kube.CoreV1().ServiceAccounts(e.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "broker-filter"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(audience string) string {
		t.Helper()
		tr, err := e.kube.CoreV1().ServiceAccounts(e.ns).CreateToken(ctx, "broker-filter",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{"SISKIN_OIDC_AUDIENCE=siskin"}})
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
		{"not a token", "garbage", http.StatusUnauthorized},
	} {
		if code, body := ping(tc.bearer); code != tc.want {
			t.Errorf("%s: got %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
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
