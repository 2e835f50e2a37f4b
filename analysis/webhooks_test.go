package analysis

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// hookCall is one request a receiver got.
type hookCall struct {
	Path        string
	ContentType string
	Method      string
	Body        string
	Auth        string // the Authorization header
}

// hookReceiver answers webhooks with a scripted status per attempt (the last one repeats).
type hookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	calls    []hookCall
	statuses []int
	body     string
	header   http.Header
	hold     time.Duration // delay before answering, cut short when the client gives up
}

func newHookReceiver(t *testing.T, statuses ...int) *hookReceiver {
	t.Helper()
	r := &hookReceiver{statuses: statuses}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.calls = append(r.calls, hookCall{Path: req.URL.Path, ContentType: req.Header.Get("Content-Type"), Method: req.Method, Body: string(b), Auth: req.Header.Get("Authorization")})
	status := http.StatusOK
	if n := len(r.calls); len(r.statuses) > 0 {
		status = r.statuses[min(n, len(r.statuses))-1]
	}
	body, hold := r.body, r.hold
	for k, vs := range r.header {
		w.Header()[k] = vs
	}
	r.mu.Unlock()
	if hold > 0 {
		select {
		case <-time.After(hold):
		case <-req.Context().Done():
			return
		}
	}
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

func (r *hookReceiver) Calls() []hookCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookCall(nil), r.calls...)
}

func newTestHooks(cfg HooksConfig) *Hooks {
	if cfg.RetryWaitMin == 0 {
		cfg.RetryWaitMin, cfg.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	}
	log, _ := newTestLogger()
	return NewHooks(cfg, log)
}

func TestCallHooksPayload(t *testing.T) {
	rcv := newHookReceiver(t)
	h := newTestHooks(HooksConfig{})
	hooks := []functions.Webhook{
		{Type: functions.HookPreRollout, Name: "load-test", URL: rcv.URL + "/load", Metadata: map[string]string{"type": "cmd", "cmd": "hey -z 1m http://podinfo-canary.default:9898/"}},
		{Type: functions.HookPreRollout, Name: "plain", URL: rcv.URL + "/plain"},
	}

	got := h.CallHooks(context.Background(), seedCanary(), hooks, functions.HookCall{Phase: functions.PhaseProgressing, Checksum: "6d4f9c"}, true)

	want := []functions.HookResult{{Name: "load-test", OK: true}, {Name: "plain", OK: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CallHooks() mismatch (-want +got):\n%s", diff)
	}
	wantCalls := []hookCall{
		{Path: "/load", ContentType: "application/json", Method: http.MethodPost,
			Body: `{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"6d4f9c","metadata":{"cmd":"hey -z 1m http://podinfo-canary.default:9898/","type":"cmd"}}`},
		{Path: "/plain", ContentType: "application/json", Method: http.MethodPost,
			Body: `{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"6d4f9c"}`},
	}
	if diff := cmp.Diff(wantCalls, rcv.Calls()); diff != "" {
		t.Errorf("receiver calls mismatch (-want +got):\n%s", diff)
	}
}

func TestCallHooksStatus(t *testing.T) {
	tests := []struct {
		status     int
		body       string
		wantOK     bool
		wantDetail string
	}{
		{200, "", true, ""},
		{201, "", true, ""},
		{202, "queued", true, ""},
		// Flagger's rule is status <= 202: the rest of 2xx fails.
		{203, "", false, "HTTP 203 Non-Authoritative Information"},
		{204, "", false, "HTTP 204 No Content"},
		{403, "  gate closed\n", false, "gate closed"},
		{500, "command failed: exit status 1\n", false, "command failed: exit status 1"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			rcv := newHookReceiver(t, tt.status)
			rcv.body = tt.body
			h := newTestHooks(HooksConfig{})
			hook := functions.Webhook{Type: functions.HookConfirmRollout, Name: "gate", URL: rcv.URL + "/gate/check"}

			got := h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{hook}, functions.HookCall{Phase: functions.PhaseWaiting}, true)

			want := []functions.HookResult{{Name: "gate", OK: tt.wantOK, Detail: tt.wantDetail}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("CallHooks() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCallHooksLongBodyIsCut(t *testing.T) {
	rcv := newHookReceiver(t, 500)
	rcv.body = strings.Repeat("x", 5000)
	h := newTestHooks(HooksConfig{})
	got := h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{{Name: "h", URL: rcv.URL}}, functions.HookCall{}, true)
	if want := strings.Repeat("x", maxDetail) + "…"; got[0].Detail != want {
		t.Errorf("Detail has %d bytes, want %d", len(got[0].Detail), len(want))
	}
}

func TestCallHooksRetries(t *testing.T) {
	tests := []struct {
		name       string
		statuses   []int
		retries    int
		wantCalls  int
		wantOK     bool
		wantDetail string
	}{
		{"no retries by default", []int{500, 200}, 0, 1, false, "boom"},
		{"5xx retried until success", []int{500, 503, 200}, 2, 3, true, ""},
		{"5xx retried until retries run out", []int{500}, 2, 3, false, "boom (after 3 attempts)"},
		{"429 retried", []int{429, 202}, 1, 2, true, ""},
		{"501 not retried", []int{501}, 3, 1, false, "boom"},
		{"4xx not retried", []int{403}, 3, 1, false, "boom"},
		{"2xx failure not retried", []int{204}, 3, 1, false, "HTTP 204 No Content"},
		{"negative retries mean none", []int{500}, -1, 1, false, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := newHookReceiver(t, tt.statuses...)
			rcv.body = "boom"
			h := newTestHooks(HooksConfig{})
			hook := functions.Webhook{Name: "h", URL: rcv.URL, Retries: tt.retries}

			got := h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{hook}, functions.HookCall{}, true)

			if n := len(rcv.Calls()); n != tt.wantCalls {
				t.Errorf("receiver got %d calls, want %d", n, tt.wantCalls)
			}
			want := functions.HookResult{Name: "h", OK: tt.wantOK, Detail: tt.wantDetail}
			if tt.wantOK {
				want.Detail = ""
			}
			if diff := cmp.Diff(want, got[0]); diff != "" {
				t.Errorf("CallHooks() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCallHooksRetriesConnectionErrors(t *testing.T) {
	var (
		mu    sync.Mutex
		calls int
	)
	// The first two connections are dropped without an answer, then the hook answers.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n <= 2 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	h := newTestHooks(HooksConfig{})

	got := h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{{Name: "h", URL: srv.URL, Retries: 2}}, functions.HookCall{}, true)

	if !got[0].OK || calls != 3 {
		t.Errorf("result %+v after %d calls, want OK after 3", got[0], calls)
	}
}

func TestCallHooksTimeout(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.hold = 5 * time.Second
	h := newTestHooks(HooksConfig{})
	hooks := []functions.Webhook{{Name: "slow", URL: rcv.URL, Timeout: "100ms", Retries: 1}}

	start := time.Now()
	got := h.CallHooks(context.Background(), seedCanary(), hooks, functions.HookCall{}, true)
	elapsed := time.Since(start)

	want := []functions.HookResult{{Name: "slow", Detail: "timeout: no response within 100ms (after 2 attempts)"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CallHooks() mismatch (-want +got):\n%s", diff)
	}
	if n := len(rcv.Calls()); n != 2 {
		t.Errorf("receiver got %d calls, want 2 (a timeout is retried)", n)
	}
	if elapsed > 2*time.Second {
		t.Errorf("CallHooks() took %v, want about 2 x 100ms", elapsed)
	}
}

func TestCallHooksCallerDeadline(t *testing.T) {
	rcv := newHookReceiver(t, 500)
	rcv.hold = 5 * time.Second
	h := newTestHooks(HooksConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()

	start := time.Now()
	got := h.CallHooks(ctx, seedCanary(), []functions.Webhook{{Name: "slow", URL: rcv.URL, Retries: 5}}, functions.HookCall{}, true)

	if got[0].OK || !strings.Contains(got[0].Detail, "context deadline exceeded") {
		t.Errorf("result = %+v, want a failure naming the caller's deadline", got[0])
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("CallHooks() took %v, want about the caller's 100ms", elapsed)
	}
}

func TestCallHooksOrderAndStop(t *testing.T) {
	rcv := newHookReceiver(t)
	fail := newHookReceiver(t, http.StatusForbidden)
	fail.body = "denied"
	hooks := []functions.Webhook{
		{Name: "first", URL: rcv.URL + "/first"},
		{Name: "second", URL: fail.URL + "/second"},
		{Name: "third", URL: rcv.URL + "/third"},
	}
	h := newTestHooks(HooksConfig{})

	for _, stop := range []bool{true, false} {
		t.Run(fmt.Sprintf("stopAtFailure=%v", stop), func(t *testing.T) {
			before := len(rcv.Calls())
			got := h.CallHooks(context.Background(), seedCanary(), hooks, functions.HookCall{}, stop)

			want := []functions.HookResult{{Name: "first", OK: true}, {Name: "second", Detail: "denied"}}
			wantPaths := []string{"/first"}
			if !stop {
				want = append(want, functions.HookResult{Name: "third", OK: true})
				wantPaths = append(wantPaths, "/third")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("CallHooks() mismatch (-want +got):\n%s", diff)
			}
			var paths []string
			for _, c := range rcv.Calls()[before:] {
				paths = append(paths, c.Path)
			}
			if diff := cmp.Diff(wantPaths, paths); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCallHooksTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	h := newTestHooks(HooksConfig{})

	got := h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{
		{Name: "insecure", URL: srv.URL, DisableTLS: true},
		{Name: "verified", URL: srv.URL, Retries: 3},
	}, functions.HookCall{}, false)

	if !got[0].OK {
		t.Errorf("disableTLS hook = %+v, want OK", got[0])
	}
	if got[1].OK || !strings.Contains(got[1].Detail, "certificate") || strings.Contains(got[1].Detail, "attempts") {
		t.Errorf("verified hook = %+v, want a certificate failure that is not retried", got[1])
	}
}

func TestCallHooksBadURL(t *testing.T) {
	h := newTestHooks(HooksConfig{})
	got := h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{
		{Name: "empty"},
		{Name: "scheme", URL: "ftp://example.com/hook", Retries: 3},
	}, functions.HookCall{}, false)
	if got[0].OK || got[0].Detail != "webhook has no url" {
		t.Errorf("empty url = %+v, want a failure", got[0])
	}
	if got[1].OK || !strings.Contains(got[1].Detail, "unsupported protocol scheme") || strings.Contains(got[1].Detail, "attempts") {
		t.Errorf("ftp url = %+v, want an unretried failure", got[1])
	}
}

func TestSendEvent(t *testing.T) {
	at := time.UnixMilli(1700000000123)
	c := seedCanary()
	c.Status = functions.Status{Phase: functions.PhaseProgressing, LastAppliedSpec: "5f7b8c9d", TrackedConfigs: map[string]string{"configmap/podinfo-config": "abc"}}

	t.Run("event hooks", func(t *testing.T) {
		rcv := newHookReceiver(t)
		other := newHookReceiver(t, 500)
		global := newHookReceiver(t)
		c := c
		c.Spec.Analysis = &functions.Analysis{Webhooks: []functions.Webhook{
			{Type: functions.HookEvent, Name: "events", URL: rcv.URL + "/events", Metadata: map[string]string{"eventType": "mine", "team": "shop"}},
			{Type: functions.HookRollout, Name: "not-an-event-hook", URL: rcv.URL + "/rollout"},
			{Type: functions.HookEvent, Name: "broken", URL: other.URL},
		}}
		log, logs := newTestLogger()
		h := NewHooks(HooksConfig{EventWebhookURL: global.URL, Now: func() time.Time { return at }, RetryWaitMin: time.Millisecond}, log)

		got := h.SendEvent(context.Background(), c, functions.Event{Warning: true, Message: "Halt advancement podinfo-primary.default waiting for rollout to finish"})

		want := []functions.HookResult{{Name: "events", OK: true}, {Name: "broken", Detail: "HTTP 500 Internal Server Error"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("SendEvent() mismatch (-want +got):\n%s", diff)
		}
		wantBody := `{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"` + Checksum(c.Status) + `",` +
			`"metadata":{"eventMessage":"Halt advancement podinfo-primary.default waiting for rollout to finish","eventType":"Warning","team":"shop","timestamp":"1700000000123"}}`
		calls := rcv.Calls()
		if len(calls) != 1 || calls[0].Path != "/events" {
			t.Fatalf("receiver calls = %+v, want one on /events", calls)
		}
		if calls[0].Body != wantBody {
			t.Errorf("body = %s\nwant   %s", calls[0].Body, wantBody)
		}
		if n := len(global.Calls()); n != 0 {
			t.Errorf("global event webhook got %d calls, want none: the canary has its own", n)
		}
		if !strings.Contains(logs.String(), "event webhook failed") {
			t.Errorf("logs = %q, want the failure logged", logs.String())
		}
	})

	t.Run("global event webhook", func(t *testing.T) {
		global := newHookReceiver(t)
		h := NewHooks(HooksConfig{EventWebhookURL: global.URL, Now: func() time.Time { return at }}, nil)

		got := h.SendEvent(context.Background(), c, functions.Event{Message: "New revision detected! Scaling up podinfo.default"})

		if diff := cmp.Diff([]functions.HookResult{{Name: "events", OK: true}}, got); diff != "" {
			t.Errorf("SendEvent() mismatch (-want +got):\n%s", diff)
		}
		wantBody := `{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"` + Checksum(c.Status) + `",` +
			`"metadata":{"eventMessage":"New revision detected! Scaling up podinfo.default","eventType":"Normal","timestamp":"1700000000123"}}`
		if calls := global.Calls(); len(calls) != 1 || calls[0].Body != wantBody {
			t.Errorf("calls = %+v, want one with body %s", calls, wantBody)
		}
	})

	t.Run("nowhere to send", func(t *testing.T) {
		h := NewHooks(HooksConfig{}, nil)
		if got := h.SendEvent(context.Background(), c, functions.Event{Message: "x"}); got != nil {
			t.Errorf("SendEvent() = %v, want nil", got)
		}
	})
}

func TestChecksum(t *testing.T) {
	base := functions.Status{LastAppliedSpec: "abc", TrackedConfigs: map[string]string{"configmap/a": "1", "secret/b": "2"}}
	same := functions.Status{Phase: functions.PhaseSucceeded, CanaryWeight: 50, LastAppliedSpec: "abc",
		TrackedConfigs: map[string]string{"secret/b": "2", "configmap/a": "1"}}
	if Checksum(base) != Checksum(same) {
		t.Errorf("Checksum differs for the same spec and configs: %s vs %s", Checksum(base), Checksum(same))
	}
	for name, st := range map[string]functions.Status{
		"spec":    {LastAppliedSpec: "abd", TrackedConfigs: base.TrackedConfigs},
		"configs": {LastAppliedSpec: "abc", TrackedConfigs: map[string]string{"configmap/a": "1", "secret/b": "3"}},
		"none":    {LastAppliedSpec: "abc"},
	} {
		if Checksum(st) == Checksum(base) {
			t.Errorf("Checksum unchanged when %s changes", name)
		}
	}
	if got := Checksum(base); len(got) != 16 {
		t.Errorf("Checksum() = %q, want 16 hex digits", got)
	}
}

// Regression: event webhooks were told a checksum computed differently from the one the other
// webhooks get, so a receiver could not match an event to the revision its hooks saw.
func TestEventChecksumIsTheHooksChecksum(t *testing.T) {
	for name, st := range map[string]functions.Status{
		"configs":      {LastAppliedSpec: "abc", TrackedConfigs: map[string]string{"configmap/a": "1", "secret/b": "2"}},
		"no configs":   {LastAppliedSpec: "abc"},
		"empty map":    {LastAppliedSpec: "abc", TrackedConfigs: map[string]string{}},
		"empty status": {},
	} {
		t.Run(name, func(t *testing.T) {
			hooks := functions.Checksum(functions.State{Phase: functions.PhaseProgressing, LastAppliedSpec: st.LastAppliedSpec, TrackedConfigs: st.TrackedConfigs})
			if got := Checksum(st); got != hooks {
				t.Errorf("event checksum %s, want the hooks' %s", got, hooks)
			}
		})
	}
	if Checksum(functions.Status{LastAppliedSpec: "abc", TrackedConfigs: map[string]string{}}) != Checksum(functions.Status{LastAppliedSpec: "abc"}) {
		t.Error("an empty trackedConfigs map and none give different checksums")
	}
}

func TestBackoff(t *testing.T) {
	h := NewHooks(HooksConfig{RetryWaitMin: 100 * time.Millisecond, RetryWaitMax: time.Second}, nil)
	tests := []struct {
		attempt    int
		retryAfter string
		want       time.Duration
	}{
		{1, "", 100 * time.Millisecond},
		{2, "", 200 * time.Millisecond},
		{4, "", 800 * time.Millisecond},
		{5, "", time.Second},
		{70, "", time.Second},
		{1, "0", 0},
		{1, "30", time.Second},
		{1, "Wed, 21 Oct 2015 07:28:00 GMT", 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := h.backoff(tt.attempt, tt.retryAfter); got != tt.want {
			t.Errorf("backoff(%d, %q) = %v, want %v", tt.attempt, tt.retryAfter, got, tt.want)
		}
	}
}

// A hook that never answers must not slow the hooks of another canary called at the same time.
func TestCallHooksSlowHookIsolated(t *testing.T) {
	slow := newHookReceiver(t)
	slow.hold = 5 * time.Second
	fast := newHookReceiver(t)
	h := newTestHooks(HooksConfig{})

	var wg sync.WaitGroup
	var fastTook time.Duration
	wg.Go(func() {
		h.CallHooks(context.Background(), seedCanary(), []functions.Webhook{{Name: "slow", URL: slow.URL, Timeout: "1s"}}, functions.HookCall{}, true)
	})
	wg.Go(func() {
		time.Sleep(50 * time.Millisecond) // the slow hook is in flight
		start := time.Now()
		other := seedCanary()
		other.Name = "other"
		h.CallHooks(context.Background(), other, []functions.Webhook{{Name: "fast", URL: fast.URL}}, functions.HookCall{}, true)
		fastTook = time.Since(start)
	})
	wg.Wait()
	if fastTook > 500*time.Millisecond {
		t.Errorf("the fast hook took %v while another canary's hook hung, want well under the 1s timeout", fastTook)
	}
}
