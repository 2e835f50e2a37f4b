package functions

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Flagger's defaults (flagger.app/v1beta1, pkg/apis/flagger/v1beta1/canary.go).
const (
	DefaultProgressDeadlineSeconds = 600
	DefaultAnalysisInterval        = 60 * time.Second
	MinAnalysisInterval            = 10 * time.Second
	DefaultReadyThreshold          = 100
	DefaultMetricInterval          = "1m"
	DefaultWebhookTimeout          = 10 * time.Second
	DefaultMaxWeight               = 100
	DefaultSessionMaxAge           = 86400
)

// Strategy is Flagger's deployment strategy, derived from the analysis fields.
type Strategy string

const (
	StrategyCanary    Strategy = "canary"
	StrategyBlueGreen Strategy = "blue-green"
	StrategyABTesting Strategy = "ab-testing"
)

// Key names one Canary.
type Key struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// ParseKey reads "namespace/name".
func ParseKey(s string) (Key, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return Key{}, fmt.Errorf("%w: canary key %q is not namespace/name", ErrInvalid, s)
	}
	return Key{Namespace: ns, Name: name}, nil
}

// Canary is a flagger.app/v1beta1 Canary as read from the cluster.
type Canary struct {
	Key
	UID         string
	Generation  int64
	Annotations map[string]string
	Deleting    bool // metadata.deletionTimestamp is set
	Finalizers  []string
	// DecodeError says why the spec could not be read as a whole (Spec holds what could).
	DecodeError string
	Spec        Spec
	Status      Status
}

// Spec mirrors Flagger's CanarySpec for the fields Siskin honours.
type Spec struct {
	// Provider is the mesh; Siskin drives Istio only.
	Provider string `json:"provider,omitempty"`
	// MetricsServer overrides the Prometheus URL for this canary's built-in and inline queries.
	MetricsServer           string         `json:"metricsServer,omitempty"`
	TargetRef               TargetRef      `json:"targetRef"`
	AutoscalerRef           *AutoscalerRef `json:"autoscalerRef,omitempty"`
	Service                 ServiceSpec    `json:"service"`
	Analysis                *Analysis      `json:"analysis,omitempty"`
	ProgressDeadlineSeconds *int32         `json:"progressDeadlineSeconds,omitempty"`
	SkipAnalysis            bool           `json:"skipAnalysis,omitempty"`
	RevertOnDeletion        bool           `json:"revertOnDeletion,omitempty"`
	Suspend                 bool           `json:"suspend,omitempty"`
}

type TargetRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name"`
}

type AutoscalerRef struct {
	APIVersion            string                 `json:"apiVersion,omitempty"`
	Kind                  string                 `json:"kind,omitempty"`
	Name                  string                 `json:"name"`
	PrimaryScalerReplicas *PrimaryScalerReplicas `json:"primaryScalerReplicas,omitempty"`
}

type PrimaryScalerReplicas struct {
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`
}

// ServiceSpec is spec.service. The Istio-shaped fields stay as raw JSON: the domain never looks
// inside them, the istio package decodes them into istio.io/api types.
type ServiceSpec struct {
	Name          string          `json:"name,omitempty"`
	Port          int32           `json:"port"`
	PortName      string          `json:"portName,omitempty"`
	TargetPort    json.RawMessage `json:"targetPort,omitempty"`
	AppProtocol   string          `json:"appProtocol,omitempty"`
	PortDiscovery bool            `json:"portDiscovery,omitempty"`
	Headless      bool            `json:"headless,omitempty"`
	Timeout       string          `json:"timeout,omitempty"`
	// BackendTimeout is the Gateway API's timeouts.backendRequest (provider gatewayapi:*).
	BackendTimeout string   `json:"backendTimeout,omitempty"`
	Gateways       []string `json:"gateways,omitempty"`
	// GatewayRefs are the HTTPRoute's parentRefs (provider gatewayapi:*), raw like the Istio
	// fields: the gatewayapi package decodes them.
	GatewayRefs   json.RawMessage `json:"gatewayRefs,omitempty"`
	Hosts         []string        `json:"hosts,omitempty"`
	Delegation    bool            `json:"delegation,omitempty"`
	TrafficPolicy json.RawMessage `json:"trafficPolicy,omitempty"`
	Match         json.RawMessage `json:"match,omitempty"`
	Rewrite       json.RawMessage `json:"rewrite,omitempty"`
	Retries       json.RawMessage `json:"retries,omitempty"`
	Headers       json.RawMessage `json:"headers,omitempty"`
	CorsPolicy    json.RawMessage `json:"corsPolicy,omitempty"`
	// Mirror lists Gateway API RequestMirror filters put on every rule (provider gatewayapi:*).
	Mirror  json.RawMessage `json:"mirror,omitempty"`
	Apex    *ServiceMeta    `json:"apex,omitempty"`
	Primary *ServiceMeta    `json:"primary,omitempty"`
	Canary  *ServiceMeta    `json:"canary,omitempty"`
}

// ServiceMeta is spec.service.{apex,primary,canary}. Host is Siskin's addition: the expected
// in-cluster name of the generated Service, checked against what Siskin generates.
type ServiceMeta struct {
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Host        string            `json:"host,omitempty"`
}

// Analysis is spec.analysis (or the deprecated spec.canaryAnalysis).
type Analysis struct {
	Interval              string           `json:"interval,omitempty"`
	Threshold             int              `json:"threshold,omitempty"`
	Iterations            int              `json:"iterations,omitempty"`
	MaxWeight             int              `json:"maxWeight,omitempty"`
	StepWeight            int              `json:"stepWeight,omitempty"`
	StepWeights           []int            `json:"stepWeights,omitempty"`
	StepWeightPromotion   int              `json:"stepWeightPromotion,omitempty"`
	Mirror                bool             `json:"mirror,omitempty"`
	MirrorWeight          int              `json:"mirrorWeight,omitempty"`
	PrimaryReadyThreshold *int             `json:"primaryReadyThreshold,omitempty"`
	CanaryReadyThreshold  *int             `json:"canaryReadyThreshold,omitempty"`
	Match                 json.RawMessage  `json:"match,omitempty"`
	SessionAffinity       *SessionAffinity `json:"sessionAffinity,omitempty"`
	Metrics               []Metric         `json:"metrics,omitempty"`
	Webhooks              []Webhook        `json:"webhooks,omitempty"`
	Alerts                []AlertRef       `json:"alerts,omitempty"`
}

type SessionAffinity struct {
	CookieName        string `json:"cookieName"`
	PrimaryCookieName string `json:"primaryCookieName,omitempty"`
	Domain            string `json:"domain,omitempty"`
	HTTPOnly          bool   `json:"httpOnly,omitempty"`
	MaxAge            int    `json:"maxAge,omitempty"`
	Partitioned       bool   `json:"partitioned,omitempty"`
	Path              string `json:"path,omitempty"`
	SameSite          string `json:"sameSite,omitempty"`
	Secure            bool   `json:"secure,omitempty"`
}

type Metric struct {
	Name              string            `json:"name"`
	Interval          string            `json:"interval,omitempty"`
	Threshold         *float64          `json:"threshold,omitempty"`
	ThresholdRange    *ThresholdRange   `json:"thresholdRange,omitempty"`
	Query             string            `json:"query,omitempty"`
	TemplateRef       *CrossRef         `json:"templateRef,omitempty"`
	TemplateVariables map[string]string `json:"templateVariables,omitempty"`
}

// MetricKind is how a metric is measured. Flagger runs every applicable check for one metric;
// Siskin takes one measurement: a template wins, then an inline query, then a built-in name.
type MetricKind int

const (
	MetricUnusable MetricKind = iota
	MetricFromTemplate
	MetricInline
	MetricBuiltin
)

func (m Metric) Kind() MetricKind {
	switch {
	case m.TemplateRef != nil && m.TemplateRef.Name != "":
		return MetricFromTemplate
	case m.Query != "":
		return MetricInline
	case m.Name == MetricRequestSuccessRate || m.Name == MetricRequestDuration:
		return MetricBuiltin
	}
	return MetricUnusable
}

type ThresholdRange struct {
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
}

// CrossRef names an object that may live in another namespace (empty: the canary's).
type CrossRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

type HookType string

const (
	HookConfirmRollout         HookType = "confirm-rollout"
	HookPreRollout             HookType = "pre-rollout"
	HookRollout                HookType = "rollout"
	HookConfirmTrafficIncrease HookType = "confirm-traffic-increase"
	HookConfirmPromotion       HookType = "confirm-promotion"
	HookPostRollout            HookType = "post-rollout"
	HookRollback               HookType = "rollback"
	HookEvent                  HookType = "event"
)

var hookTypes = []HookType{HookConfirmRollout, HookPreRollout, HookRollout, HookConfirmTrafficIncrease,
	HookConfirmPromotion, HookPostRollout, HookRollback, HookEvent}

type Webhook struct {
	Type       HookType          `json:"type,omitempty"`
	Name       string            `json:"name"`
	URL        string            `json:"url"`
	MuteAlert  bool              `json:"muteAlert,omitempty"`
	Timeout    string            `json:"timeout,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Retries    int               `json:"retries,omitempty"`
	DisableTLS bool              `json:"disableTLS,omitempty"`
}

// EffectiveType maps Flagger's empty type to rollout.
func (w Webhook) EffectiveType() HookType {
	if w.Type == "" {
		return HookRollout
	}
	return w.Type
}

// TimeoutDuration is the webhook's timeout with Flagger's default.
func (w Webhook) TimeoutDuration() time.Duration {
	if len(w.Timeout) < 2 {
		return DefaultWebhookTimeout
	}
	d, err := time.ParseDuration(w.Timeout)
	if err != nil || d <= 0 {
		return DefaultWebhookTimeout
	}
	return d
}

type Severity string

const (
	SeverityInfo  Severity = "info"
	SeverityWarn  Severity = "warn"
	SeverityError Severity = "error"
)

type AlertRef struct {
	Name        string   `json:"name"`
	Severity    Severity `json:"severity,omitempty"`
	ProviderRef CrossRef `json:"providerRef"`
}

// Status is Flagger's CanaryStatus, plus Siskin's own fields under names Flagger does not use.
type Status struct {
	Phase                         Phase             `json:"phase,omitempty"`
	FailedChecks                  int               `json:"failedChecks"`
	CanaryWeight                  int               `json:"canaryWeight"`
	Iterations                    int               `json:"iterations"`
	TrackedConfigs                map[string]string `json:"trackedConfigs,omitempty"`
	LastAppliedSpec               string            `json:"lastAppliedSpec,omitempty"`
	LastPromotedSpec              string            `json:"lastPromotedSpec,omitempty"`
	LastTransitionTime            time.Time         `json:"lastTransitionTime,omitzero"`
	SessionAffinityCookie         string            `json:"sessionAffinityCookie,omitempty"`
	PrimarySessionAffinityCookie  string            `json:"primarySessionAffinityCookie,omitempty"`
	PreviousSessionAffinityCookie string            `json:"previousSessionAffinityCookie,omitempty"`
	Conditions                    []Condition       `json:"conditions,omitempty"`
	// Siskin's additions.
	Message   string   `json:"message,omitempty"`
	Trigger   *Trigger `json:"trigger,omitempty"`
	SpecError string   `json:"specError,omitempty"`
}

type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	LastUpdateTime     time.Time `json:"lastUpdateTime,omitzero"`
	LastTransitionTime time.Time `json:"lastTransitionTime,omitzero"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message,omitempty"`
}

// Trigger records which event started (or ended) a release.
type Trigger struct {
	Kind    string    `json:"kind"` // push, alert, manual, change
	EventID string    `json:"eventID,omitempty"`
	Source  string    `json:"source,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// Names are the objects Siskin generates for a canary, with Flagger's naming.
type Names struct {
	Target, Primary             string // Deployments
	Apex, PrimarySvc, CanarySvc string // Services (and DestinationRules for primary/canary, VirtualService for apex)
}

func (c Canary) Names() Names {
	apex := c.Spec.Service.Name
	if apex == "" {
		apex = c.Spec.TargetRef.Name
	}
	return Names{
		Target:     c.Spec.TargetRef.Name,
		Primary:    c.Spec.TargetRef.Name + "-primary",
		Apex:       apex,
		PrimarySvc: apex + "-primary",
		CanarySvc:  apex + "-canary",
	}
}

// Strategy follows Flagger's DeploymentStrategy.
func (s Spec) Strategy() Strategy {
	a := s.Analysis
	switch {
	case a == nil:
		return StrategyCanary
	case len(a.Match) > 0 && string(a.Match) != "null" && string(a.Match) != "[]" && a.Iterations > 0:
		return StrategyABTesting
	case a.Iterations > 0:
		return StrategyBlueGreen
	}
	return StrategyCanary
}

// SkipsAnalysis is Flagger's SkipAnalysis: true also when there is no analysis at all.
func (s Spec) SkipsAnalysis() bool { return s.SkipAnalysis || s.Analysis == nil }

func (s Spec) analysis() Analysis {
	if s.Analysis == nil {
		return Analysis{}
	}
	return *s.Analysis
}

// Interval is the analysis interval with Flagger's default, raised to floor.
func (s Spec) Interval(floor time.Duration) time.Duration {
	d := DefaultAnalysisInterval
	if iv := s.analysis().Interval; iv != "" {
		if p, err := parseFlaggerDuration(iv); err == nil {
			d = p
		}
	}
	if d < floor {
		d = floor
	}
	return d
}

// parseFlaggerDuration accepts Go durations ("1m", "30s", "1m30s").
func parseFlaggerDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q is not positive", s)
	}
	return d, nil
}

// Threshold is failed checks before rollback; <= 0 becomes 1.
func (s Spec) Threshold() int {
	if t := s.analysis().Threshold; t > 0 {
		return t
	}
	return 1
}

// MaxWeight follows Flagger's maxWeight(): default 100; with stepWeights, min(100, last rung).
func (s Spec) MaxWeight() int {
	a := s.analysis()
	if a.StepWeight <= 0 && len(a.StepWeights) > 0 {
		last := a.StepWeights[len(a.StepWeights)-1]
		if last > 100 {
			return 100
		}
		return last
	}
	if a.MaxWeight > 0 {
		return a.MaxWeight
	}
	return DefaultMaxWeight
}

func (s Spec) PrimaryReadyThreshold() int {
	if p := s.analysis().PrimaryReadyThreshold; p != nil {
		return *p
	}
	return DefaultReadyThreshold
}

func (s Spec) CanaryReadyThreshold() int {
	if p := s.analysis().CanaryReadyThreshold; p != nil {
		return *p
	}
	return DefaultReadyThreshold
}

func (s Spec) ProgressDeadline() time.Duration {
	if p := s.ProgressDeadlineSeconds; p != nil {
		return time.Duration(*p) * time.Second
	}
	return DefaultProgressDeadlineSeconds * time.Second
}

// Hooks returns the webhooks of one type, in declaration order.
func (s Spec) Hooks(t HookType) []Webhook {
	var out []Webhook
	for _, w := range s.analysis().Webhooks {
		if w.EffectiveType() == t {
			out = append(out, w)
		}
	}
	return out
}

// IsTCP reports whether the Istio router emits tcp routes.
func (s Spec) IsTCP() bool { return strings.EqualFold(s.Service.AppProtocol, "tcp") }
