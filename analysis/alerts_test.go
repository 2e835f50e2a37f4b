package analysis

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

var alertTime = time.Date(2026, 1, 2, 15, 4, 5, 123e6, time.UTC)

func newTestAlerter(t *testing.T, cfg AlerterConfig) (*Alerter, *logBuffer) {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return alertTime }
	}
	log, logs := newTestLogger()
	a, err := NewAlerter(cfg, log)
	if err != nil {
		t.Fatalf("NewAlerter() error = %v", err)
	}
	return a, logs
}

// canaryAlerting is the seed canary with analysis.alerts.
func canaryAlerting(alerts ...functions.AlertRef) functions.Canary {
	c := seedCanary()
	c.Spec.Analysis.Alerts = alerts
	return c
}

var (
	revisionMsg = functions.AlertMessage{Severity: functions.SeverityInfo, Message: "New revision detected, progressing canary analysis.", Metadata: true}
	failedMsg   = functions.AlertMessage{Severity: functions.SeverityError, Message: "Canary analysis failed, rolling back."}
)

func TestSendAlertsBodies(t *testing.T) {
	const seedFields = `[{"title":"Target","value":"Deployment/podinfo.default","short":false},` +
		`{"title":"Failed checks threshold","value":"5","short":false},` +
		`{"title":"Progress deadline","value":"600s","short":false},` +
		`{"title":"Traffic routing","value":"Weight step: 5 max: 50","short":false}]`
	slackLike := func(color, errColor string) []string {
		return []string{
			`{"channel":"general","username":"flagger","icon_url":"","icon_emoji":":rocket:","attachments":[{"color":"` + color +
				`","author_name":"podinfo.default","text":"New revision detected, progressing canary analysis.","mrkdwn_in":["text"],"fields":` + seedFields + `}]}`,
			`{"channel":"general","username":"flagger","icon_url":"","icon_emoji":":rocket:","attachments":[{"color":"` + errColor +
				`","author_name":"podinfo.default","text":"Canary analysis failed, rolling back.","mrkdwn_in":["text"],"fields":[]}]}`,
		}
	}
	tests := []struct {
		kind      string
		wantPath  string
		wantBody  []string
		normalise bool // compare as JSON values (maps have no order on the wire)
	}{
		{NotifierSlack, "/hook", slackLike("good", "danger"), false},
		{NotifierRocket, "/hook", slackLike("#0076D7", "#FF0000"), false},
		{NotifierDiscord, "/hook/slack", slackLike("good", "danger"), false},
		{NotifierMSTeams, "/hook", []string{
			`{"@type":"MessageCard","@context":"http://schema.org/extensions","themeColor":"0076D7","summary":"podinfo.default",` +
				`"sections":[{"activityTitle":"New revision detected, progressing canary analysis.","activitySubtitle":"podinfo.default",` +
				`"facts":[{"name":"Target","value":"Deployment/podinfo.default"},{"name":"Failed checks threshold","value":"5"},` +
				`{"name":"Progress deadline","value":"600s"},{"name":"Traffic routing","value":"Weight step: 5 max: 50"}]}]}`,
			`{"@type":"MessageCard","@context":"http://schema.org/extensions","themeColor":"FF0000","summary":"podinfo.default",` +
				`"sections":[{"activityTitle":"Canary analysis failed, rolling back.","activitySubtitle":"podinfo.default","facts":[]}]}`,
		}, false},
		{NotifierGChat, "/hook", []string{
			`{"cards":[{"header":{"title":"Siskin","subtitle":"podinfo.default"},"sections":[` +
				`{"widgets":[{"textParagraph":{"text":"\u003cfont color=#848484\u003e\u003cstrong\u003eNew revision detected, progressing canary analysis.\u003c/strong\u003e\u003c/font\u003e"}}]},` +
				`{"widgets":[{"textParagraph":{"text":"Target\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003eDeployment/podinfo.default\u003c/strong\u003e\u003c/font\u003e"}}]},` +
				`{"widgets":[{"textParagraph":{"text":"Failed checks threshold\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003e5\u003c/strong\u003e\u003c/font\u003e"}}]},` +
				`{"widgets":[{"textParagraph":{"text":"Progress deadline\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003e600s\u003c/strong\u003e\u003c/font\u003e"}}]},` +
				`{"widgets":[{"textParagraph":{"text":"Traffic routing\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003eWeight step: 5 max: 50\u003c/strong\u003e\u003c/font\u003e"}}]}]}]}`,
			`{"cards":[{"header":{"title":"Siskin","subtitle":"podinfo.default"},"sections":[` +
				`{"widgets":[{"textParagraph":{"text":"\u003cfont color=#848484\u003e\u003cstrong\u003eCanary analysis failed, rolling back.\u003c/strong\u003e\u003c/font\u003e"}}]}]}]}`,
		}, false},
		{NotifierWebhook, "/hook", []string{
			`{"name":"podinfo","namespace":"default","severity":"info","message":"New revision detected, progressing canary analysis.",` +
				`"fields":{"Target":"Deployment/podinfo.default","Failed checks threshold":"5","Progress deadline":"600s","Traffic routing":"Weight step: 5 max: 50"},` +
				`"timestamp":"2026-01-02T15:04:05.123Z"}`,
			`{"name":"podinfo","namespace":"default","severity":"error","message":"Canary analysis failed, rolling back.","fields":{},"timestamp":"2026-01-02T15:04:05.123Z"}`,
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			rcv := newHookReceiver(t)
			src := &fakeSource{providers: map[string]AlertProvider{"default/on-call": {Type: tt.kind, Address: rcv.URL + "/hook"}}}
			a, logs := newTestAlerter(t, AlerterConfig{Providers: src})
			c := canaryAlerting(functions.AlertRef{Name: "on-call", Severity: functions.SeverityInfo, ProviderRef: functions.CrossRef{Name: "on-call"}})

			a.SendAlerts(context.Background(), c, []functions.AlertMessage{revisionMsg, failedMsg})

			calls := rcv.Calls()
			if len(calls) != len(tt.wantBody) {
				t.Fatalf("receiver got %d calls, want %d; logs: %s", len(calls), len(tt.wantBody), logs)
			}
			for i, call := range calls {
				if call.Path != tt.wantPath || call.Method != http.MethodPost || call.ContentType != "application/json" {
					t.Errorf("call %d: %s %s (%s), want POST %s (application/json)", i, call.Method, call.Path, call.ContentType, tt.wantPath)
				}
				if tt.normalise {
					var got, want any
					if err := json.Unmarshal([]byte(call.Body), &got); err != nil {
						t.Fatalf("body %d is not JSON: %v", i, err)
					}
					if err := json.Unmarshal([]byte(tt.wantBody[i]), &want); err != nil {
						t.Fatalf("want body %d is not JSON: %v", i, err)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("body %d mismatch (-want +got):\n%s", i, diff)
					}
				} else if call.Body != tt.wantBody[i] {
					t.Errorf("body %d:\n got %s\nwant %s", i, call.Body, tt.wantBody[i])
				}
			}
		})
	}
}

func TestSendAlertsSeverityFilter(t *testing.T) {
	rcv := newHookReceiver(t)
	src := &fakeSource{providers: map[string]AlertProvider{}}
	var alerts []functions.AlertRef
	for _, sev := range []functions.Severity{functions.SeverityInfo, "", functions.SeverityWarn, functions.SeverityError} {
		name := "sev-" + string(sev)
		src.providers["default/"+name] = AlertProvider{Type: NotifierWebhook, Address: rcv.URL + "/" + name}
		alerts = append(alerts, functions.AlertRef{Name: name, Severity: sev, ProviderRef: functions.CrossRef{Name: name}})
	}
	a, _ := newTestAlerter(t, AlerterConfig{Providers: src})
	msgs := []functions.AlertMessage{
		{Severity: functions.SeverityInfo, Message: "i"},
		{Severity: functions.SeverityWarn, Message: "w"},
		{Severity: functions.SeverityError, Message: "e"},
		{Severity: functions.SeverityInfo, Message: "i2"},
	}

	a.SendAlerts(context.Background(), canaryAlerting(alerts...), msgs)

	got := map[string][]string{}
	for _, call := range rcv.Calls() {
		var body WebhookAlert
		if err := json.Unmarshal([]byte(call.Body), &body); err != nil {
			t.Fatalf("body %q: %v", call.Body, err)
		}
		got[call.Path] = append(got[call.Path], body.Message)
	}
	want := map[string][]string{
		"/sev-info":  {"i", "w", "e", "i2"},
		"/sev-":      {"i", "w", "e", "i2"}, // empty severity means info (Flagger's code sends nothing)
		"/sev-warn":  {"w", "e"},
		"/sev-error": {"e"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages per receiver mismatch (-want +got):\n%s", diff)
	}
}

func TestReceives(t *testing.T) {
	sevs := []functions.Severity{functions.SeverityInfo, functions.SeverityWarn, functions.SeverityError}
	want := map[functions.Severity][]bool{
		functions.SeverityInfo:  {true, true, true},
		"":                      {true, true, true},
		functions.SeverityWarn:  {false, true, true},
		functions.SeverityError: {false, false, true},
		"critical":              {false, false, false},
	}
	for alert, row := range want {
		for i, msg := range sevs {
			if got := receives(alert, msg); got != row[i] {
				t.Errorf("receives(%q, %q) = %v, want %v", alert, msg, got, row[i])
			}
		}
	}
}

func TestSendAlertsProviderResolution(t *testing.T) {
	rcv := newHookReceiver(t)
	src := &fakeSource{
		providers: map[string]AlertProvider{
			"monitoring/slack": {Type: NotifierSlack, Address: "http://wrong.invalid/hook", Username: "siskin-bot", Channel: "deploys",
				SecretRef: &SecretRef{Name: "slack-url"}},
		},
		secrets: map[string]map[string][]byte{
			"monitoring/slack-url": {"address": []byte(rcv.URL + "/from-secret\n"), "token": []byte("xoxb-1")},
		},
	}
	a, logs := newTestAlerter(t, AlerterConfig{Providers: src})
	c := canaryAlerting(functions.AlertRef{Name: "slack", ProviderRef: functions.CrossRef{Name: "slack", Namespace: "monitoring"}})

	a.SendAlerts(context.Background(), c, []functions.AlertMessage{failedMsg})

	calls := rcv.Calls()
	if len(calls) != 1 {
		t.Fatalf("receiver got %d calls, want 1; logs: %s", len(calls), logs)
	}
	if calls[0].Path != "/from-secret" || calls[0].Auth != "Bearer xoxb-1" {
		t.Errorf("call = %s with Authorization %q, want /from-secret with the secret's token", calls[0].Path, calls[0].Auth)
	}
	if !strings.Contains(calls[0].Body, `"channel":"deploys","username":"siskin-bot"`) {
		t.Errorf("body = %s, want the provider's channel and username", calls[0].Body)
	}
	if diff := cmp.Diff([]string{"provider monitoring/slack", "secret monitoring/slack-url"}, src.Reads()); diff != "" {
		t.Errorf("reads mismatch (-want +got):\n%s", diff)
	}
}

func TestSendAlertsGlobal(t *testing.T) {
	global := newHookReceiver(t)
	canaryRcv := newHookReceiver(t)
	src := &fakeSource{providers: map[string]AlertProvider{"default/team": {Type: NotifierMSTeams, Address: canaryRcv.URL}}}
	a, _ := newTestAlerter(t, AlerterConfig{Providers: src, Global: &AlertTarget{Type: NotifierSlack, URL: global.URL + "/global"}})

	a.SendAlerts(context.Background(), canaryAlerting(), []functions.AlertMessage{revisionMsg, failedMsg})
	a.SendAlerts(context.Background(), canaryAlerting(functions.AlertRef{Name: "team", ProviderRef: functions.CrossRef{Name: "team"}}), []functions.AlertMessage{failedMsg})

	if n := len(global.Calls()); n != 2 {
		t.Errorf("global notifier got %d calls, want 2 (only from the canary without alerts)", n)
	}
	if n := len(canaryRcv.Calls()); n != 1 {
		t.Errorf("canary's provider got %d calls, want 1", n)
	}

	t.Run("no global", func(t *testing.T) {
		a, _ := newTestAlerter(t, AlerterConfig{})
		c := canaryAlerting()
		c.Spec.Analysis = nil
		a.SendAlerts(context.Background(), c, []functions.AlertMessage{failedMsg}) // nothing to do, nothing to crash
	})
	t.Run("global of unknown type", func(t *testing.T) {
		if _, err := NewAlerter(AlerterConfig{Global: &AlertTarget{Type: "pagerduty", URL: "https://example.com"}}, nil); err == nil {
			t.Error("NewAlerter() error = nil, want an error for an unknown type")
		}
	})
}

func TestSendAlertsFailuresAreIsolated(t *testing.T) {
	good := newHookReceiver(t)
	broken := newHookReceiver(t, http.StatusInternalServerError)
	broken.body = "invalid_payload"
	hung := newHookReceiver(t)
	hung.hold = 5 * time.Second
	src := &fakeSource{providers: map[string]AlertProvider{
		"default/good":    {Type: NotifierSlack, Address: good.URL},
		"default/broken":  {Type: NotifierSlack, Address: broken.URL},
		"default/hung":    {Type: NotifierSlack, Address: hung.URL},
		"default/unknown": {Type: "pagerduty", Address: good.URL},
		"default/noaddr":  {Type: NotifierSlack},
	}}
	a, logs := newTestAlerter(t, AlerterConfig{Providers: src, Timeout: 100 * time.Millisecond})
	var alerts []functions.AlertRef
	for _, name := range []string{"missing", "broken", "hung", "unknown", "noaddr", "good"} {
		alerts = append(alerts, functions.AlertRef{Name: name, ProviderRef: functions.CrossRef{Name: name}})
	}

	start := time.Now()
	a.SendAlerts(context.Background(), canaryAlerting(alerts...), []functions.AlertMessage{failedMsg})
	elapsed := time.Since(start)

	if n := len(good.Calls()); n != 1 {
		t.Errorf("the good provider got %d calls, want 1", n)
	}
	if elapsed > time.Second {
		t.Errorf("SendAlerts() took %v, want about the 100ms timeout", elapsed)
	}
	for _, want := range []string{
		"get AlertProvider default/missing: not found",
		"HTTP 500: invalid_payload",
		"context deadline exceeded",
		`provider \"pagerduty\" not supported`,
		"no address in spec.address nor in the secret's key address",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not mention %q:\n%s", want, logs)
		}
	}
}

func TestSendAlertsProxy(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.String())
		mu.Unlock()
	}))
	t.Cleanup(proxy.Close)
	src := &fakeSource{providers: map[string]AlertProvider{
		"default/chat": {Type: NotifierGChat, Address: "http://chat.example.invalid/v1/spaces/AAA/messages?key=k", Proxy: proxy.URL},
	}}
	a, logs := newTestAlerter(t, AlerterConfig{Providers: src})

	a.SendAlerts(context.Background(), canaryAlerting(functions.AlertRef{Name: "chat", ProviderRef: functions.CrossRef{Name: "chat"}}), []functions.AlertMessage{failedMsg})

	want := []string{"POST http://chat.example.invalid/v1/spaces/AAA/messages?key=k"}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("proxy requests mismatch (-want +got):\n%s\nlogs: %s", diff, logs)
	}
}

func TestDiscordAddress(t *testing.T) {
	tests := map[string]string{
		"https://discord.com/api/webhooks/1/abc":        "https://discord.com/api/webhooks/1/abc/slack",
		"https://discord.com/api/webhooks/1/abc/slack":  "https://discord.com/api/webhooks/1/abc/slack",
		"https://discord.com/api/webhooks/1/abc/":       "https://discord.com/api/webhooks/1/abc/slack",
		"https://discord.com/api/webhooks/1/abc?wait=1": "https://discord.com/api/webhooks/1/abc/slack?wait=1",
	}
	for in, want := range tests {
		got, _, err := encode(receiver{kind: NotifierDiscord, address: in}, notification{})
		if err != nil || got != want {
			t.Errorf("encode(discord %q) = (%q, %v), want %q", in, got, err, want)
		}
	}
}

func TestAlertFields(t *testing.T) {
	withAnalysis := func(f func(*functions.Analysis)) functions.Canary {
		c := seedCanary()
		f(c.Spec.Analysis)
		return c
	}
	base := []field{{"Target", "Deployment/podinfo.default"}, {"Failed checks threshold", "5"}, {"Progress deadline", "600s"}}
	tests := []struct {
		name     string
		cluster  string
		c        functions.Canary
		metadata bool
		want     []field
	}{
		{"no metadata", "", seedCanary(), false, nil},
		{"no metadata but a cluster", "prod-eu", seedCanary(), false, []field{{"Cluster", "prod-eu"}}},
		{"step weight", "", seedCanary(), true, append(base, field{"Traffic routing", "Weight step: 5 max: 50"})},
		{"cluster first", "prod-eu", seedCanary(), true,
			append([]field{{"Cluster", "prod-eu"}}, append(base, field{"Traffic routing", "Weight step: 5 max: 50"})...)},
		{"step weights", "", withAnalysis(func(a *functions.Analysis) { a.StepWeight, a.MaxWeight, a.StepWeights = 0, 0, []int{1, 2, 10, 80} }), true,
			append(base, field{"Traffic routing", "Weight steps: 1,2,10,80 max: 80"})},
		{"A/B testing", "", withAnalysis(func(a *functions.Analysis) {
			a.StepWeight, a.Iterations, a.Match = 0, 10, json.RawMessage(`[{"headers":{"x-canary":{"exact":"insider"}}}]`)
		}), true, append(base, field{"Traffic routing", "A/B Testing"})},
		{"blue/green", "", withAnalysis(func(a *functions.Analysis) { a.StepWeight, a.Iterations = 0, 10 }), true,
			append(base, field{"Traffic routing", "Blue/Green"})},
		{"defaults and another kind", "", func() functions.Canary {
			c := seedCanary()
			c.Spec.TargetRef.Kind = "DaemonSet"
			c.Spec.ProgressDeadlineSeconds = ptr(int32(120))
			c.Spec.Analysis = &functions.Analysis{}
			return c
		}(), true, []field{{"Target", "DaemonSet/podinfo.default"}, {"Failed checks threshold", "1"}, {"Progress deadline", "120s"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := newTestAlerter(t, AlerterConfig{ClusterName: tt.cluster})
			got := a.fields(tt.c, tt.metadata)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(field{})); diff != "" {
				t.Errorf("fields() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// Slack reads the text as mrkdwn: a reason or an alert name from a user must not mention the
// channel or hide a link.
func TestSlackEscapesMrkdwn(t *testing.T) {
	n := notification{name: "podinfo", namespace: "default", message: "Canary aborted: <!channel> see <https://evil.example|the logs> & more",
		fields: []field{{name: "Reason", value: "<@U123>"}}}
	_, body, err := encode(receiver{kind: NotifierSlack, address: "https://hooks.slack.com/services/x"}, n)
	if err != nil {
		t.Fatal(err)
	}
	var got slackMessage
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	a := got.Attachments[0]
	if want := "Canary aborted: &lt;!channel&gt; see &lt;https://evil.example|the logs&gt; &amp; more"; a.Text != want {
		t.Errorf("text: got %q, want %q", a.Text, want)
	}
	if a.Fields[0].Value != "&lt;@U123&gt;" {
		t.Errorf("field: got %q", a.Fields[0].Value)
	}
}
