package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/siskin-dev/siskin/analysis"
	"github.com/siskin-dev/siskin/deploy"
	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/gatewayapi"
	"github.com/siskin-dev/siskin/handlers"
	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/registry"
	"github.com/siskin-dev/siskin/state"
)

type serveConfig struct {
	addr             string
	redisURL         string
	kubeconfig       string
	prometheusURL    string
	webhookToken     string
	apiToken         string
	githubSecret     string
	insecureSkipAuth bool
	namespace        string
	oidcAudience     string
	oidcSenders      string
	oidcReviewQPS    float64
	minInterval      time.Duration
	tickWindow       time.Duration
	leaseTTL         time.Duration
	stepTimeout      time.Duration
	parallelism      int
	pushScope        string
	egressDeny       string
	stepSink         string
	resync           time.Duration
	kubeQPS          float64
	kubeBurst        int
	egressAllow      string
	callTimeout      time.Duration
	insecureRegs     string
	eventWebhook     string
	alertType        string
	alertURL         string
	clusterName      string
	logFormat        string
	logLevel         string
	uiReadOnly       bool
	// dashboard: `siskin dashboard`, the pages and the API on localhost, no event routes.
	dashboard bool
}

func parseServe(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	return parseConfig("serve", args, getenv, stderr)
}

func parseConfig(verb string, args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	c := serveConfig{dashboard: verb == "dashboard"}
	fs := flag.NewFlagSet("siskin "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var envErrs []error
	dur := func(key string, def time.Duration) time.Duration {
		v := getenv(key)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s=%q: not a duration (for example 30s or 2m)", key, v))
			return def
		}
		return d
	}
	port := envOr(getenv, "PORT", "8080")
	defaultAddr := envOr(getenv, "SISKIN_LISTEN", ":"+port)
	if c.dashboard {
		defaultAddr = "127.0.0.1:8090"
	}
	fs.StringVar(&c.addr, "listen", defaultAddr, "listen address (env SISKIN_LISTEN; else :$PORT; the dashboard: 127.0.0.1:8090)")
	fs.BoolVar(&c.uiReadOnly, "ui-readonly", getenv("SISKIN_UI_READONLY") == "true", "serve the dashboard without its Promote, Abort and Resume buttons, and refuse its gate calls (env SISKIN_UI_READONLY=true)")
	fs.StringVar(&c.redisURL, "redis-url", getenv("REDIS_URL"), "Redis URL: redis://, rediss://, redis+sentinel://, redis+cluster:// (env REDIS_URL)")
	fs.StringVar(&c.kubeconfig, "kubeconfig", getenv("KUBECONFIG"), "kubeconfig path (env KUBECONFIG; empty: in-cluster)")
	fs.StringVar(&c.prometheusURL, "prometheus-url", getenv("PROMETHEUS_URL"), "Prometheus URL for the built-in metrics (env PROMETHEUS_URL)")
	fs.StringVar(&c.webhookToken, "webhook-token", getenv("SISKIN_WEBHOOK_TOKEN"), "senders' bearer token, required on the event routes; comma-separated to accept two while rotating (env SISKIN_WEBHOOK_TOKEN)")
	fs.StringVar(&c.apiToken, "api-token", getenv("SISKIN_API_TOKEN"), "operators' bearer token, required on the API (the CLI's); comma-separated to accept two while rotating (env SISKIN_API_TOKEN)")
	fs.StringVar(&c.githubSecret, "github-secret", getenv("SISKIN_GITHUB_SECRET"), "secret of GitHub (GHCR) package webhooks (env SISKIN_GITHUB_SECRET)")
	fs.BoolVar(&c.insecureSkipAuth, "insecure-skip-auth", false, "accept unauthenticated requests (local experiments only)")
	fs.StringVar(&c.namespace, "namespace", getenv("SISKIN_NAMESPACE"), "watch one namespace (env SISKIN_NAMESPACE; empty: all)")
	fs.StringVar(&c.oidcAudience, "oidc-audience", getenv("SISKIN_OIDC_AUDIENCE"), "accept Knative Eventing OIDC tokens for this audience on / (env SISKIN_OIDC_AUDIENCE; empty: off)")
	fs.StringVar(&c.oidcSenders, "oidc-senders", envOr(getenv, "SISKIN_OIDC_SENDERS", strings.Join(handlers.DefaultOIDCSenders, ",")),
		"comma-separated usernames (path.Match patterns, system:serviceaccount:NS:NAME) allowed to send OIDC tokens (env SISKIN_OIDC_SENDERS)")
	fs.Float64Var(&c.oidcReviewQPS, "oidc-review-qps", 5, "token reviews a second, on a client of their own; past it the CloudEvents route answers 429")
	fs.DurationVar(&c.minInterval, "min-interval", dur("SISKIN_MIN_INTERVAL", functions.MinAnalysisInterval), "analysis interval floor (Flagger's is 10s; lower it only for tests)")
	fs.DurationVar(&c.tickWindow, "tick-window", dur("SISKIN_TICK_WINDOW", 75*time.Second), "how long one tick keeps dispatching the steps of releases that fall due within it; past a minute, it overlaps the next ping, which takes over")
	fs.StringVar(&c.stepSink, "step-sink", getenv("SISKIN_STEP_SINK"), "URL of Siskin's own Service: each due step is sent there as a request of its own (env SISKIN_STEP_SINK; empty: the tick steps them itself)")
	fs.DurationVar(&c.resync, "resync", dur("SISKIN_RESYNC", 5*time.Minute), "how often a canary at rest is checked anyway, and a step re-asserts the Services and DestinationRules; events bring their changes at once (env SISKIN_RESYNC; 0: at its interval and every step)")
	fs.Float64Var(&c.kubeQPS, "kube-qps", 100, "Kubernetes client requests a second")
	fs.IntVar(&c.kubeBurst, "kube-burst", 250, "Kubernetes client burst")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", dur("SISKIN_LEASE_TTL", 30*time.Second), "how long a crashed or stalled step can hold a canary; a live step renews its lease every third of it")
	fs.DurationVar(&c.stepTimeout, "step-timeout", dur("SISKIN_STEP_TIMEOUT", time.Minute), "bound on one step, webhook gates included")
	fs.IntVar(&c.parallelism, "parallelism", 16, "canaries stepped at once by one tick")
	fs.StringVar(&c.pushScope, "push-scope", envOr(getenv, "SISKIN_PUSH_SCOPE", "namespace"),
		"namespace: a push releases only in the namespaces its URL names (?namespace=); cluster: in any namespace that runs the image (env SISKIN_PUSH_SCOPE)")
	fs.DurationVar(&c.callTimeout, "call-timeout", dur("SISKIN_CALL_TIMEOUT", 5*time.Second), "timeout of each Kubernetes, Istio and registry call")
	fs.StringVar(&c.insecureRegs, "insecure-registries", getenv("SISKIN_INSECURE_REGISTRIES"), "comma-separated registries reached over plain HTTP")
	fs.StringVar(&c.egressDeny, "egress-deny", getenv("SISKIN_EGRESS_DENY"), "comma-separated CIDRs Siskin never calls, beside the link-local and metadata ones it never calls by default (env SISKIN_EGRESS_DENY)")
	fs.StringVar(&c.egressAllow, "egress-allow", getenv("SISKIN_EGRESS_ALLOW"), "comma-separated CIDRs Siskin may call even if denied (env SISKIN_EGRESS_ALLOW)")
	fs.StringVar(&c.eventWebhook, "event-webhook", getenv("EVENT_WEBHOOK_URL"), "global event webhook, for canaries without an event hook (env EVENT_WEBHOOK_URL)")
	fs.StringVar(&c.alertType, "alert-type", getenv("SISKIN_ALERT_TYPE"), "global notifier type: slack, msteams, discord, rocket, gchat, webhook")
	fs.StringVar(&c.alertURL, "alert-url", getenv("SISKIN_ALERT_URL"), "global notifier URL, for canaries without analysis.alerts")
	fs.StringVar(&c.clusterName, "cluster-name", getenv("SISKIN_CLUSTER_NAME"), "cluster name shown in alerts")
	fs.StringVar(&c.logFormat, "log-format", envOr(getenv, "SISKIN_LOG_FORMAT", "json"), "json or text")
	fs.StringVar(&c.logLevel, "log-level", envOr(getenv, "SISKIN_LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := errors.Join(envErrs...); err != nil {
		return c, err
	}
	switch {
	case c.pushScope != "namespace" && c.pushScope != "cluster":
		return c, fmt.Errorf("--push-scope %q: want namespace or cluster", c.pushScope)
	case c.redisURL == "":
		return c, errors.New("--redis-url (or REDIS_URL) is required")
	case c.webhookToken == "" && !c.insecureSkipAuth && !c.dashboard:
		return c, errors.New("refusing to start without --webhook-token (or SISKIN_WEBHOOK_TOKEN); pass --insecure-skip-auth for local experiments")
	case c.apiToken == "" && !c.insecureSkipAuth && !c.dashboard:
		return c, errors.New("refusing to start without --api-token (or SISKIN_API_TOKEN), the operators' token, distinct from the senders' --webhook-token; pass --insecure-skip-auth for local experiments")
	}
	for _, t := range splitList(c.apiToken) {
		if slices.Contains(splitList(c.webhookToken), t) {
			return c, errors.New("--api-token must differ from --webhook-token: a sender's token travels in registry URLs and must not open the API")
		}
	}
	return c, nil
}

func newLogger(c serveConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.logFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	// A step's records carry the event that caused it (handlers.WithLogAttrs).
	return slog.New(handlers.NewContextLogHandler(h))
}

func restConfig(kubeconfig string, qps float64, burst int, log *slog.Logger) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	cfg.UserAgent = "siskin/" + version
	if log.Enabled(context.Background(), slog.LevelDebug) {
		cfg.Wrap(func(next http.RoundTripper) http.RoundTripper { return timedCalls{next: next, log: log} })
	}
	return cfg, nil
}

// reviewClient is a Kubernetes client for token reviews alone: its own rate limiter, so that
// reviews never spend the budget of the steps (and the reviewer's own budget, below the
// client's, answers 429 before the client would queue).
func reviewClient(kcfg *rest.Config, qps float64) (*kubernetes.Clientset, error) {
	cfg := rest.CopyConfig(kcfg)
	cfg.RateLimiter = nil
	cfg.QPS, cfg.Burst = float32(4*qps), int(8*qps)+1
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("token review client: %w", err)
	}
	return kube, nil
}

// guardedTransport is http.DefaultTransport with a dialer that applies the egress policy.
func guardedTransport(p functions.EgressPolicy) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.Control}
	t.DialContext = d.DialContext
	return t
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// timedCalls logs each Kubernetes call and its duration, at --log-level debug: where a step's
// time goes.
type timedCalls struct {
	next http.RoundTripper
	log  *slog.Logger
}

func (t timedCalls) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	t.log.LogAttrs(r.Context(), slog.LevelDebug, "kubernetes call", slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.String("start", start.Format("15:04:05.000000")), slog.Duration("took", time.Since(start)))
	return resp, err
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseServe(args, getenv, stderr)
	if err != nil {
		return err
	}
	return runServer(ctx, cfg, getenv, stdout, stderr)
}

// dashboard is `siskin dashboard`: the dashboard and the API on localhost, for someone with a
// kubeconfig and REDIS_URL. Without --api-token it makes one up and prints it.
func dashboard(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig("dashboard", args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.apiToken == "" && !cfg.insecureSkipAuth {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		cfg.apiToken = base64.RawURLEncoding.EncodeToString(b)
		fmt.Fprintf(stdout, "dashboard token (paste it on the login page): %s\n", cfg.apiToken)
	}
	return runServer(ctx, cfg, getenv, stdout, stderr)
}

// run1 wires the adapters and serves until ctx ends.
func runServer(ctx context.Context, cfg serveConfig, getenv func(string) string, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	if cfg.insecureSkipAuth {
		log.Warn("AUTHENTICATION IS OFF (--insecure-skip-auth): anyone who reaches this server can start, promote and abort releases")
	}

	kcfg, err := restConfig(cfg.kubeconfig, cfg.kubeQPS, cfg.kubeBurst, log)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	ic, err := istioclient.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("istio client: %w", err)
	}
	gwc, err := gatewayclient.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("gateway api client: %w", err)
	}
	rdb, err := state.Open(cfg.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := state.New(rdb, state.Options{Logger: log})

	cluster := deploy.New(kube, dyn, log, deploy.Options{Timeout: cfg.callTimeout})
	router := istio.NewRouter(ic, log, cfg.callTimeout)
	routers := functions.Routers{functions.DefaultProvider: router}
	// One Gateway API router under every name Flagger gives it.
	gatewayRouter := gatewayapi.NewRouter(gwc, log, cfg.callTimeout)
	for _, p := range gatewayapi.Providers {
		routers[p] = gatewayRouter
	}
	templates := templateSource{cluster}
	// Every call to an address a user object names (webhooks, Prometheus, alert providers,
	// registries) goes through one transport that refuses link-local and metadata addresses.
	egress, err := functions.NewEgressPolicy(splitList(cfg.egressDeny), splitList(cfg.egressAllow))
	if err != nil {
		return err
	}
	outbound := guardedTransport(egress)
	analyzer, err := analysis.NewAnalyzer(analysis.AnalyzerConfig{PrometheusURL: cfg.prometheusURL, Templates: templates, Transport: outbound}, log)
	if err != nil {
		return err
	}
	hooks := analysis.NewHooks(analysis.HooksConfig{EventWebhookURL: cfg.eventWebhook, Transport: outbound}, log)
	alertCfg := analysis.AlerterConfig{Providers: templates, ClusterName: cfg.clusterName, Transport: outbound}
	if cfg.alertURL != "" {
		alertCfg.Global = &analysis.AlertTarget{Type: cfg.alertType, URL: cfg.alertURL}
	}
	alerter, err := analysis.NewAlerter(alertCfg, log)
	if err != nil {
		return err
	}
	insecure := splitList(cfg.insecureRegs)
	metrics := handlers.NewMetrics(version)
	// Due times are saved by one process and compared by another: they all read Redis's clock.
	svcCfg := functions.Config{Now: store.Clock(ctx).Now, Namespace: cfg.namespace, MinInterval: cfg.minInterval, LeaseTTL: cfg.leaseTTL,
		StepTimeout: cfg.stepTimeout, Resync: cfg.resync, DispatchWindow: cfg.tickWindow, Parallelism: cfg.parallelism, PushAnyNamespace: cfg.pushScope == "cluster"}
	svcCfg.AfterAct = afterActHook(getenv)
	var emitter functions.Emitter
	if sink := getenv("K_SINK"); sink != "" {
		em, err := analysis.NewEmitter(sink, cfg.callTimeout, log)
		if err != nil {
			return err
		}
		emitter = em
		log.Info("publishing transitions", "sink", sink)
	}
	var dispatcher functions.StepDispatcher
	if cfg.stepSink != "" {
		tokens := splitList(cfg.webhookToken)
		token := ""
		if len(tokens) > 0 {
			token = tokens[0]
		}
		dispatcher = analysis.NewStepSender(cfg.stepSink, token, cfg.stepTimeout+10*time.Second)
		log.Info("dispatching steps as events", "sink", cfg.stepSink)
	}
	svc := functions.New(functions.Deps{Dispatcher: dispatcher,
		Store: store, Workloads: cluster, Routers: routers, Metrics: analyzer, Hooks: hooks, Alerts: alerter,
		Events: eventSink{hooks}, Registry: registry.New(registry.Options{Insecure: insecure, Timeout: cfg.callTimeout, Transport: outbound}),
		Images: cluster, EventLog: cluster, Observer: metrics,
		TargetFinalizer: cluster, Emitter: emitter, History: store,
	}, svcCfg, log)

	opts := handlers.Options{
		WebhookTokens: splitList(cfg.webhookToken), APITokens: splitList(cfg.apiToken),
		GitHubSecret: cfg.githubSecret, InsecureSkipAuth: cfg.insecureSkipAuth,
		TickWindow: cfg.tickWindow, UIReadOnly: cfg.uiReadOnly,
		Ready: []handlers.Checker{
			{Name: "redis", Check: store.Ping},
			{Name: "kubernetes", Check: func(ctx context.Context) error {
				_, err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()
				return err
			}},
		},
	}
	if cfg.oidcAudience != "" {
		reviews, err := reviewClient(kcfg, cfg.oidcReviewQPS)
		if err != nil {
			return err
		}
		opts.OIDC, opts.OIDCAudience = deploy.NewTokenReviewer(reviews, cfg.oidcReviewQPS, int(2*cfg.oidcReviewQPS)+1, min(cfg.callTimeout, 5*time.Second)), cfg.oidcAudience
		opts.OIDCSenders = splitList(cfg.oidcSenders)
	}
	opts.Metrics, opts.Observe = metrics.Handler(), metrics.ObserveEvent

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.addr, err)
	}
	handler := handlers.New(svc, opts, log)
	if cfg.dashboard {
		handler = handlers.NewDashboard(svc, opts, log)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// A tick may keep dispatching for its window, then wait for the steps it sent.
		WriteTimeout: cfg.tickWindow + cfg.stepTimeout + 15*time.Second,
		IdleTimeout:  120 * time.Second,
	}
	fmt.Fprintf(stdout, "siskin %s listening on %s\n", version, ln.Addr())
	if cfg.dashboard {
		fmt.Fprintf(stdout, "dashboard: http://%s/ui/\n", dashboardHost(ln.Addr()))
	}
	log.Info("listening", "addr", ln.Addr().String(), "version", version, "namespace", cfg.namespace, "minInterval", cfg.minInterval)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	// Notifications an abort left running (alerts, post-rollout hooks) finish before exit.
	svc.Drain(shutdown)
	return nil
}

// dashboardHost is where a browser on this machine reaches addr: "localhost" for a loopback or
// unspecified address, which browsers treat as a secure context (the session cookie is Secure).
func dashboardHost(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	if tcp.IP.IsLoopback() || tcp.IP.IsUnspecified() {
		return net.JoinHostPort("localhost", fmt.Sprint(tcp.Port))
	}
	return addr.String()
}

// eventSink forwards the step's events to the canary's `event` webhooks.
type eventSink struct{ hooks *analysis.Hooks }

func (e eventSink) SendEvent(ctx context.Context, c functions.Canary, ev functions.Event) {
	e.hooks.SendEvent(ctx, c, ev)
}

// templateSource adapts the Kubernetes reads of deploy to what analysis needs: the adapters
// never import each other, main translates.
type templateSource struct{ c *deploy.Cluster }

func (t templateSource) MetricTemplate(ctx context.Context, ns, name string) (analysis.MetricTemplate, error) {
	m, err := t.c.MetricTemplate(ctx, ns, name)
	if err != nil {
		return analysis.MetricTemplate{}, err
	}
	out := analysis.MetricTemplate{Query: m.Query, Provider: analysis.MetricProvider{Type: m.ProviderType,
		Address: m.Address, Headers: m.Headers, InsecureSkipVerify: m.InsecureSkipVerify}}
	if m.SecretRef != "" {
		out.Provider.SecretRef = &analysis.SecretRef{Name: m.SecretRef}
	}
	return out, nil
}

func (t templateSource) AlertProvider(ctx context.Context, ns, name string) (analysis.AlertProvider, error) {
	p, err := t.c.AlertProvider(ctx, ns, name)
	if err != nil {
		return analysis.AlertProvider{}, err
	}
	out := analysis.AlertProvider{Type: p.Type, Channel: p.Channel, Username: p.Username, Address: p.Address, Proxy: p.Proxy}
	if p.SecretRef != "" {
		out.SecretRef = &analysis.SecretRef{Name: p.SecretRef}
	}
	return out, nil
}

func (t templateSource) Secret(ctx context.Context, ns, name string) (map[string][]byte, error) {
	return t.c.Secret(ctx, ns, name)
}
