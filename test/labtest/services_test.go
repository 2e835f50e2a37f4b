//go:build e2e

package labtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/test/lab"
)

func TestRedisAnswers(t *testing.T) {
	l := lab.Require(t)
	opts, err := redis.ParseURL(l.RedisURL())
	if err != nil {
		t.Fatalf("parse %s: %v", l.RedisURL(), err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	key, value := unique("labtest:"), unique("v")
	if err := rdb.Set(ctx, key, value, time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := rdb.Get(ctx, key).Result(); err != nil || got != value {
		t.Errorf("GET %s: got %q, %v; want %q", key, got, err, value)
	}
}

func TestPrometheusScrapesATargetOfTheTest(t *testing.T) {
	l := lab.Require(t)
	run := unique("")
	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "labtest_answer", Help: "a value only this test knows"}, []string{"run"})
	reg.MustRegister(gauge)
	gauge.WithLabelValues(run).Set(42)
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer target.Close()
	hostport := strings.TrimPrefix(target.URL, "http://")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.AddScrapeTarget(ctx, "labtest", hostport); err != nil {
		t.Fatalf("add scrape target: %v", err)
	}
	t.Cleanup(func() {
		if err := l.RemoveScrapeTarget(context.Background(), "labtest", hostport); err != nil {
			t.Errorf("remove scrape target: %v", err)
		}
	})
	client, err := api.NewClient(api.Config{Address: l.PrometheusURL()})
	if err != nil {
		t.Fatalf("prometheus client: %v", err)
	}
	query := fmt.Sprintf(`labtest_answer{job="labtest",run=%q}`, run)
	for {
		result, _, _, err := promv1.NewAPI(client).Query(ctx, query, time.Now())
		if vec, ok := result.(model.Vector); err == nil && ok && len(vec) == 1 {
			if vec[0].Value != 42 {
				t.Fatalf("%s: got %v, want 42", query, vec[0].Value)
			}
			if got := string(vec[0].Metric["instance"]); got != hostport {
				t.Errorf("instance label: got %q, want %q", got, hostport)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never returned a sample (last: %v, %v)", query, result, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// webhook is an HTTP receiver that records the requests carrying the right bearer token and
// counts the others.
type webhook struct {
	*httptest.Server
	token        string
	requests     chan received
	unauthorized chan string
}

type received struct {
	header http.Header
	body   []byte
}

func newWebhook(t *testing.T) *webhook {
	w := &webhook{token: unique("token-"), requests: make(chan received, 100), unauthorized: make(chan string, 100)}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer "+w.token {
			w.unauthorized <- r.Header.Get("Authorization")
			http.Error(rw, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.requests <- received{header: r.Header.Clone(), body: body}
	}))
	t.Cleanup(w.Close)
	return w
}

// next returns the next authorized request that match accepts.
func (w *webhook) next(t *testing.T, what string, match func(received) bool) received {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r := <-w.requests:
			if match(r) {
				return r
			}
		case auth := <-w.unauthorized:
			t.Fatalf("%s: the receiver got a request with Authorization %q, want the bearer token", what, auth)
		case <-timeout:
			t.Fatalf("%s: nothing arrived in 30 s", what)
		}
	}
}

type alertNotification struct {
	Version string `json:"version"`
	Status  string `json:"status"`
	Alerts  []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

func alertNamed(t *testing.T, name, status string) func(received) bool {
	return func(r received) bool {
		var n alertNotification
		if err := json.Unmarshal(r.body, &n); err != nil {
			t.Errorf("webhook body is not an Alertmanager notification: %v: %s", err, r.body)
			return false
		}
		return n.Version == "4" && n.Status == status && len(n.Alerts) == 1 && n.Alerts[0].Labels["alertname"] == name
	}
}

func TestAlertPostedToAlertmanagerReachesTheReceiver(t *testing.T) {
	l := lab.Require(t)
	hook := newWebhook(t)
	ctx := t.Context()
	if err := l.SetAlertWebhook(ctx, hook.URL+"/alerts", hook.token); err != nil {
		t.Fatalf("set alert webhook: %v", err)
	}
	t.Cleanup(func() { _ = l.SetAlertWebhook(context.Background(), "", "") })
	alertname := unique("LabTestAlert")
	post := func(endsAt time.Time) {
		body, _ := json.Marshal([]map[string]any{{
			"labels":      map[string]string{"alertname": alertname, "severity": "critical"},
			"annotations": map[string]string{"summary": "posted by the lab test"},
			"startsAt":    time.Now().Add(-time.Minute).Format(time.RFC3339),
			"endsAt":      endsAt.Format(time.RFC3339),
		}})
		resp, err := http.Post(l.AlertmanagerURL()+"/api/v2/alerts", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("post alert: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("post alert: got %s, want 200 OK", resp.Status)
		}
	}
	post(time.Now().Add(time.Hour))
	r := hook.next(t, "firing alert", alertNamed(t, alertname, "firing"))
	if ua := r.header.Get("User-Agent"); !strings.HasPrefix(ua, "Alertmanager/") {
		t.Errorf("User-Agent: got %q, want Alertmanager/...", ua)
	}
	post(time.Now().Add(-time.Second))
	hook.next(t, "resolved alert", alertNamed(t, alertname, "resolved"))
}

func TestPrometheusAlertRuleReachesTheReceiverThroughAlertmanager(t *testing.T) {
	l := lab.Require(t)
	hook := newWebhook(t)
	ctx := t.Context()
	if err := l.SetAlertWebhook(ctx, hook.URL, hook.token); err != nil {
		t.Fatalf("set alert webhook: %v", err)
	}
	t.Cleanup(func() { _ = l.SetAlertWebhook(context.Background(), "", "") })
	alertname := unique("LabTestRule")
	rule := fmt.Sprintf("alert: %s\nexpr: vector(1) > 0\nlabels:\n  severity: warning\n", alertname)
	if err := l.AddAlertRule(ctx, rule); err != nil {
		t.Fatalf("add alert rule: %v", err)
	}
	t.Cleanup(func() {
		if err := l.RemoveAlertRule(context.Background(), alertname); err != nil {
			t.Errorf("remove alert rule: %v", err)
		}
	})
	hook.next(t, "alert from a Prometheus rule", alertNamed(t, alertname, "firing"))

	if err := l.AddAlertRule(ctx, "expr: vector(1)"); err == nil {
		t.Error("add alert rule without a name: got no error, want one")
	}
	if err := l.AddAlertRule(ctx, "alert: Broken\nexpr: vector(1) +"); err == nil {
		t.Error("add alert rule with invalid PromQL: got no error, want Prometheus' refusal")
	}
}

type registryEnvelope struct {
	Events []struct {
		Action string `json:"action"`
		Target struct {
			MediaType  string `json:"mediaType"`
			Repository string `json:"repository"`
			Digest     string `json:"digest"`
			Tag        string `json:"tag"`
		} `json:"target"`
	} `json:"events"`
}

func TestImagePushProducesARegistryNotification(t *testing.T) {
	l := lab.Require(t)
	hook := newWebhook(t)
	ctx := t.Context()
	if err := l.SetRegistryNotify(ctx, hook.URL+"/registry", hook.token); err != nil {
		t.Fatalf("set registry notify: %v", err)
	}
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatalf("random image: %v", err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatalf("image digest: %v", err)
	}
	repo, tag := unique("labtest/app-"), "v1.2.3"
	ref, err := name.NewTag(l.Registry()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatalf("parse reference: %v", err)
	}
	pushCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(pushCtx)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	r := hook.next(t, "manifest push event", func(r received) bool {
		var env registryEnvelope
		if err := json.Unmarshal(r.body, &env); err != nil {
			t.Errorf("registry notification is not an envelope: %v: %s", err, r.body)
			return false
		}
		for _, e := range env.Events {
			if e.Action == "push" && e.Target.Repository == repo && e.Target.Tag != "" {
				if e.Target.Tag != tag || e.Target.Digest != digest.String() {
					t.Errorf("push event: got tag %q digest %s, want %q %s", e.Target.Tag, e.Target.Digest, tag, digest)
				}
				return true
			}
		}
		return false
	})
	if ct := r.header.Get("Content-Type"); !strings.Contains(ct, "distribution.events.v") {
		t.Errorf("Content-Type: got %q, want application/vnd.docker.distribution.events.v1+json (or v2)", ct)
	}
}
