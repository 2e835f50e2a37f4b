package handlers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// fakeReleases records what the edge asked of the use cases.
type fakeReleases struct {
	mu     sync.Mutex
	calls  []string
	err    error
	pushes []functions.ImagePush
	alert  functions.AlertNotification
}

func (f *fakeReleases) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeReleases) Tick(ctx context.Context, until time.Time) (functions.TickReport, error) {
	f.record("tick")
	return functions.TickReport{Rounds: 1}, f.err
}
func (f *fakeReleases) HandleAlerts(ctx context.Context, n functions.AlertNotification, id string) (functions.AbortReport, error) {
	f.record("alerts")
	f.alert = n
	return functions.AbortReport{Firing: len(n.Alerts)}, f.err
}
func (f *fakeReleases) HandlePushes(ctx context.Context, p []functions.ImagePush) (functions.PushReport, error) {
	f.record("pushes")
	f.pushes = p
	return functions.PushReport{}, f.err
}
func (f *fakeReleases) ObjectChanged(ctx context.Context, o functions.ObjectRef, _ string) ([]functions.StepReport, error) {
	f.record("object " + o.String())
	return nil, f.err
}
func (f *fakeReleases) StepDue(ctx context.Context, k functions.Key) (functions.StepReport, error) {
	f.record("step " + k.String())
	return functions.StepReport{Key: k}, f.err
}
func (f *fakeReleases) RequestPromotion(ctx context.Context, k functions.Key) (functions.StepReport, error) {
	f.record("promote " + k.String())
	return functions.StepReport{Key: k}, f.err
}
func (f *fakeReleases) Resume(ctx context.Context, k functions.Key) (functions.StepReport, error) {
	f.record("resume " + k.String())
	return functions.StepReport{Key: k}, f.err
}
func (f *fakeReleases) Abort(ctx context.Context, k functions.Key, reason string) (functions.StepReport, bool, error) {
	f.record("abort " + k.String() + " " + reason)
	return functions.StepReport{Key: k}, true, f.err
}
func (f *fakeReleases) View(ctx context.Context, k functions.Key) (functions.CanaryView, error) {
	f.record("view " + k.String())
	return functions.CanaryView{Key: k}, f.err
}
func (f *fakeReleases) Events(ctx context.Context, k functions.Key) ([]functions.EventRecord, error) {
	f.record("events " + k.String())
	return nil, f.err
}
func (f *fakeReleases) Views(ctx context.Context, ns string) ([]functions.CanaryView, error) {
	f.record("views " + ns)
	return nil, f.err
}
func (f *fakeReleases) History(ctx context.Context, k functions.Key) ([]functions.Release, error) {
	f.record("history " + k.String())
	return nil, f.err
}
func (f *fakeReleases) Detail(ctx context.Context, k functions.Key) (functions.CanaryDetail, error) {
	f.record("detail " + k.String())
	return functions.CanaryDetail{CanaryView: functions.CanaryView{Key: k}}, f.err
}

const (
	token    = "s3cret"     // a sender's
	apiToken = "0perat0r"   // an operator's
	rotated  = "s3cret-old" // a sender's, still valid while it is rotated out
)

func newServer(t *testing.T, rel *fakeReleases, mutate func(*Options)) *httptest.Server {
	t.Helper()
	opts := Options{WebhookTokens: []string{token, rotated}, APITokens: []string{apiToken}, GitHubSecret: "gh", TickWindow: time.Millisecond}
	if mutate != nil {
		mutate(&opts)
	}
	srv := httptest.NewServer(New(rel, opts, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv
}

func payload(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoutes(t *testing.T) {
	ping := `{"specversion":"1.0","id":"1","source":"/apis/v1/namespaces/siskin/pingsources/tick","type":"dev.knative.sources.ping","data":{}}`
	alert := payload(t, "testdata/alertmanager/alertmanager-0.25-firing.json")
	manifest := payload(t, "testdata/distribution/registry-2.8.2-push-manifest-oci.json")
	sign := func(body []byte) string {
		m := hmac.New(sha256.New, []byte("gh"))
		m.Write(body)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	ghcr := []byte(`{"action":"published","package":{"name":"checkout","namespace":"acme","ecosystem":"CONTAINER","package_version":{"container_metadata":{"tag":{"name":"1.4.2","digest":"sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"}}}}}`)
	tests := []struct {
		name      string
		method    string
		path      string
		headers   map[string]string
		body      []byte
		errOut    error
		wantCode  int
		wantCall  string
		wantInErr string
	}{
		{"healthz needs no auth", "GET", "/healthz", nil, nil, nil, 200, "", ""},
		{"plain POST is a tick", "POST", "/", map[string]string{"Authorization": "Bearer " + token}, nil, nil, 200, "tick", ""},
		{"binary ping", "POST", "/", map[string]string{"Authorization": "Bearer " + token, "Ce-Specversion": "1.0", "Ce-Id": "1",
			"Ce-Source": "/ping", "Ce-Type": "dev.knative.sources.ping", "Content-Type": "application/json"}, []byte(`{}`), nil, 200, "tick", ""},
		{"structured ping", "POST", "/", map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/cloudevents+json"}, []byte(ping), nil, 200, "tick", ""},
		{"unknown CloudEvent type is acknowledged", "POST", "/", map[string]string{"Authorization": "Bearer " + token, "Ce-Specversion": "1.0", "Ce-Id": "1",
			"Ce-Source": "/x", "Ce-Type": "com.example.other"}, nil, nil, 202, "", ""},
		{"CloudEvent missing id", "POST", "/", map[string]string{"Authorization": "Bearer " + token, "Ce-Specversion": "1.0",
			"Ce-Source": "/x", "Ce-Type": "dev.knative.sources.ping"}, nil, nil, 400, "", "id"},
		{"batch refused", "POST", "/", map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/cloudevents-batch+json"}, []byte("[]"), nil, 415, "", "batched"},
		{"no credentials", "POST", "/", nil, nil, nil, 401, "", "missing bearer token"},
		{"bad token", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer nope"}, alert, nil, 401, "", "bad bearer token"},
		{"alertmanager", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer " + token}, alert, nil, 200, "alerts", ""},
		{"alertmanager garbage", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer " + token}, []byte("{nope"), nil, 400, "", "invalid JSON"},
		{"alertmanager wrong type names the field", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer " + token},
			[]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":"x"}]}`), nil, 400, "", "alerts[0].labels"},
		{"transient failure is 503", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer " + token}, alert,
			fmt.Errorf("load: %w", functions.ErrUnavailable), 503, "alerts", "unavailable"},
		{"registry push", "POST", "/webhooks/registry", map[string]string{"Authorization": "Bearer " + token,
			"Content-Type": "application/vnd.docker.distribution.events.v1+json"}, manifest, nil, 200, "pushes", ""},
		{"registry token as query parameter", "POST", "/webhooks/registry?token=" + token, nil, manifest, nil, 200, "pushes", ""},
		{"the token being rotated out still works", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer " + rotated}, alert, nil, 200, "alerts", ""},
		{"an operator may send events", "POST", "/webhooks/alertmanager", map[string]string{"Authorization": "Bearer " + apiToken}, alert, nil, 200, "alerts", ""},
		{"the operator token never in a URL", "POST", "/webhooks/registry?token=" + apiToken, nil, manifest, nil, 401, "", ""},
		{"a sender's token does not open the API", "GET", "/api/v1/canaries", map[string]string{"Authorization": "Bearer " + token}, nil, nil, 403, "", "the webhook token is a sender's"},
		{"nor its gates", "POST", "/api/v1/canaries/default/podinfo/abort", map[string]string{"Authorization": "Bearer " + token}, nil, nil, 403, "", "--api-token"},
		{"registry garbage", "POST", "/webhooks/registry", map[string]string{"Authorization": "Bearer " + token}, []byte("garbage"), nil, 400, "", ""},
		{"ghcr signed", "POST", "/webhooks/registry", map[string]string{"X-GitHub-Event": "package", "X-Hub-Signature-256": sign(ghcr)}, ghcr, nil, 200, "pushes", ""},
		{"ghcr bad signature", "POST", "/webhooks/registry", map[string]string{"X-GitHub-Event": "package", "X-Hub-Signature-256": sign([]byte("other"))}, ghcr, nil, 401, "", "X-Hub-Signature-256"},
		{"oversized body", "POST", "/webhooks/registry", map[string]string{"Authorization": "Bearer " + token}, bytes.Repeat([]byte("a"), 2<<20), nil, 413, "", ""},
		{"api list", "GET", "/api/v1/canaries", map[string]string{"Authorization": "Bearer " + apiToken}, nil, nil, 200, "views ", ""},
		{"api needs auth", "GET", "/api/v1/canaries", nil, nil, nil, 401, "", ""},
		{"api get", "GET", "/api/v1/canaries/default/podinfo", map[string]string{"Authorization": "Bearer " + apiToken}, nil, nil, 200, "view default/podinfo", ""},
		{"api history", "GET", "/api/v1/canaries/default/podinfo/history", map[string]string{"Authorization": "Bearer " + apiToken}, nil, nil, 200, "history default/podinfo", ""},
		{"api history needs auth", "GET", "/api/v1/canaries/default/podinfo/history", nil, nil, nil, 401, "", ""},
		{"api not found", "GET", "/api/v1/canaries/default/nope", map[string]string{"Authorization": "Bearer " + apiToken}, nil, fmt.Errorf("get: %w", functions.ErrNotFound), 404, "view default/nope", ""},
		{"promote", "POST", "/api/v1/canaries/default/podinfo/promote", map[string]string{"Authorization": "Bearer " + apiToken}, nil, nil, 200, "promote default/podinfo", ""},
		{"promote refused", "POST", "/api/v1/canaries/default/podinfo/promote", map[string]string{"Authorization": "Bearer " + apiToken}, nil, fmt.Errorf("%w: idle", functions.ErrRejected), 422, "promote default/podinfo", "idle"},
		{"abort with reason", "POST", "/api/v1/canaries/default/podinfo/abort?reason=bad+build", map[string]string{"Authorization": "Bearer " + apiToken}, nil, nil, 200, "abort default/podinfo bad build", ""},
		{"resume busy", "POST", "/api/v1/canaries/default/podinfo/resume", map[string]string{"Authorization": "Bearer " + apiToken}, nil, fmt.Errorf("claim: %w", functions.ErrBusy), 503, "resume default/podinfo", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel := &fakeReleases{err: tt.errOut}
			srv := newServer(t, rel, nil)
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, bytes.NewReader(tt.body))
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tt.wantCode)
			}
			got := strings.Join(rel.calls, ",")
			if got != tt.wantCall {
				t.Errorf("got calls %q, want %q", got, tt.wantCall)
			}
			if tt.wantInErr != "" && !strings.Contains(string(body), tt.wantInErr) {
				t.Errorf("got body %s, want it to contain %q", body, tt.wantInErr)
			}
			if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if resp.StatusCode >= 400 && resp.StatusCode != 404 {
				var e errorBody
				if json.Unmarshal(body, &e) != nil || e.Error == "" {
					t.Errorf("error reply %s has no reason", body)
				}
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	rel := &fakeReleases{}
	fail := false
	srv := newServer(t, rel, func(o *Options) {
		o.Ready = []Checker{{Name: "redis", Check: func(ctx context.Context) error {
			if fail {
				return fmt.Errorf("dial tcp: refused")
			}
			return nil
		}}, {Name: "kubernetes", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}}
		o.ReadyTimeout = 20 * time.Millisecond
	})
	resp, _ := http.Get(srv.URL + "/readyz")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "kubernetes") {
		t.Errorf("got %d %s, want 503 naming kubernetes (timed out)", resp.StatusCode, body)
	}
	fail = true
	resp, _ = http.Get(srv.URL + "/readyz")
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "redis") || strings.Contains(string(body), "dial tcp") || strings.Contains(string(body), "deadline") {
		t.Errorf("got %s, want the failed dependencies named without their errors", body)
	}
}
