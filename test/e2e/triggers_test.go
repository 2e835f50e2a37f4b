//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/traffic"
)

// Issue 7's lab tests: the real registry's notifications start releases, the real
// Alertmanager's abort them, and forged or malformed input changes nothing.

// canaryStatus reads the Canary's status as Kubernetes has it.
func (e *env) canaryStatus(name string) functions.Status {
	e.t.Helper()
	u, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get canary: %v", err)
	}
	raw, _, _ := unstructured.NestedMap(u.Object, "status")
	b, _ := json.Marshal(raw)
	var st functions.Status
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatalf("decode status of canary %s: %v", name, err)
	}
	return st
}

// releaseSteps is what a user sees from a new revision to Succeeded with the seed's analysis.
func releaseSteps() []observed {
	want := []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100}}
	for w := int64(5); w <= 50; w += 5 {
		want = append(want, observed{Phase: "Progressing", CanaryWeight: w, Primary: int32(100 - w), Canary: int32(w)})
	}
	return append(want,
		observed{Phase: "Promoting", CanaryWeight: 50, Primary: 50, Canary: 50},
		observed{Phase: "Finalising", Primary: 100},
		observed{Phase: "Succeeded", Primary: 100},
	)
}

// from drops the steps before the one the canary is at.
func from(want []observed, at observed) []observed {
	for i, w := range want {
		if w == at {
			return want[i:]
		}
	}
	return want
}

func TestRegistryPushStartsRelease(t *testing.T) {
	e := newEnv(t, "triggers-push")
	ctx := context.Background()
	reg := e.lab.Registry()
	repo := "lab/app"
	pushImage(t, reg, repo, "1.0.0")
	ex := startExporter(t, e)
	ex.Set(e.ns, "app", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("app", reg+"/"+repo+":1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "app", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	stepThrough(t, e, s, "app", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)

	if err := e.lab.SetRegistryNotify(ctx, s.url+"/webhooks/registry", webhookToken); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.lab.SetRegistryNotify(context.Background(), "", "") })

	// A push of 1.1.0: the registry tells Siskin, which pins the target to the digest.
	pushes := eventCount(t, s, "push", "ok")
	_, digest := pushImage(t, reg, repo, "1.1.0")
	want := reg + "/" + repo + ":1.1.0@" + digest
	waitUntil(t, 30*time.Second, "the target to run "+want, func() bool {
		img, _ := e.deployment("app")
		return img == want
	})
	waitUntil(t, 30*time.Second, "status.trigger to name the push", func() bool {
		tr := e.canaryStatus("app").Trigger
		return tr != nil && tr.Kind == "push"
	})
	trig := e.canaryStatus("app").Trigger
	if trig.Detail != want || trig.Source != "distribution" || !strings.HasPrefix(trig.EventID, "distribution:") {
		t.Errorf("status.trigger: got %+v, want kind push, detail %s, from the registry's notification", *trig, want)
	}
	if got := eventCount(t, s, "push", "ok") - pushes; got < 1 {
		t.Errorf("Siskin counted %v push notifications, want at least 1", got)
	}
	stepThrough(t, e, s, "app", time.Second, from(releaseSteps(), e.observe("app")), 60)
	if img, _ := e.deployment("app-primary"); img != want {
		t.Errorf("after the release the primary runs %s, want %s", img, want)
	}
	firstTrigger := *trig

	// An older semver tag is ignored: the release that ran stays the last one.
	pushes = eventCount(t, s, "push", "ok")
	stepsBefore := s.view(e.ns, "app").Steps
	pushImage(t, reg, repo, "1.0.5")
	waitUntil(t, 30*time.Second, "Siskin to get the push of 1.0.5", func() bool { return eventCount(t, s, "push", "ok") > pushes })
	if img, _ := e.deployment("app"); img != want {
		t.Errorf("after a push of an older tag the target runs %s, want still %s", img, want)
	}
	if v := s.view(e.ns, "app"); v.Phase != functions.PhaseSucceeded || v.Steps != stepsBefore || v.Trigger == nil || v.Trigger.EventID != firstTrigger.EventID {
		t.Errorf("after a push of an older tag: got %s, %d steps, trigger %+v; want Succeeded, %d steps, trigger %s",
			v.Phase, v.Steps, v.Trigger, stepsBefore, firstTrigger.EventID)
	}

	// The same digest pushed twice (a second manifest PUT, as a retrying client does) starts
	// one release.
	pushes = eventCount(t, s, "push", "ok")
	img, digest2 := pushImage(t, reg, repo, "1.2.0")
	want2 := reg + "/" + repo + ":1.2.0@" + digest2
	waitUntil(t, 30*time.Second, "the target to run "+want2, func() bool {
		img, _ := e.deployment("app")
		return img == want2
	})
	waitUntil(t, 30*time.Second, "the release of 1.2.0 to start", func() bool {
		tr := s.view(e.ns, "app").Trigger
		return tr != nil && tr.Detail == want2
	})
	started := s.view(e.ns, "app")
	ref, _ := name.ParseReference(reg+"/"+repo+":1.2.0", name.Insecure)
	if err := remote.Put(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push 1.2.0 again: %v", err)
	}
	waitUntil(t, 30*time.Second, "Siskin to get both pushes of 1.2.0", func() bool { return eventCount(t, s, "push", "ok")-pushes >= 2 })
	if v := s.view(e.ns, "app"); v.Steps != started.Steps || v.Trigger.EventID != started.Trigger.EventID {
		t.Errorf("the second push of 1.2.0 did something: steps %d -> %d, trigger %s -> %s",
			started.Steps, v.Steps, started.Trigger.EventID, v.Trigger.EventID)
	}
	// The same push relayed once more, under another event id, is recognised as a duplicate.
	code, body := s.post("/webhooks/registry", distributionHeaders, distributionPush(t, reg, repo, "1.2.0", digest2, "relayed-again"))
	var rep functions.PushReport
	if err := json.Unmarshal(body, &rep); code != http.StatusOK || err != nil || len(rep.Pushes) != 1 {
		t.Fatalf("relayed push: %d %s", code, body)
	}
	if got := rep.Pushes[0].Outcome; got != "duplicate" {
		t.Errorf("a relayed push of the same digest: got outcome %q (%s), want duplicate", got, rep.Pushes[0].Reason)
	}
	if v := s.view(e.ns, "app"); v.Steps != started.Steps {
		t.Errorf("the relayed push stepped the canary: %d -> %d steps", started.Steps, v.Steps)
	}
}

func TestAlertmanagerAbortsReleaseWithoutATick(t *testing.T) {
	e := newEnv(t, "triggers-abort")
	ctx := context.Background()
	ex := startExporter(t, e)
	ex.Set(e.ns, "app", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("app", e.lab.Registry()+"/lab/app:1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "app", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	releaseTo(t, e, s, "app", 10)

	// The new version is bad; nobody ticks from here on.
	ex.Set(e.ns, "app", traffic.Behaviour{RPS: 50, LatencyMs: 40, ErrorRate: 0.6})
	stepsBefore := s.view(e.ns, "app").Steps
	if err := e.lab.SetAlertWebhook(ctx, s.url+"/webhooks/alertmanager", webhookToken); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.lab.SetAlertWebhook(context.Background(), "", "") })
	const alert = "TriggersCanary5xx"
	sel := fmt.Sprintf(`destination_workload_namespace=%q,destination_workload="app"`, e.ns)
	rule := fmt.Sprintf(`alert: %s
expr: sum(rate(istio_requests_total{%s,response_code=~"5.."}[10s])) / sum(rate(istio_requests_total{%s}[10s])) > 0.1
for: 0s
labels:
  namespace: %s
  canary: app
  severity: critical
annotations:
  summary: the canary of app answers 5xx
`, alert, sel, sel, e.ns)
	alerts := eventCount(t, s, "alert", "ok")
	if err := e.lab.AddAlertRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	ruleRemoved := false
	t.Cleanup(func() {
		if !ruleRemoved {
			_ = e.lab.RemoveAlertRule(context.Background(), alert)
		}
	})

	waitUntil(t, 60*time.Second, "the alert to abort the canary", func() bool { return e.observe("app").Phase == "Failed" })
	if got, want := e.observe("app"), (observed{Phase: "Failed", Primary: 100}); got != want {
		t.Errorf("after the alert: got %v, want %v", got, want)
	}
	if _, replicas := e.deployment("app"); replicas != 0 {
		t.Errorf("the canary target has %d replicas after the abort, want 0", replicas)
	}
	st := e.canaryStatus("app")
	if !strings.Contains(st.Message, alert) {
		t.Errorf("status.message %q does not name the alert %s", st.Message, alert)
	}
	if st.Trigger == nil || st.Trigger.Kind != "alert" || !strings.HasPrefix(st.Trigger.Detail, alert+" ") {
		t.Errorf("status.trigger: got %+v, want kind alert naming %s", st.Trigger, alert)
	}
	v := s.view(e.ns, "app")
	if v.Steps != stepsBefore+1 {
		t.Errorf("the canary took %d steps after the rule was added, want exactly 1 (the abort; no tick was sent)", v.Steps-stepsBefore)
	}
	// The metric is counted as the request ends, just after the status is written.
	waitUntil(t, 10*time.Second, "Siskin to count the Alertmanager notification", func() bool {
		return eventCount(t, s, "alert", "ok")-alerts >= 1
	})
	events, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=app,involvedObject.kind=Canary"})
	if err != nil {
		t.Fatal(err)
	}
	named := false
	for _, ev := range events.Items {
		named = named || (ev.Type == "Warning" && strings.Contains(ev.Message, alert))
	}
	if !named {
		t.Errorf("no Warning Event on the Canary names the alert %s", alert)
	}

	// The alert resolves: Alertmanager says so, and the abort stands.
	if err := e.lab.RemoveAlertRule(ctx, alert); err != nil {
		t.Fatal(err)
	}
	ruleRemoved = true
	waitUntil(t, 90*time.Second, "Alertmanager's resolved notification", func() bool {
		for _, line := range strings.Split(s.Logs(), "\n") {
			if strings.Contains(line, "resolved alert recorded") && strings.Contains(line, alert) {
				return true
			}
		}
		return false
	})
	if got, want := e.observe("app"), (observed{Phase: "Failed", Primary: 100}); got != want {
		t.Errorf("after the alert resolved: got %v, want %v", got, want)
	}
	if _, replicas := e.deployment("app"); replicas != 0 {
		t.Errorf("after the alert resolved the canary target has %d replicas, want 0", replicas)
	}
	if after := s.view(e.ns, "app"); after.Steps != v.Steps {
		t.Errorf("the resolved notification stepped the canary: %d -> %d steps", v.Steps, after.Steps)
	}
}

func TestForgedAndBadInputChangeNothing(t *testing.T) {
	e := newEnv(t, "triggers-forged")
	reg := e.lab.Registry()
	repo := "lab/forged"
	pushImage(t, reg, repo, "1.0.0")
	running := reg + "/" + repo + ":1.0.0"
	e.createDeployment("forged", running, 1)
	e.apply(seedCanary(t, e.ns, "forged", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	stepThrough(t, e, s, "forged", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)

	missing := "sha256:" + strings.Repeat("0badc0de", 8)
	firing := alertmanagerBody(t, "firing", "0123456789abcdef", map[string]string{
		"alertname": "Forged", "namespace": e.ns, "canary": "forged", "severity": "critical"})
	badType := bytes.Replace(firing, []byte(`"startsAt":"`), []byte(`"startsAt":12,"x":"`), 1)
	badTag := bytes.Replace(distributionPush(t, reg, repo, "1.1.0", missing, "bad-tag"), []byte(`"tag":"1.1.0"`), []byte(`"tag":110`), 1)
	huge := append([]byte(`{"events":[],"padding":"`), bytes.Repeat([]byte("x"), 1<<20+1)...)
	huge = append(huge, `"}`...)

	for _, tc := range []struct {
		name    string
		path    string
		headers map[string]string
		noAuth  bool
		body    []byte
		code    int
		check   func(t *testing.T, body []byte)
	}{
		{name: "push of a digest the registry does not have", path: "/webhooks/registry", headers: distributionHeaders,
			body: distributionPush(t, reg, repo, "1.1.0", missing, "forged-1"), code: http.StatusOK,
			check: func(t *testing.T, body []byte) {
				var rep functions.PushReport
				if err := json.Unmarshal(body, &rep); err != nil || len(rep.Pushes) != 1 {
					t.Fatalf("got %s, want a push report with one push", body)
				}
				p := rep.Pushes[0]
				if p.Outcome != "rejected" || !strings.Contains(p.Reason, repo+":1.1.0@"+missing) || !strings.Contains(p.Reason, "not in the registry") {
					t.Errorf("got outcome %q reason %q, want rejected with a reason naming %s:1.1.0@%s", p.Outcome, p.Reason, repo, missing)
				}
				if len(rep.Started) != 0 {
					t.Errorf("got started %v, want none", rep.Started)
				}
			}},
		{name: "registry push without credentials", path: "/webhooks/registry", headers: distributionHeaders, noAuth: true,
			body: distributionPush(t, reg, repo, "1.1.0", missing, "forged-2"), code: http.StatusUnauthorized},
		{name: "alert without credentials", path: "/webhooks/alertmanager", noAuth: true, body: firing, code: http.StatusUnauthorized},
		{name: "oversized body", path: "/webhooks/registry", headers: distributionHeaders, body: huge, code: http.StatusRequestEntityTooLarge},
		{name: "garbage", path: "/webhooks/registry", body: []byte("\x00\x01 this is not json {"), code: http.StatusBadRequest,
			check: wantError("")},
		{name: "registry event with a tag of the wrong type", path: "/webhooks/registry", headers: distributionHeaders, body: badTag,
			code: http.StatusBadRequest, check: wantError("events[0].target.tag")},
		{name: "alert with startsAt of the wrong type", path: "/webhooks/alertmanager", body: badType, code: http.StatusBadRequest,
			check: wantError("alerts[0].startsAt")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postAs(t, s.url+tc.path, !tc.noAuth, tc.headers, tc.body)
			if code != tc.code {
				t.Fatalf("got %d %s, want %d", code, body, tc.code)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
	if img, _ := e.deployment("forged"); img != running {
		t.Errorf("after the forged and bad requests the target runs %s, want still %s", img, running)
	}
	if got, want := e.observe("forged"), (observed{Phase: "Initialized", Primary: 100}); got != want {
		t.Errorf("after the forged and bad requests: got %v, want %v", got, want)
	}
}

// wantError checks a 4xx body: {"error": "..."} with a reason, naming field when given.
func wantError(field string) func(t *testing.T, body []byte) {
	return func(t *testing.T, body []byte) {
		t.Helper()
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			t.Fatalf("got %s, want {\"error\": reason}", body)
		}
		if field != "" && !strings.Contains(e.Error, field) {
			t.Errorf("got error %q, want it to name %s", e.Error, field)
		}
	}
}

// postAs posts with or without the webhook token.
func postAs(t *testing.T, url string, auth bool, headers map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if auth {
		req.Header.Set("Authorization", "Bearer "+webhookToken)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}
