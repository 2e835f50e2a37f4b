// Package handlers is Siskin's HTTP edge: authentication, size limits, decoding of every wire
// format, the mapping of errors to status codes, health, metrics and the JSON API. Nothing
// below it sees HTTP, chi or CloudEvents.
package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/siskin-dev/siskin/functions"
)

// Releases is what the edge needs from the use cases (*functions.Service).
type Releases interface {
	Tick(ctx context.Context, until time.Time) (functions.TickReport, error)
	HandleAlerts(ctx context.Context, n functions.AlertNotification, eventID string) (functions.AbortReport, error)
	HandlePushes(ctx context.Context, pushes []functions.ImagePush) (functions.PushReport, error)
	ObjectChanged(ctx context.Context, obj functions.ObjectRef, eventID string) ([]functions.StepReport, error)
	StepDue(ctx context.Context, k functions.Key) (functions.StepReport, error)
	RequestPromotion(ctx context.Context, k functions.Key) (functions.StepReport, error)
	Resume(ctx context.Context, k functions.Key) (functions.StepReport, error)
	Abort(ctx context.Context, k functions.Key, reason string) (functions.StepReport, bool, error)
	View(ctx context.Context, k functions.Key) (functions.CanaryView, error)
	Events(ctx context.Context, k functions.Key) ([]functions.EventRecord, error)
	Views(ctx context.Context, namespace string) ([]functions.CanaryView, error)
	History(ctx context.Context, k functions.Key) ([]functions.Release, error)
	Detail(ctx context.Context, k functions.Key) (functions.CanaryDetail, error)
}

// TokenReviewer verifies a Knative Eventing OIDC token (the Kubernetes TokenReview API). ok
// is false for a token the apiserver does not authenticate; a spent review budget is
// functions.ErrRateLimited.
type TokenReviewer interface {
	Review(ctx context.Context, token string, audiences []string) (id functions.TokenIdentity, ok bool, err error)
}

// Checker is one readiness dependency.
type Checker struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options configure the edge.
type Options struct {
	// WebhookTokens are the senders' tokens (registries, Alertmanager, timers), any of which
	// an event route takes; two are valid at once while one is rotated. They never open the
	// API.
	WebhookTokens []string
	// APITokens are the operators' tokens, which the API requires (and the event routes
	// take too).
	APITokens []string
	// GitHubSecret verifies GHCR deliveries (X-Hub-Signature-256) in place of the token.
	GitHubSecret string
	// InsecureSkipAuth turns authentication off, for local experiments only.
	InsecureSkipAuth bool
	// OIDC verifies Knative Eventing tokens on the CloudEvents route; nil turns it off.
	OIDC TokenReviewer
	// OIDCAudience is the audience Eventing puts in its tokens (the Service's URL or name).
	OIDCAudience string
	// OIDCSenders are the usernames allowed to send with an OIDC token, as path.Match
	// patterns (system:serviceaccount:NS:NAME); empty means DefaultOIDCSenders.
	OIDCSenders []string
	// MaxBodyBytes limits request bodies (1 MiB by default).
	MaxBodyBytes int64
	// TickWindow is how long a tick may keep stepping canaries that are due within it.
	TickWindow time.Duration
	// WorkTimeout bounds the work a request starts (a push, an alert, a gate), which goes on
	// if the sender hangs up; 60 s by default.
	WorkTimeout time.Duration
	// Ready are checked by /readyz, each with ReadyTimeout.
	Ready        []Checker
	ReadyTimeout time.Duration
	// Metrics serves /metrics.
	Metrics http.Handler
	// Observe records one handled event, for Siskin's own metrics.
	Observe func(kind, outcome string, took time.Duration)
	// UIReadOnly shows the dashboard without its gate buttons and refuses its gate calls.
	UIReadOnly bool
	// UISessionTTL is how long a dashboard login lasts (8 h by default).
	UISessionTTL time.Duration
	// MaxInflight bounds the requests each event route works on at once; past it a request
	// is shed with 503 and Retry-After (DefaultMaxInflight by default).
	MaxInflight int
}

// New returns the whole HTTP surface.
func New(rel Releases, opts Options, log *slog.Logger) http.Handler {
	return newRouter(rel, opts, log, true)
}

// NewDashboard returns the dashboard and the API alone, for `siskin dashboard`: no event
// routes.
func NewDashboard(rel Releases, opts Options, log *slog.Logger) http.Handler {
	return newRouter(rel, opts, log, false)
}

func newRouter(rel Releases, opts Options, log *slog.Logger, events bool) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.TickWindow <= 0 {
		opts.TickWindow = 50 * time.Second
	}
	if opts.WorkTimeout <= 0 {
		opts.WorkTimeout = time.Minute
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 2 * time.Second
	}
	if opts.Observe == nil {
		opts.Observe = func(string, string, time.Duration) {}
	}
	if opts.Metrics == nil {
		opts.Metrics = http.NotFoundHandler()
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = DefaultMaxInflight
	}
	a := authenticator{opts: opts, log: log}
	if opts.OIDC != nil {
		a.oidc = newOIDCGate(opts.OIDC, opts.OIDCAudience, opts.OIDCSenders)
	}
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)

	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(opts.Ready, opts.ReadyTimeout, log))
	r.Method(http.MethodGet, "/metrics", opts.Metrics)

	r.Group(func(r chi.Router) {
		r.Use(limitBody(opts.MaxBodyBytes))
		if events {
			r.With(a.cloudEvents, shed("cloudevent", opts.MaxInflight, opts.Observe)).Post("/", handleCloudEvent(rel, opts, log))
			r.With(a.registry, shed("push", opts.MaxInflight, opts.Observe)).Post("/webhooks/registry", handleRegistryWebhook(rel, opts, log))
			r.With(a.bearer, shed("alert", opts.MaxInflight, opts.Observe)).Post("/webhooks/alertmanager", handleAlertmanagerWebhook(rel, opts, log))
		}
		newDashboard(rel, a, opts, log).mount(r)
		r.Route("/api/v1/canaries", func(r chi.Router) {
			r.Use(a.operator)
			r.Get("/", handleListCanaries(rel))
			r.Get("/{namespace}", handleListCanaries(rel))
			r.Get("/{namespace}/{name}", handleGetCanary(rel))
			r.Get("/{namespace}/{name}/events", handleCanaryEvents(rel))
			r.Get("/{namespace}/{name}/history", handleCanaryHistory(rel))
			r.Post("/{namespace}/{name}/promote", handleGate(rel, "promote", opts, log))
			r.Post("/{namespace}/{name}/abort", handleGate(rel, "abort", opts, log))
			r.Post("/{namespace}/{name}/resume", handleGate(rel, "resume", opts, log))
		})
	})
	return r
}
