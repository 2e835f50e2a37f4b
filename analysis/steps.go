package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// StepSender sends the dispatcher's step events to Siskin's own Service, in CloudEvents binary
// mode, one request per step: Knative spreads them over the Service's pods by their
// concurrency, so the steps of a large fleet run on as many pods as it takes. It also wakes a
// dispatcher there when a release goes on between pings.
type StepSender struct {
	url, token string
	// steps bounds one step; wakes have no bound of their own: a woken dispatcher answers at
	// the end of its window, and its request keeps a pod warm until then.
	steps, wakes *http.Client
}

// NewStepSender posts to url with the bearer token; each step may take up to timeout (the
// step's own bound, plus its request).
func NewStepSender(url, token string, timeout time.Duration) *StepSender {
	return &StepSender{url: url, token: token, steps: &http.Client{Timeout: timeout}, wakes: &http.Client{}}
}

// DispatchStep sends one step and waits for its outcome. The event id names the canary and
// the due time, so a sender retrying sends the same event.
func (s *StepSender) DispatchStep(ctx context.Context, k functions.Key, dueAt time.Time) error {
	body, err := json.Marshal(map[string]string{"namespace": k.Namespace, "name": k.Name, "dueAt": dueAt.UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return fmt.Errorf("%w: encode step of %s: %v", functions.ErrInvalid, k, err)
	}
	what := "step of " + k.String()
	return s.post(ctx, s.steps, what, body, map[string]string{
		"Ce-Type": functions.StepEventType, "Ce-Id": k.String() + "@" + strconv.FormatInt(dueAt.UnixMilli(), 10), "Ce-Subject": k.String(),
	})
}

// WakeDispatcher sends a wake-up event and waits until the dispatcher it starts ends (ctx
// bounds it).
func (s *StepSender) WakeDispatcher(ctx context.Context, id string) error {
	return s.post(ctx, s.wakes, "dispatcher wake-up", []byte(`{}`), map[string]string{"Ce-Type": functions.WakeEventType, "Ce-Id": id})
}

func (s *StepSender) post(ctx context.Context, client *http.Client, what string, body []byte, headers map[string]string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: step sink %s: %v", functions.ErrInvalid, s.url, err)
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Source", "/siskin/dispatcher")
	req.Header.Set("Ce-Time", time.Now().UTC().Format(time.RFC3339Nano))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", functions.ErrUnavailable, what, err)
	}
	defer resp.Body.Close()
	detail, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("%w: %s: HTTP %d: %s", functions.ErrUnavailable, what, resp.StatusCode, bytes.TrimSpace(detail))
	}
	return fmt.Errorf("%w: %s: HTTP %d: %s", functions.ErrRejected, what, resp.StatusCode, bytes.TrimSpace(detail))
}
