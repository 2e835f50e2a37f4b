package analysis

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// DefaultAlertTimeout is Flagger's notifier timeout.
const DefaultAlertTimeout = 5 * time.Second

// AlertTarget is a notifier configured on the command line, Flagger's -slack-url and
// -msteams-url.
type AlertTarget struct {
	// Type is one of slack, msteams, discord, rocket, gchat, webhook.
	Type string
	URL  string
	// Token, if set, is sent as a bearer token.
	Token    string
	Username string // default "flagger"
	Channel  string // default "general"
	Proxy    string
}

// AlerterConfig configures NewAlerter.
type AlerterConfig struct {
	// Providers reads AlertProviders and their Secrets. Nil: canaries with analysis.alerts get
	// none, and an error is logged.
	Providers TemplateSource
	// Global receives the alerts of canaries without analysis.alerts. Nil: none.
	Global *AlertTarget
	// ClusterName adds a "Cluster" field to every alert when set (Flagger's -cluster-name).
	ClusterName string
	// Timeout bounds each send, and each AlertProvider or Secret read. Default 5 s.
	Timeout time.Duration
	// Transport is the base HTTP transport. Nil: a clone of http.DefaultTransport.
	Transport *http.Transport
	// Now is the clock for the webhook type's timestamp. Nil: time.Now.
	Now func() time.Time
}

// Alerter sends alerts through AlertProviders; it implements functions.Alerter.
type Alerter struct {
	providers   TemplateSource
	global      *receiver
	clusterName string
	timeout     time.Duration
	base        *http.Transport
	client      *http.Client
	now         func() time.Time
	log         *slog.Logger

	mu      sync.Mutex
	proxied map[string]*http.Client // by proxy URL, so proxied connections are reused too
}

var _ functions.Alerter = (*Alerter)(nil)

// NewAlerter returns an Alerter. A global target of an unknown type is an error.
func NewAlerter(cfg AlerterConfig, log *slog.Logger) (*Alerter, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultAlertTimeout
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
	a := &Alerter{
		providers:   cfg.Providers,
		clusterName: cfg.ClusterName,
		timeout:     cfg.Timeout,
		base:        base,
		client:      &http.Client{Transport: base},
		now:         cfg.Now,
		log:         log,
		proxied:     map[string]*http.Client{},
	}
	if g := cfg.Global; g != nil && g.URL != "" {
		r := withDefaults(receiver{kind: g.Type, address: g.URL, token: g.Token, username: g.Username, channel: g.Channel, proxy: g.Proxy})
		if _, _, err := encode(r, notification{}); err != nil {
			return nil, fmt.Errorf("global alert target: %w", err)
		}
		a.global = &r
	}
	return a, nil
}

func withDefaults(r receiver) receiver {
	if r.username == "" {
		r.username = "flagger"
	}
	if r.channel == "" {
		r.channel = "general"
	}
	return r
}

// receives is the severity filter: an alert of severity info (or empty, which the CRD
// documents as info; Flagger's code sends it nothing) receives everything, warn receives warn
// and error, error receives error only.
func receives(alert, msg functions.Severity) bool {
	switch alert {
	case functions.SeverityInfo, "":
		return true
	case functions.SeverityWarn:
		return msg == functions.SeverityWarn || msg == functions.SeverityError
	case functions.SeverityError:
		return msg == functions.SeverityError
	}
	return false
}

// SendAlerts sends the messages, in order, to each of the canary's alerts whose severity lets
// them through, or to the global notifier when the canary has no alerts. Receivers are served
// concurrently; each send has its own timeout; failures are logged and never returned.
func (a *Alerter) SendAlerts(ctx context.Context, c functions.Canary, msgs []functions.AlertMessage) {
	if len(msgs) == 0 {
		return
	}
	var alerts []functions.AlertRef
	if c.Spec.Analysis != nil {
		alerts = c.Spec.Analysis.Alerts
	}
	if len(alerts) == 0 {
		if a.global != nil {
			a.sendAll(ctx, c, *a.global, "global", msgs)
		}
		return
	}
	var wg sync.WaitGroup
	for _, alert := range alerts {
		var mine []functions.AlertMessage
		for _, m := range msgs {
			if receives(alert.Severity, m.Severity) {
				mine = append(mine, m)
			}
		}
		if len(mine) == 0 {
			continue
		}
		wg.Go(func() {
			ns := alert.ProviderRef.Namespace
			if ns == "" {
				ns = c.Namespace
			}
			ref := ns + "/" + alert.ProviderRef.Name
			r, err := a.resolve(ctx, ns, alert.ProviderRef.Name)
			if err != nil {
				a.log.ErrorContext(ctx, "alert not sent", "canary", c.Key.String(), "alert", alert.Name,
					"provider", ref, "err", err)
				return
			}
			a.sendAll(ctx, c, r, ref, mine)
		})
	}
	wg.Wait()
}

// resolve reads an AlertProvider and its Secret into a receiver.
func (a *Alerter) resolve(ctx context.Context, ns, name string) (receiver, error) {
	ref := ns + "/" + name
	if a.providers == nil {
		return receiver{}, fmt.Errorf("alert provider %s: no provider source configured", ref)
	}
	p, err := withTimeout(ctx, a.timeout, func(ctx context.Context) (AlertProvider, error) {
		return a.providers.AlertProvider(ctx, ns, name)
	})
	if err != nil {
		return receiver{}, fmt.Errorf("alert provider %s: %w", ref, err)
	}
	r := receiver{kind: p.Type, address: p.Address, username: p.Username, channel: p.Channel, proxy: p.Proxy}
	if p.SecretRef != nil {
		data, err := withTimeout(ctx, a.timeout, func(ctx context.Context) (map[string][]byte, error) {
			return a.providers.Secret(ctx, ns, p.SecretRef.Name)
		})
		if err != nil {
			return receiver{}, fmt.Errorf("alert provider %s: secret %s/%s: %w", ref, ns, p.SecretRef.Name, err)
		}
		if addr, ok := data["address"]; ok {
			r.address = strings.TrimSpace(string(addr))
		}
		if token, ok := data["token"]; ok {
			r.token = strings.TrimSpace(string(token))
		}
	}
	if r.address == "" {
		return receiver{}, fmt.Errorf("alert provider %s: %w: no address in spec.address nor in the secret's key address", ref, functions.ErrInvalid)
	}
	return withDefaults(r), nil
}

func (a *Alerter) sendAll(ctx context.Context, c functions.Canary, r receiver, ref string, msgs []functions.AlertMessage) {
	for _, m := range msgs {
		n := notification{
			name:      c.Name,
			namespace: c.Namespace,
			severity:  m.Severity,
			message:   m.Message,
			fields:    a.fields(c, m.Metadata),
			at:        a.now(),
		}
		if err := a.send(ctx, r, n); err != nil {
			a.log.ErrorContext(ctx, "alert not sent", "canary", c.Key.String(), "provider", ref,
				"type", r.kind, "err", err)
		}
	}
}

func (a *Alerter) send(ctx context.Context, r receiver, n notification) error {
	target, body, err := encode(r, n)
	if err != nil {
		return err
	}
	client, err := a.clientFor(r.proxy)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s notification: %w", r.kind, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s notification: %w: %w", r.kind, functions.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxDetail))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s notification: %w: HTTP %d: %s", r.kind, functions.ErrUnavailable, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

func (a *Alerter) clientFor(proxy string) (*http.Client, error) {
	if proxy == "" {
		return a.client, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.proxied[proxy]; ok {
		return c, nil
	}
	u, err := url.Parse(proxy)
	if err != nil {
		return nil, fmt.Errorf("%w: proxy %q is not a URL", functions.ErrInvalid, proxy)
	}
	t := a.base.Clone()
	t.Proxy = http.ProxyURL(u)
	c := &http.Client{Transport: t}
	a.proxied[proxy] = c
	return c, nil
}

// fields are Flagger's alert fields: Cluster when configured, then with metadata the target,
// the failed checks threshold, the progress deadline and the traffic routing.
func (a *Alerter) fields(c functions.Canary, metadata bool) []field {
	var fs []field
	if a.clusterName != "" {
		fs = append(fs, field{"Cluster", a.clusterName})
	}
	if !metadata {
		return fs
	}
	kind := c.Spec.TargetRef.Kind
	if kind == "" {
		kind = "Deployment"
	}
	fs = append(fs,
		field{"Target", fmt.Sprintf("%s/%s.%s", kind, c.Spec.TargetRef.Name, c.Namespace)},
		field{"Failed checks threshold", strconv.Itoa(c.Spec.Threshold())},
		field{"Progress deadline", fmt.Sprintf("%.0fs", c.Spec.ProgressDeadline().Seconds())},
	)
	an := c.Spec.Analysis
	if an == nil {
		return fs
	}
	switch {
	case an.StepWeight > 0:
		fs = append(fs, field{"Traffic routing", fmt.Sprintf("Weight step: %d max: %d", an.StepWeight, c.Spec.MaxWeight())})
	case len(an.StepWeights) > 0:
		steps := make([]string, len(an.StepWeights))
		for i, w := range an.StepWeights {
			steps[i] = strconv.Itoa(w)
		}
		fs = append(fs, field{"Traffic routing", fmt.Sprintf("Weight steps: %s max: %d", strings.Join(steps, ","), c.Spec.MaxWeight())})
	case len(an.Match) > 0 && string(an.Match) != "null" && string(an.Match) != "[]":
		fs = append(fs, field{"Traffic routing", "A/B Testing"})
	case an.Iterations > 0:
		fs = append(fs, field{"Traffic routing", "Blue/Green"})
	}
	return fs
}
