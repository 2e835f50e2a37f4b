package handlers

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// uiFake is a fleet of canaries for the dashboard.
type uiFake struct {
	*fakeReleases
	mu    sync.Mutex
	views map[functions.Key]functions.CanaryView
}

const evilName = `<script>alert("name")</script>`

// evilHTML is what an alert annotation or a message could carry.
const evilHTML = `<img src=x onerror="alert('annotation')"><b>bold</b>`

func newUIFake() *uiFake {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &uiFake{fakeReleases: &fakeReleases{}, views: map[functions.Key]functions.CanaryView{}}
	for _, v := range []functions.CanaryView{
		{Key: functions.Key{Namespace: "shop", Name: "checkout"}, Phase: functions.PhaseProgressing, Weight: 20, PrimaryWeight: 80,
			FailedChecks: 1, Threshold: 5, MaxWeight: 50, StepWeight: 10, Interval: "10s", LastTransitionTime: t0, LastStepAt: t0.Add(time.Minute)},
		{Key: functions.Key{Namespace: "shop", Name: "cart"}, Phase: functions.PhaseSucceeded, Threshold: 5, MaxWeight: 50,
			LastTransitionTime: t0, LastStepAt: t0.Add(2 * time.Minute)},
		{Key: functions.Key{Namespace: "web", Name: evilName}, Phase: functions.PhaseFailed, Threshold: 2, MaxWeight: 30,
			LastTransitionTime: t0, LastStepAt: t0, Message: "Canary aborted: " + evilHTML,
			Trigger: &functions.Trigger{Kind: "alert", Detail: evilHTML, Source: "http://prometheus/graph?g0=" + evilHTML}},
	} {
		f.views[v.Key] = v
	}
	return f
}

func (f *uiFake) Views(ctx context.Context, ns string) ([]functions.CanaryView, error) {
	f.record("views " + ns)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []functions.CanaryView
	for _, v := range f.views {
		out = append(out, v)
	}
	return out, nil
}

func (f *uiFake) Detail(ctx context.Context, k functions.Key) (functions.CanaryDetail, error) {
	f.record("detail " + k.String())
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.views[k]
	if !ok {
		return functions.CanaryDetail{}, functions.ErrNotFound
	}
	at := v.LastTransitionTime
	if k.Name == "checkout" {
		return functions.CanaryDetail{CanaryView: v, Description: "10 % steps to 50 % every 10s; rollback after 5 failed checks",
			Metrics: []functions.MetricSpec{{Name: "request-success-rate", Pass: "≥ 99 %"}}, Webhooks: []functions.HookSpec{},
			Alerts: []string{}, Target: "Deployment checkout", Releases: []functions.Release{release(at)}, Events: []functions.EventRecord{
				{Time: at, Type: "Normal", Message: "New revision detected! Scaling up checkout.shop", Count: 1}}}, nil
	}
	return functions.CanaryDetail{CanaryView: v, Description: "10 % steps to 50 % every 10s; rollback after 5 failed checks",
		Metrics:  []functions.MetricSpec{{Name: "request-success-rate", Pass: "≥ 99 %"}},
		Webhooks: []functions.HookSpec{{Type: functions.HookRollout, Name: "load-" + evilHTML}}, Alerts: []string{"on-call"},
		Target: "Deployment " + v.Name,
		Releases: []functions.Release{{ID: "1", Start: at, Outcome: v.Phase, Trigger: v.Trigger, Steps: []functions.StepRecord{
			{At: at, Kind: "abort", To: v.Phase, Reason: evilHTML, Alerts: []functions.AlertNote{{Severity: "error", Message: evilHTML}}},
		}}},
		Events: []functions.EventRecord{{Time: at, Type: "Warning", Message: "Rolling back: " + evilHTML, Count: 1}},
	}, nil
}

// release is a release in flight: weight 0 to 20, a failed check, webhooks, an alert.
func release(at time.Time) functions.Release {
	lo, hi := 99.0, 500.0
	r := functions.Release{ID: "2", Start: at, Outcome: functions.PhaseProgressing,
		Trigger: &functions.Trigger{Kind: "push", Detail: "registry.example/shop/checkout:2.0.0", At: at}}
	for i, w := range []int{0, 0, 10, 10, 20} {
		s := functions.StepRecord{At: at.Add(time.Duration(i) * 10 * time.Second), Kind: "step", From: functions.PhaseProgressing,
			To: functions.PhaseProgressing, Weight: w, PrimaryWeight: 100 - w, Threshold: 5, Decision: "hold",
			Metrics: []functions.MetricCheck{
				{Name: "request-success-rate", Value: 99.9, Min: &lo, OK: true},
				{Name: "request-duration", Value: 120 + float64(i*40), Max: &hi, OK: true},
			}}
		if i == 3 {
			s.Metrics[0].Value, s.Metrics[0].OK, s.FailedChecks = 97.5, false, 1
			s.Reason = "Halt checkout.shop advancement success rate 97.50% < 99%"
		}
		if i == 1 {
			s.Hooks = []functions.HookCheck{{Type: functions.HookPreRollout, Name: "smoke", OK: true}}
		}
		if i == 4 {
			s.Alerts = []functions.AlertNote{{Severity: "info", Message: "Advance checkout.shop canary weight 20"}}
		}
		r.Steps = append(r.Steps, s)
	}
	return r
}

func (f *uiFake) Abort(ctx context.Context, k functions.Key, reason string) (functions.StepReport, bool, error) {
	f.record("abort " + k.String() + " " + reason)
	return functions.StepReport{Key: k, From: functions.PhaseProgressing, To: functions.PhaseFailed, Message: "Canary aborted: " + reason}, true, nil
}

func newUIServer(t *testing.T, f *uiFake, mutate func(*Options)) *httptest.Server {
	t.Helper()
	opts := Options{WebhookTokens: []string{token}, APITokens: []string{apiToken, "0ld-operator"}}
	if mutate != nil {
		mutate(&opts)
	}
	srv := httptest.NewServer(New(f, opts, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv
}

// do sends a request without following redirects.
func do(t *testing.T, method, u string, body io.Reader, headers map[string]string, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func form(vals url.Values) (io.Reader, map[string]string) {
	return strings.NewReader(vals.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
}

// login logs in with tok and returns the session cookie.
func login(t *testing.T, srv *httptest.Server, tok string) *http.Cookie {
	t.Helper()
	body, h := form(url.Values{"token": {tok}, "next": {"/ui/"}})
	resp, page := do(t, "POST", srv.URL+"/ui/login", body, h)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: got %d, want 303:\n%s", resp.StatusCode, page)
	}
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			return c
		}
	}
	t.Fatal("login set no session cookie")
	return nil
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// csrfOf reads the CSRF token a page carries.
func csrfOf(t *testing.T, srv *httptest.Server, c *http.Cookie) string {
	t.Helper()
	_, page := do(t, "GET", srv.URL+"/ui/", nil, nil, c)
	m := csrfMeta.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the fleet page:\n%s", page)
	}
	return m[1]
}

func TestUIRequiresLogin(t *testing.T) {
	srv := newUIServer(t, newUIFake(), nil)
	tests := []struct {
		name, method, path string
		headers            map[string]string
		wantCode           int
		wantLocation       string
	}{
		{"fleet page goes to the login", "GET", "/ui/", nil, 303, "/ui/login?next=%2Fui%2F"},
		{"canary page too", "GET", "/ui/canaries/shop/checkout", nil, 303, "/ui/login?next=%2Fui%2Fcanaries%2Fshop%2Fcheckout"},
		{"/ui redirects", "GET", "/ui", nil, 301, "/ui/"},
		{"JSON needs a session", "GET", "/ui/api/canaries", nil, 401, ""},
		{"or the operator's token", "GET", "/ui/api/canaries", map[string]string{"Authorization": "Bearer " + apiToken}, 200, ""},
		{"a sender's token is refused", "GET", "/ui/api/canaries", map[string]string{"Authorization": "Bearer " + token}, 403, ""},
		{"a bad token", "GET", "/ui/api/canaries", map[string]string{"Authorization": "Bearer nope"}, 401, ""},
		{"a forged cookie", "GET", "/ui/api/canaries", map[string]string{"Cookie": sessionCookie + "=djF8OTk5OTk5OTk5OXx4.AAAA"}, 401, ""},
		{"gates need a session", "POST", "/ui/api/canaries/shop/checkout/abort", nil, 401, ""},
		{"the login page is open", "GET", "/ui/login", nil, 200, ""},
		{"static files are open", "GET", "/ui/static/app.css", nil, 200, ""},
		{"scripts", "GET", "/ui/static/common.js", nil, 200, ""},
		{"no directory listing", "GET", "/ui/static/", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, srv.URL+tc.path, nil, tc.headers)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tc.wantCode, body)
			}
			if got := resp.Header.Get("Location"); got != tc.wantLocation {
				t.Errorf("Location: got %q, want %q", got, tc.wantLocation)
			}
		})
	}
}

func TestUILoginAndLogout(t *testing.T) {
	srv := newUIServer(t, newUIFake(), nil)
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			tok      string
			wantCode int
			wantText string
		}{{"wrong", 401, "not an operator token"}, {token, 403, "senders&#39; webhook token"}, {"", 401, "not an operator token"}} {
			body, h := form(url.Values{"token": {tc.tok}})
			resp, page := do(t, "POST", srv.URL+"/ui/login", body, h)
			if resp.StatusCode != tc.wantCode || !strings.Contains(page, tc.wantText) {
				t.Errorf("token %q: got %d, want %d and %q in:\n%s", tc.tok, resp.StatusCode, tc.wantCode, tc.wantText, page)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("token %q: a refused login set cookies %v", tc.tok, resp.Cookies())
			}
		}
	})
	c := login(t, srv, apiToken)
	t.Run("cookie", func(t *testing.T) {
		if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" {
			t.Errorf("cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/ui/", c)
		}
		if strings.Contains(c.Value, apiToken) {
			t.Error("the session cookie carries the token")
		}
	})
	t.Run("pages open", func(t *testing.T) {
		resp, page := do(t, "GET", srv.URL+"/ui/", nil, nil, c)
		if resp.StatusCode != 200 || !strings.Contains(page, "checkout") {
			t.Fatalf("fleet page: got %d:\n%s", resp.StatusCode, page)
		}
		resp, body := do(t, "GET", srv.URL+"/ui/api/canaries/shop/checkout", nil, nil, c)
		if resp.StatusCode != 200 || !strings.Contains(body, `"description":"10 % steps to 50 % every 10s`) {
			t.Fatalf("canary JSON: got %d:\n%s", resp.StatusCode, body)
		}
	})
	t.Run("a login with the rotated-in token opens a session too", func(t *testing.T) {
		c2 := login(t, srv, "0ld-operator")
		if resp, _ := do(t, "GET", srv.URL+"/ui/api/canaries", nil, nil, c2); resp.StatusCode != 200 {
			t.Errorf("got %d", resp.StatusCode)
		}
	})
	t.Run("next stays on the dashboard", func(t *testing.T) {
		for next, want := range map[string]string{"/ui/canaries/shop/cart": "/ui/canaries/shop/cart", "//evil.example/ui/": "/ui/",
			"https://evil.example/": "/ui/", "/ui/\\evil": "/ui/"} {
			body, h := form(url.Values{"token": {apiToken}, "next": {next}})
			resp, _ := do(t, "POST", srv.URL+"/ui/login", body, h)
			if got := resp.Header.Get("Location"); got != want {
				t.Errorf("next %q: went to %q, want %q", next, got, want)
			}
		}
	})
	t.Run("logout needs the CSRF token", func(t *testing.T) {
		body, h := form(url.Values{})
		if resp, _ := do(t, "POST", srv.URL+"/ui/logout", body, h, c); resp.StatusCode != 403 {
			t.Errorf("logout without CSRF: got %d, want 403", resp.StatusCode)
		}
	})
	t.Run("logout", func(t *testing.T) {
		body, h := form(url.Values{"csrf": {csrfOf(t, srv, c)}})
		resp, _ := do(t, "POST", srv.URL+"/ui/logout", body, h, c)
		if resp.StatusCode != 303 || resp.Header.Get("Location") != "/ui/login" {
			t.Fatalf("logout: got %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		cleared := false
		for _, k := range resp.Cookies() {
			cleared = cleared || (k.Name == sessionCookie && k.MaxAge < 0 && k.Value == "")
		}
		if !cleared {
			t.Errorf("logout did not clear the cookie: %v", resp.Cookies())
		}
	})
}

func TestUISessionsEnd(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	key, other := sessionKey("a"), sessionKey("b")
	_, value := newSession(key, now, time.Hour)
	tests := []struct {
		name  string
		value string
		keys  [][]byte
		at    time.Time
		ok    bool
	}{
		{"valid", value, [][]byte{other, key}, now.Add(time.Minute), true},
		{"expired", value, [][]byte{key}, now.Add(time.Hour), false},
		{"its token rotated out", value, [][]byte{other}, now, false},
		{"tampered", strings.Replace(value, ".", "x.", 1), [][]byte{key}, now, false},
		{"garbage", "nope", [][]byte{key}, now, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifySession(tc.value, tc.keys, tc.at)
			if got := err == nil; got != tc.ok {
				t.Errorf("verified: got %v, want %v (%v)", got, tc.ok, err)
			}
		})
	}
}

func TestUIGatesNeedCSRF(t *testing.T) {
	f := newUIFake()
	srv := newUIServer(t, f, nil)
	c := login(t, srv, apiToken)
	good := csrfOf(t, srv, c)
	other := csrfOf(t, srv, login(t, srv, apiToken)) // another session's
	gate := srv.URL + "/ui/api/canaries/shop/checkout/abort?reason=bad+build"
	tests := []struct {
		name     string
		headers  map[string]string
		cookie   bool
		wantCode int
		wantCall bool
	}{
		{"no CSRF token", nil, true, 403, false},
		{"a wrong one", map[string]string{csrfHeader: "x"}, true, 403, false},
		{"another session's", map[string]string{csrfHeader: other}, true, 403, false},
		{"from another origin", map[string]string{csrfHeader: good, "Origin": "https://evil.example"}, true, 403, false},
		{"cross-site", map[string]string{csrfHeader: good, "Sec-Fetch-Site": "cross-site"}, true, 403, false},
		{"the session's token", map[string]string{csrfHeader: good, "Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}, true, 200, true},
		{"a bearer token needs none", map[string]string{"Authorization": "Bearer " + apiToken}, false, 200, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.fakeReleases.reset()
			var cookies []*http.Cookie
			if tc.cookie {
				cookies = append(cookies, c)
			}
			resp, body := do(t, "POST", gate, nil, tc.headers, cookies...)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tc.wantCode, body)
			}
			called := len(f.fakeReleases.snapshot()) > 0
			if called != tc.wantCall {
				t.Errorf("gate called: %v (%v), want %v", called, f.fakeReleases.snapshot(), tc.wantCall)
			}
			if tc.wantCall && f.fakeReleases.snapshot()[0] != "abort shop/checkout bad build" {
				t.Errorf("call: got %q", f.fakeReleases.snapshot()[0])
			}
		})
	}
	t.Run("unknown gate", func(t *testing.T) {
		resp, _ := do(t, "POST", srv.URL+"/ui/api/canaries/shop/checkout/delete", nil, map[string]string{csrfHeader: good}, c)
		if resp.StatusCode != 404 {
			t.Errorf("got %d, want 404", resp.StatusCode)
		}
	})
}

func TestUIReadOnly(t *testing.T) {
	f := newUIFake()
	srv := newUIServer(t, f, func(o *Options) { o.UIReadOnly = true })
	c := login(t, srv, apiToken)
	_, page := do(t, "GET", srv.URL+"/ui/canaries/shop/checkout", nil, nil, c)
	if strings.Contains(page, `data-gate=`) || !strings.Contains(page, "read-only") {
		t.Errorf("a read-only canary page shows gate buttons, or does not say it is read-only:\n%s", page)
	}
	f.fakeReleases.reset()
	for _, g := range gates {
		resp, body := do(t, "POST", srv.URL+"/ui/api/canaries/shop/checkout/"+g, nil, map[string]string{csrfHeader: csrfOf(t, srv, c)}, c)
		if resp.StatusCode != 403 || !strings.Contains(body, "read-only") {
			t.Errorf("%s: got %d %s, want 403 read-only", g, resp.StatusCode, body)
		}
	}
	for _, call := range f.fakeReleases.snapshot() {
		if !strings.HasPrefix(call, "views") {
			t.Errorf("a read-only dashboard called %q", call)
		}
	}
	// The writable one shows them.
	srv2 := newUIServer(t, f, nil)
	_, page = do(t, "GET", srv2.URL+"/ui/canaries/shop/checkout", nil, nil, login(t, srv2, apiToken))
	for _, g := range gates {
		if !strings.Contains(page, `data-gate="`+g+`"`) {
			t.Errorf("no %s button on a writable dashboard", g)
		}
	}
}

var (
	inlineScript = regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)
	eventAttr    = regexp.MustCompile(`(?i)<[^>]+\son[a-z]+\s*=`)
)

// Nothing a Canary says comes out as markup, and the pages carry no inline script.
func TestUIEscapesEverythingFromACanary(t *testing.T) {
	f := newUIFake()
	srv := newUIServer(t, f, nil)
	c := login(t, srv, apiToken)
	evil := "/ui/canaries/web/" + url.PathEscape(evilName)
	for _, path := range []string{"/ui/", evil, "/ui/?namespace=web", "/ui/login"} {
		t.Run(path, func(t *testing.T) {
			resp, page := do(t, "GET", srv.URL+path, nil, nil, c)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d:\n%s", resp.StatusCode, page)
			}
			for _, raw := range []string{evilName, "<img", "<b>bold", `onerror="alert`} {
				if strings.Contains(page, raw) {
					t.Errorf("page carries %q unescaped", raw)
				}
			}
			if path != "/ui/login" && !strings.Contains(page, "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;") {
				t.Errorf("page does not show the canary's name, escaped:\n%s", page)
			}
			if inlineScript.MatchString(page) || eventAttr.MatchString(page) {
				t.Errorf("page has an inline script or event handler:\n%s", page)
			}
			if got := resp.Header.Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") || strings.Contains(got, "unsafe-inline") {
				t.Errorf("CSP %q: want script-src 'self' and nothing inline", got)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("missing nosniff or frame denial: %v", resp.Header)
			}
		})
	}
	t.Run("JSON", func(t *testing.T) {
		resp, body := do(t, "GET", srv.URL+"/ui/api/canaries/web/"+url.PathEscape(evilName), nil, nil, c)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if strings.ContainsAny(body, "<>") {
			t.Errorf("JSON carries raw angle brackets (encoding/json escapes them):\n%s", body)
		}
	})
	t.Run("the scripts set text, never HTML", func(t *testing.T) {
		for _, name := range []string{"common.js", "fleet.js", "canary.js"} {
			b, err := uiFiles.ReadFile("ui/static/" + name)
			if err != nil {
				t.Fatal(err)
			}
			for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
				if strings.Contains(string(b), sink) {
					t.Errorf("%s uses %s", name, sink)
				}
			}
		}
	})
}

func TestUIFleet(t *testing.T) {
	f := newUIFake()
	srv := newUIServer(t, f, nil)
	c := login(t, srv, apiToken)
	t.Run("sorted by last activity, filtered", func(t *testing.T) {
		tests := []struct {
			query string
			want  []string
		}{
			{"", []string{"shop/cart", "shop/checkout", "web/" + evilName}},
			{"?namespace=shop", []string{"shop/cart", "shop/checkout"}},
			{"?phase=Progressing", []string{"shop/checkout"}},
			{"?namespace=web&phase=Succeeded", nil},
		}
		rowKey := regexp.MustCompile(`<tr data-key="([^"]+)">`)
		for _, tc := range tests {
			_, page := do(t, "GET", srv.URL+"/ui/"+tc.query, nil, nil, c)
			var got []string
			for _, m := range rowKey.FindAllStringSubmatch(page, -1) {
				got = append(got, strings.NewReplacer("&lt;", "<", "&gt;", ">", "&#34;", `"`).Replace(m[1]))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("%q: rows %q, want %q", tc.query, got, tc.want)
			}
		}
	})
	t.Run("an unchanged fleet is a 304", func(t *testing.T) {
		resp, body := do(t, "GET", srv.URL+"/ui/api/canaries", nil, nil, c)
		etag := resp.Header.Get("ETag")
		if resp.StatusCode != 200 || etag == "" || !strings.Contains(body, `"canaries":[`) {
			t.Fatalf("got %d, ETag %q:\n%s", resp.StatusCode, etag, body)
		}
		resp, body = do(t, "GET", srv.URL+"/ui/api/canaries", nil, map[string]string{"If-None-Match": etag}, c)
		if resp.StatusCode != 304 || body != "" {
			t.Errorf("unchanged: got %d with %d bytes, want an empty 304", resp.StatusCode, len(body))
		}
		f.mu.Lock()
		v := f.views[functions.Key{Namespace: "shop", Name: "checkout"}]
		v.Weight = 30
		f.views[v.Key] = v
		f.mu.Unlock()
		if resp, _ = do(t, "GET", srv.URL+"/ui/api/canaries", nil, map[string]string{"If-None-Match": etag}, c); resp.StatusCode != 200 {
			t.Errorf("changed: got %d, want 200", resp.StatusCode)
		}
	})
	t.Run("an unknown canary is a 404 page", func(t *testing.T) {
		resp, page := do(t, "GET", srv.URL+"/ui/canaries/shop/nope", nil, nil, c)
		if resp.StatusCode != 404 || !strings.Contains(page, "Something went wrong") {
			t.Errorf("got %d:\n%s", resp.StatusCode, page)
		}
	})
}

func TestUIWithoutAuth(t *testing.T) {
	f := newUIFake()
	srv := newUIServer(t, f, func(o *Options) { o.InsecureSkipAuth = true })
	resp, page := do(t, "GET", srv.URL+"/ui/", nil, nil)
	if resp.StatusCode != 200 || strings.Contains(page, "Log out") {
		t.Fatalf("got %d:\n%s", resp.StatusCode, page)
	}
	// Gates still need the page's CSRF token.
	if resp, _ := do(t, "POST", srv.URL+"/ui/api/canaries/shop/checkout/abort", nil, nil); resp.StatusCode != 403 {
		t.Errorf("gate without CSRF: got %d, want 403", resp.StatusCode)
	}
	m := csrfMeta.FindStringSubmatch(page)
	if resp, body := do(t, "POST", srv.URL+"/ui/api/canaries/shop/checkout/abort", nil, map[string]string{csrfHeader: m[1]}); resp.StatusCode != 200 {
		t.Errorf("gate with CSRF: got %d %s, want 200", resp.StatusCode, body)
	}
}

func (f *fakeReleases) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *fakeReleases) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// NewDashboard (siskin dashboard) serves the pages and the API, and no event route.
func TestNewDashboardHasNoEventRoutes(t *testing.T) {
	srv := httptest.NewServer(NewDashboard(newUIFake(), Options{APITokens: []string{apiToken}}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	bearer := map[string]string{"Authorization": "Bearer " + apiToken}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/ui/", 200}, {"GET", "/api/v1/canaries", 200}, {"GET", "/healthz", 200},
		{"POST", "/", 404}, {"POST", "/webhooks/alertmanager", 404}, {"POST", "/webhooks/registry", 404},
	} {
		if resp, _ := do(t, tc.method, srv.URL+tc.path, nil, bearer); resp.StatusCode != tc.want {
			t.Errorf("%s %s: got %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}
