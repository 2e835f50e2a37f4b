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
// concurrency, so the steps of a large fleet run on as many pods as it takes.
type StepSender struct {
	url, token string
	client     *http.Client
}

// NewStepSender posts to url with the bearer token; each step may take up to timeout (the
// step's own bound, plus its request).
func NewStepSender(url, token string, timeout time.Duration) *StepSender {
	return &StepSender{url: url, token: token, client: &http.Client{Timeout: timeout}}
}

// DispatchStep sends one step and waits for its outcome. The event id names the canary and
// the due time, so a sender retrying sends the same event.
func (s *StepSender) DispatchStep(ctx context.Context, k functions.Key, dueAt time.Time) error {
	body, err := json.Marshal(map[string]string{"namespace": k.Namespace, "name": k.Name, "dueAt": dueAt.UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return fmt.Errorf("%w: encode step of %s: %v", functions.ErrInvalid, k, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: step sink %s: %v", functions.ErrInvalid, s.url, err)
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Type", functions.StepEventType)
	req.Header.Set("Ce-Source", "/siskin/dispatcher")
	req.Header.Set("Ce-Id", k.String()+"@"+strconv.FormatInt(dueAt.UnixMilli(), 10))
	req.Header.Set("Ce-Subject", k.String())
	req.Header.Set("Ce-Time", time.Now().UTC().Format(time.RFC3339Nano))
	req.Header.Set("Content-Type", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: step of %s: %v", functions.ErrUnavailable, k, err)
	}
	defer resp.Body.Close()
	detail, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("%w: step of %s: HTTP %d: %s", functions.ErrUnavailable, k, resp.StatusCode, bytes.TrimSpace(detail))
	}
	return fmt.Errorf("%w: step of %s: HTTP %d: %s", functions.ErrRejected, k, resp.StatusCode, bytes.TrimSpace(detail))
}
