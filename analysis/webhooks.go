package analysis

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// Flagger's retry backoff (go-retryablehttp) waits 1 s to 30 s; a step has a deadline, so
// Siskin's defaults are smaller.
const (
	DefaultRetryWaitMin = 250 * time.Millisecond
	DefaultRetryWaitMax = 2 * time.Second
)

// maxDetail bounds how much of a response body is kept as a failure's detail.
const maxDetail = 1024

// HooksConfig configures NewHooks.
type HooksConfig struct {
	// EventWebhookURL receives the events of every canary that has no event webhook of its own
	// (Flagger's -event-webhook). Empty: none.
	EventWebhookURL string
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between retries. A
	// Retry-After header is honoured up to RetryWaitMax.
	RetryWaitMin, RetryWaitMax time.Duration
	// Transport is the base HTTP transport. Nil: a clone of http.DefaultTransport.
	Transport *http.Transport
	// Now is the clock for event timestamps. Nil: time.Now.
	Now func() time.Time
}

// Hooks calls webhooks with Flagger's payload; it implements functions.Hooks.
type Hooks struct {
	eventURL         string
	waitMin, waitMax time.Duration
	// secure and insecure (for disableTLS) are shared by every call, so connections are reused.
	secure, insecure *http.Client
	now              func() time.Time
	log              *slog.Logger
}

var _ functions.Hooks = (*Hooks)(nil)

// NewHooks returns a webhook caller.
func NewHooks(cfg HooksConfig, log *slog.Logger) *Hooks {
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = DefaultRetryWaitMin
	}
	if cfg.RetryWaitMax < cfg.RetryWaitMin {
		cfg.RetryWaitMax = max(DefaultRetryWaitMax, cfg.RetryWaitMin)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	insecure := base.Clone()
	insecure.TLSClientConfig = insecureTLS(insecure.TLSClientConfig)
	return &Hooks{
		eventURL: cfg.EventWebhookURL,
		waitMin:  cfg.RetryWaitMin,
		waitMax:  cfg.RetryWaitMax,
		secure:   &http.Client{Transport: base},
		insecure: &http.Client{Transport: insecure},
		now:      cfg.Now,
		log:      log,
	}
}

// hookPayload is Flagger's CanaryWebhookPayload.
type hookPayload struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Phase     functions.Phase   `json:"phase"`
	Checksum  string            `json:"checksum"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// CallHooks POSTs Flagger's payload to each hook in order and reports each answer. With
// stopAtFailure the first failure ends the run, so the results may be fewer than the hooks.
func (h *Hooks) CallHooks(ctx context.Context, c functions.Canary, hooks []functions.Webhook, call functions.HookCall, stopAtFailure bool) []functions.HookResult {
	results := make([]functions.HookResult, 0, len(hooks))
	for _, w := range hooks {
		p := hookPayload{
			Name:      c.Name,
			Namespace: c.Namespace,
			Phase:     call.Phase,
			Checksum:  call.Checksum,
			Metadata:  w.Metadata,
		}
		r := h.call(ctx, w, p)
		if !r.OK {
			h.log.InfoContext(ctx, "webhook failed", "canary", c.Key.String(), "webhook", w.Name,
				"type", w.EffectiveType(), "detail", r.Detail)
		}
		results = append(results, r)
		if !r.OK && stopAtFailure {
			break
		}
	}
	return results
}

// SendEvent POSTs a Kubernetes-style event to the canary's event webhooks, or to the global
// event webhook when the canary has none, with Flagger's event payload: metadata eventMessage,
// eventType (Normal or Warning) and timestamp (unix milliseconds), plus the hook's own
// metadata, which cannot override those three. The receivers are called concurrently;
// failures are logged and returned.
func (h *Hooks) SendEvent(ctx context.Context, c functions.Canary, e functions.Event) []functions.HookResult {
	hooks := c.Spec.Hooks(functions.HookEvent)
	if len(hooks) == 0 && h.eventURL != "" {
		hooks = []functions.Webhook{{Type: functions.HookEvent, Name: "events", URL: h.eventURL}}
	}
	if len(hooks) == 0 {
		return nil
	}
	eventType := "Normal"
	if e.Warning {
		eventType = "Warning"
	}
	timestamp := strconv.FormatInt(h.now().UnixMilli(), 10)
	checksum := Checksum(c.Status)

	results := make([]functions.HookResult, len(hooks))
	var wg sync.WaitGroup
	for i, w := range hooks {
		meta := map[string]string{"eventMessage": e.Message, "eventType": eventType, "timestamp": timestamp}
		for k, v := range w.Metadata {
			if _, taken := meta[k]; !taken {
				meta[k] = v
			}
		}
		p := hookPayload{Name: c.Name, Namespace: c.Namespace, Phase: c.Status.Phase, Checksum: checksum, Metadata: meta}
		wg.Go(func() {
			results[i] = h.call(ctx, w, p)
			if !results[i].OK {
				h.log.WarnContext(ctx, "event webhook failed", "canary", c.Key.String(), "webhook", w.Name,
					"detail", results[i].Detail)
			}
		})
	}
	wg.Wait()
	return results
}

// Checksum identifies a canary's revision for webhooks as Flagger's canaryChecksum does: a hash
// of status.trackedConfigs and status.lastAppliedSpec. It is functions.Checksum of the same
// fields, so an event webhook is told the same checksum as the other webhooks for a revision.
// (The value differs from Flagger's, which hashes Go's printed form with FNV; receivers only
// compare checksums with each other.)
func Checksum(st functions.Status) string {
	return functions.Checksum(functions.State{TrackedConfigs: st.TrackedConfigs, LastAppliedSpec: st.LastAppliedSpec})
}

// call POSTs the payload with the hook's timeout on every attempt and retries as Flagger's
// go-retryablehttp client does: on connection errors, on 429 and on 5xx except 501.
func (h *Hooks) call(ctx context.Context, w functions.Webhook, p hookPayload) functions.HookResult {
	res := functions.HookResult{Name: w.Name}
	if w.URL == "" {
		res.Detail = "webhook has no url"
		return res
	}
	body, err := json.Marshal(p)
	if err != nil {
		res.Detail = fmt.Sprintf("encode payload: %v", err)
		return res
	}
	client := h.secure
	if w.DisableTLS {
		client = h.insecure
	}
	timeout := w.TimeoutDuration()
	attempts := max(w.Retries, 0) + 1
	for attempt := 1; ; attempt++ {
		a := h.attempt(ctx, client, w.URL, body, timeout)
		// Success is status <= 202, as in Flagger: 203 to 299 are failures, so a hook that
		// answers 204 No Content fails.
		if a.err == nil && a.status <= http.StatusAccepted {
			res.OK, res.Detail = true, ""
			return res
		}
		res.Detail = a.detail()
		if ctx.Err() != nil || attempt >= attempts || !a.retryable() {
			if attempt > 1 {
				res.Detail = fmt.Sprintf("%s (after %d attempts)", res.Detail, attempt)
			}
			return res
		}
		if !sleep(ctx, h.backoff(attempt, a.retryAfter)) {
			res.Detail = fmt.Sprintf("%s (after %d attempts; %v)", res.Detail, attempt, ctx.Err())
			return res
		}
	}
}

type attemptResult struct {
	status     int
	body       string
	retryAfter string
	err        error
	timedOut   time.Duration // the attempt's own timeout fired
}

func (h *Hooks) attempt(ctx context.Context, client *http.Client, url string, body []byte, timeout time.Duration) (res attemptResult) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if res.err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
			res.timedOut = timeout
		}
	}()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		res.err = fmt.Errorf("read response: %w", err)
		return res
	}
	res.status = resp.StatusCode
	res.body = strings.TrimSpace(string(b))
	res.retryAfter = resp.Header.Get("Retry-After")
	return res
}

func (a attemptResult) detail() string {
	switch {
	case a.timedOut > 0:
		return fmt.Sprintf("timeout: no response within %s", a.timedOut)
	case a.err != nil:
		return a.err.Error()
	case a.body != "":
		if len(a.body) > maxDetail {
			return a.body[:maxDetail] + "…"
		}
		return a.body
	}
	return fmt.Sprintf("HTTP %d %s", a.status, http.StatusText(a.status))
}

// retryable follows go-retryablehttp's DefaultRetryPolicy.
func (a attemptResult) retryable() bool {
	if a.err != nil {
		var unknownCA x509.UnknownAuthorityError
		var verify *tls.CertificateVerificationError
		msg := a.err.Error()
		switch {
		case errors.As(a.err, &unknownCA), errors.As(a.err, &verify),
			strings.Contains(msg, "unsupported protocol scheme"),
			strings.Contains(msg, "stopped after"), // too many redirects
			strings.Contains(msg, "invalid header"):
			return false
		}
		return true
	}
	return a.status == http.StatusTooManyRequests ||
		(a.status >= 500 && a.status != http.StatusNotImplemented)
}

func (h *Hooks) backoff(attempt int, retryAfter string) time.Duration {
	if s, err := strconv.Atoi(retryAfter); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, h.waitMax)
	}
	d := h.waitMin << (attempt - 1)
	if d <= 0 || d > h.waitMax {
		d = h.waitMax
	}
	return d
}

// sleep waits d or until ctx is done; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
