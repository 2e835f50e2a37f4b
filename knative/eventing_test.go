package knative_test

// Knative Eventing publishes no Go module, and no lab runs its webhooks, so the Broker, Triggers
// and sources of eventing.yaml are checked here against schemas of the project's own: Go types
// mirroring knative.dev/eventing's eventing/v1 and sources/v1 API types (and knative.dev/pkg's
// Destination and KReference), decoded strictly so an unknown or misspelt field fails, plus the
// required fields and enums Eventing's validating webhook enforces.

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/analysis"
	"github.com/siskin-dev/siskin/handlers"
)

// kReference mirrors knative.dev/pkg/apis/duck/v1.KReference.
type kReference struct {
	Kind       string  `json:"kind"`
	Namespace  string  `json:"namespace,omitempty"`
	Name       string  `json:"name"`
	APIVersion string  `json:"apiVersion"`
	Group      string  `json:"group,omitempty"`
	Address    *string `json:"address,omitempty"`
}

// destination mirrors knative.dev/pkg/apis/duck/v1.Destination.
type destination struct {
	Ref      *kReference `json:"ref,omitempty"`
	URI      string      `json:"uri,omitempty"`
	CACerts  *string     `json:"CACerts,omitempty"`
	Audience *string     `json:"audience,omitempty"`
}

// deliverySpec mirrors knative.dev/eventing/pkg/apis/duck/v1.DeliverySpec.
type deliverySpec struct {
	DeadLetterSink *destination `json:"deadLetterSink,omitempty"`
	Retry          *int32       `json:"retry,omitempty"`
	Timeout        *string      `json:"timeout,omitempty"`
	BackoffPolicy  *string      `json:"backoffPolicy,omitempty"`
	BackoffDelay   *string      `json:"backoffDelay,omitempty"`
	RetryAfterMax  *string      `json:"retryAfterMax,omitempty"`
	Format         *string      `json:"format,omitempty"`
}

// subscriptionsAPIFilter mirrors eventing/v1.SubscriptionsAPIFilter.
type subscriptionsAPIFilter struct {
	All    []subscriptionsAPIFilter `json:"all,omitempty"`
	Any    []subscriptionsAPIFilter `json:"any,omitempty"`
	Not    *subscriptionsAPIFilter  `json:"not,omitempty"`
	Exact  map[string]string        `json:"exact,omitempty"`
	Prefix map[string]string        `json:"prefix,omitempty"`
	Suffix map[string]string        `json:"suffix,omitempty"`
	SQL    string                   `json:"sql,omitempty"`
}

type broker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Config   *kReference   `json:"config,omitempty"`
		Delivery *deliverySpec `json:"delivery,omitempty"`
	} `json:"spec"`
}

type trigger struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Broker string `json:"broker"`
		Filter *struct {
			Attributes map[string]string `json:"attributes,omitempty"`
		} `json:"filter,omitempty"`
		Filters    []subscriptionsAPIFilter `json:"filters,omitempty"`
		Subscriber destination              `json:"subscriber"`
		Delivery   *deliverySpec            `json:"delivery,omitempty"`
	} `json:"spec"`
}

// sourceSpec mirrors knative.dev/pkg/apis/duck/v1.SourceSpec, inlined in every source.
type sourceSpec struct {
	Sink        destination `json:"sink"`
	CEOverrides *struct {
		Extensions map[string]string `json:"extensions,omitempty"`
	} `json:"ceOverrides,omitempty"`
}

type pingSource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		sourceSpec  `json:",inline"`
		Schedule    string `json:"schedule,omitempty"`
		Timezone    string `json:"timezone,omitempty"`
		ContentType string `json:"contentType,omitempty"`
		Data        string `json:"data,omitempty"`
		DataBase64  string `json:"dataBase64,omitempty"`
	} `json:"spec"`
}

type apiVersionKind struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

type apiServerSource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		sourceSpec `json:",inline"`
		Resources  []struct {
			apiVersionKind `json:",inline"`
			Selector       *metav1.LabelSelector `json:"selector,omitempty"`
		} `json:"resources"`
		Owner              *apiVersionKind          `json:"owner,omitempty"`
		Mode               string                   `json:"mode,omitempty"`
		ServiceAccountName string                   `json:"serviceAccountName,omitempty"`
		NamespaceSelector  *metav1.LabelSelector    `json:"namespaceSelector,omitempty"`
		Filters            []subscriptionsAPIFilter `json:"filters,omitempty"`
	} `json:"spec"`
}

type sinkBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		sourceSpec `json:",inline"`
		// Subject mirrors knative.dev/pkg/tracker.Reference.
		Subject struct {
			APIVersion string                `json:"apiVersion"`
			Kind       string                `json:"kind"`
			Namespace  string                `json:"namespace,omitempty"`
			Name       string                `json:"name,omitempty"`
			Selector   *metav1.LabelSelector `json:"selector,omitempty"`
		} `json:"subject"`
	} `json:"spec"`
}

// decodeStrict decodes an object into its mirror type, refusing unknown fields.
func decodeStrict(obj *unstructured.Unstructured, into any) error {
	b, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(b, into)
}

// problems collects what Eventing's webhook would refuse, with field paths.
type problems []string

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, path+": "+fmt.Sprintf(format, args...))
}

func checkKReference(p *problems, path string, r *kReference) {
	if r.Name == "" {
		p.add(path+".name", "required")
	}
	if r.Kind == "" {
		p.add(path+".kind", "required")
	}
	if r.APIVersion == "" {
		p.add(path+".apiVersion", "required")
	} else if _, err := schema.ParseGroupVersion(r.APIVersion); err != nil {
		p.add(path+".apiVersion", "%v", err)
	}
	if r.Group != "" {
		p.add(path+".group", "needs Eventing's kreference-group feature, off by default")
	}
}

func checkDestination(p *problems, path string, d destination) {
	switch {
	case d.Ref == nil && d.URI == "":
		p.add(path, "expected ref or uri, got none")
	case d.Ref != nil && d.URI != "" && strings.Contains(d.URI, "://"):
		p.add(path+".uri", "absolute URI not allowed with ref")
	case d.Ref == nil && !strings.Contains(d.URI, "://"):
		p.add(path+".uri", "relative URI not allowed without ref")
	case d.Ref != nil:
		checkKReference(p, path+".ref", d.Ref)
	}
	if d.Audience != nil && *d.Audience == "" {
		p.add(path+".audience", "empty")
	}
}

func checkDelivery(p *problems, path string, d *deliverySpec) {
	if d == nil {
		return
	}
	if d.DeadLetterSink != nil {
		checkDestination(p, path+".deadLetterSink", *d.DeadLetterSink)
	}
	if d.Retry != nil && *d.Retry < 0 {
		p.add(path+".retry", "negative")
	}
	if d.Timeout != nil {
		if s, err := isoSeconds(*d.Timeout); err != nil || s <= 0 {
			p.add(path+".timeout", "%q is not a positive ISO 8601 duration", *d.Timeout)
		}
	}
	if d.BackoffPolicy != nil && *d.BackoffPolicy != "linear" && *d.BackoffPolicy != "exponential" {
		p.add(path+".backoffPolicy", "%q, want linear or exponential", *d.BackoffPolicy)
	}
	if d.BackoffDelay != nil {
		if _, err := isoSeconds(*d.BackoffDelay); err != nil {
			p.add(path+".backoffDelay", "%v", err)
		}
	}
	if d.RetryAfterMax != nil {
		p.add(path+".retryAfterMax", "needs Eventing's delivery-retryafter feature, off by default")
	}
	if d.Format != nil && *d.Format != "json" && *d.Format != "binary" {
		p.add(path+".format", "%q, want json or binary", *d.Format)
	}
}

// attributeNameRE is Eventing's rule for CloudEvents attribute names in filters.
var attributeNameRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

func checkFilters(p *problems, path string, fs []subscriptionsAPIFilter) {
	for i, f := range fs {
		at := fmt.Sprintf("%s[%d]", path, i)
		for name, m := range map[string]map[string]string{"exact": f.Exact, "prefix": f.Prefix, "suffix": f.Suffix} {
			if m == nil {
				continue
			}
			if len(m) != 1 {
				p.add(at+"."+name, "exactly one attribute, got %d", len(m))
			}
			for k, v := range m {
				if !attributeNameRE.MatchString(k) || v == "" {
					p.add(at+"."+name, "bad attribute %q=%q", k, v)
				}
			}
		}
		if f.All != nil && len(f.All) == 0 {
			p.add(at+".all", "at least one filter")
		}
		if f.Any != nil && len(f.Any) == 0 {
			p.add(at+".any", "at least one filter")
		}
		checkFilters(p, at+".all", f.All)
		checkFilters(p, at+".any", f.Any)
		if f.Not != nil {
			checkFilters(p, at+".not", []subscriptionsAPIFilter{*f.Not})
		}
	}
}

func checkBroker(b broker) problems {
	var p problems
	if b.Spec.Config != nil {
		checkKReference(&p, "spec.config", b.Spec.Config)
	}
	checkDelivery(&p, "spec.delivery", b.Spec.Delivery)
	return p
}

func checkTrigger(tr trigger) problems {
	var p problems
	if tr.Spec.Broker == "" {
		p.add("spec.broker", "required")
	}
	if tr.Spec.Filter != nil {
		for k := range tr.Spec.Filter.Attributes {
			if !attributeNameRE.MatchString(k) {
				p.add("spec.filter.attributes", "invalid attribute name %q", k)
			}
		}
	}
	checkFilters(&p, "spec.filters", tr.Spec.Filters)
	checkDestination(&p, "spec.subscriber", tr.Spec.Subscriber)
	checkDelivery(&p, "spec.delivery", tr.Spec.Delivery)
	return p
}

func checkPingSource(s pingSource) problems {
	var p problems
	schedule := s.Spec.Schedule
	if schedule == "" {
		schedule = "* * * * *" // Eventing's default
	}
	if err := checkCron(schedule); err != nil {
		p.add("spec.schedule", "%v", err)
	}
	checkDestination(&p, "spec.sink", s.Spec.Sink)
	if s.Spec.Data != "" && s.Spec.DataBase64 != "" {
		p.add("spec", "data and dataBase64 are mutually exclusive")
	}
	if s.Spec.ContentType == "application/json" && s.Spec.Data != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(s.Spec.Data), &obj); err != nil {
			p.add("spec.data", "not a JSON object: %v", err)
		}
	}
	return p
}

func checkAPIServerSource(s apiServerSource) problems {
	var p problems
	if s.Spec.Mode != "Reference" && s.Spec.Mode != "Resource" {
		p.add("spec.mode", "%q, want Reference or Resource", s.Spec.Mode)
	}
	checkDestination(&p, "spec.sink", s.Spec.Sink)
	if len(s.Spec.Resources) == 0 {
		p.add("spec.resources", "required")
	}
	for i, r := range s.Spec.Resources {
		if _, err := schema.ParseGroupVersion(r.APIVersion); err != nil || r.APIVersion == "" {
			p.add(fmt.Sprintf("spec.resources[%d].apiVersion", i), "%q is not a group/version", r.APIVersion)
		}
		if strings.TrimSpace(r.Kind) == "" {
			p.add(fmt.Sprintf("spec.resources[%d].kind", i), "required")
		}
	}
	if s.Spec.ServiceAccountName == "" {
		// Optional for Eventing (it falls back to "default"), but that account may read nothing.
		p.add("spec.serviceAccountName", "required here: the source needs an account allowed to watch its resources")
	}
	if len(s.Spec.Filters) > 0 {
		p.add("spec.filters", "needs Eventing's new-apiserversource-filters feature, off by default")
	}
	return p
}

func checkSinkBinding(s sinkBinding) problems {
	var p problems
	checkDestination(&p, "spec.sink", s.Spec.Sink)
	sub := s.Spec.Subject
	if sub.APIVersion == "" || sub.Kind == "" {
		p.add("spec.subject", "apiVersion and kind required")
	}
	if (sub.Name == "") == (sub.Selector == nil) {
		p.add("spec.subject", "exactly one of name and selector")
	}
	return p
}

// isoSeconds parses the ISO 8601 durations Eventing accepts (PnDTnHnMnS, fractions allowed on
// the last unit) into seconds.
func isoSeconds(s string) (float64, error) {
	m := regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`).FindStringSubmatch(s)
	if m == nil || s == "P" || strings.HasSuffix(s, "T") {
		return 0, fmt.Errorf("%q is not an ISO 8601 duration", s)
	}
	var total float64
	for i, unit := range []float64{86400, 3600, 60, 1} {
		if m[i+1] == "" {
			continue
		}
		v, err := strconv.ParseFloat(m[i+1], 64)
		if err != nil {
			return 0, err
		}
		total += v * unit
	}
	return total, nil
}

// checkCron accepts what PingSource accepts (robfig/cron's standard parser): five fields or a
// predefined @descriptor, @every excepted.
func checkCron(spec string) error {
	if strings.HasPrefix(spec, "@") {
		switch spec {
		case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
			return nil
		}
		return fmt.Errorf("%q: unsupported descriptor", spec)
	}
	fields := strings.Fields(spec)
	if len(fields) != 5 {
		return fmt.Errorf("%q: want 5 fields, got %d", spec, len(fields))
	}
	bounds := []struct {
		name     string
		min, max int
		names    []string
	}{
		{"minute", 0, 59, nil},
		{"hour", 0, 23, nil},
		{"day of month", 1, 31, nil},
		{"month", 1, 12, []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
		{"day of week", 0, 6, []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
	}
	for i, f := range fields {
		b := bounds[i]
		value := func(s string) (int, error) {
			if j := slices.Index(b.names, strings.ToLower(s)); j >= 0 {
				return j + b.min, nil
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < b.min || n > b.max {
				return 0, fmt.Errorf("%s %q: want %d-%d", b.name, s, b.min, b.max)
			}
			return n, nil
		}
		for _, part := range strings.Split(f, ",") {
			rng, step, hasStep := strings.Cut(part, "/")
			if hasStep {
				if n, err := strconv.Atoi(step); err != nil || n <= 0 {
					return fmt.Errorf("%s step %q", b.name, step)
				}
			}
			if rng == "*" || rng == "?" {
				continue
			}
			lo, hi, isRange := strings.Cut(rng, "-")
			l, err := value(lo)
			if err != nil {
				return err
			}
			if isRange {
				h, err := value(hi)
				if err != nil {
					return err
				}
				if h < l {
					return fmt.Errorf("%s range %q is backwards", b.name, rng)
				}
			}
		}
	}
	return nil
}

// eventingObjects decodes every Eventing object of a build into its mirror type, strictly.
type eventingObjects struct {
	brokers     []broker
	triggers    []trigger
	pings       []pingSource
	apiServers  []apiServerSource
	sinkBinding []sinkBinding
}

func decodeEventing(t *testing.T, objs []*unstructured.Unstructured) eventingObjects {
	t.Helper()
	var e eventingObjects
	for _, o := range objs {
		var err error
		switch o.GroupVersionKind() {
		case schema.GroupVersionKind{Group: "eventing.knative.dev", Version: "v1", Kind: "Broker"}:
			var b broker
			err = decodeStrict(o, &b)
			e.brokers = append(e.brokers, b)
		case schema.GroupVersionKind{Group: "eventing.knative.dev", Version: "v1", Kind: "Trigger"}:
			var tr trigger
			err = decodeStrict(o, &tr)
			e.triggers = append(e.triggers, tr)
		case schema.GroupVersionKind{Group: "sources.knative.dev", Version: "v1", Kind: "PingSource"}:
			var s pingSource
			err = decodeStrict(o, &s)
			e.pings = append(e.pings, s)
		case schema.GroupVersionKind{Group: "sources.knative.dev", Version: "v1", Kind: "ApiServerSource"}:
			var s apiServerSource
			err = decodeStrict(o, &s)
			e.apiServers = append(e.apiServers, s)
		case schema.GroupVersionKind{Group: "sources.knative.dev", Version: "v1", Kind: "SinkBinding"}:
			var s sinkBinding
			err = decodeStrict(o, &s)
			e.sinkBinding = append(e.sinkBinding, s)
		default:
			if g := o.GroupVersionKind().Group; g == "eventing.knative.dev" || g == "sources.knative.dev" || g == "messaging.knative.dev" {
				t.Errorf("%s: %s has no schema in this test", objectID(o), o.GetAPIVersion())
			}
		}
		if err != nil {
			t.Errorf("%s: %v", objectID(o), err)
		}
	}
	return e
}

func TestEventingObjectsMatchTheirSchemas(t *testing.T) {
	for _, dir := range []string{".", "overlays/external-redis"} {
		t.Run(dir, func(t *testing.T) {
			e := decodeEventing(t, kustomizeBuild(t, dir))
			if len(e.brokers) != 1 || len(e.pings) != 1 || len(e.apiServers) == 0 || len(e.sinkBinding) != 1 || len(e.triggers) == 0 {
				t.Fatalf("got %d Brokers, %d PingSources, %d ApiServerSources, %d SinkBindings, %d Triggers; want one of each, some ApiServerSources and some Triggers",
					len(e.brokers), len(e.pings), len(e.apiServers), len(e.sinkBinding), len(e.triggers))
			}
			report := func(id string, p problems) {
				for _, msg := range p {
					t.Errorf("%s: %s", id, msg)
				}
			}
			report("Broker "+e.brokers[0].Name, checkBroker(e.brokers[0]))
			report("PingSource "+e.pings[0].Name, checkPingSource(e.pings[0]))
			for _, src := range e.apiServers {
				report("ApiServerSource "+src.Name, checkAPIServerSource(src))
			}
			report("SinkBinding "+e.sinkBinding[0].Name, checkSinkBinding(e.sinkBinding[0]))
			for _, tr := range e.triggers {
				report("Trigger "+tr.Name, checkTrigger(tr))
			}
		})
	}
}

// The schema checks must be able to fail: each broken object is refused for its reason.
func TestEventingSchemasRefuseBrokenObjects(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	first := func(kind string) *unstructured.Unstructured {
		for _, o := range objs {
			if o.GetKind() == kind && (o.GroupVersionKind().Group == "eventing.knative.dev" || o.GroupVersionKind().Group == "sources.knative.dev") {
				return o.DeepCopy()
			}
		}
		t.Fatalf("no %s in the bundle", kind)
		return nil
	}
	set := func(o *unstructured.Unstructured, v any, path ...string) *unstructured.Unstructured {
		if err := unstructured.SetNestedField(o.Object, v, path...); err != nil {
			t.Fatal(err)
		}
		return o
	}
	del := func(o *unstructured.Unstructured, path ...string) *unstructured.Unstructured {
		unstructured.RemoveNestedField(o.Object, path...)
		return o
	}
	tests := []struct {
		name string
		obj  *unstructured.Unstructured
		want string // in the decoding error or a problem
	}{
		{"trigger without broker", del(first("Trigger"), "spec", "broker"), "spec.broker: required"},
		{"trigger with a misspelt field", set(first("Trigger"), "siskin", "spec", "brokr"), `unknown field "brokr"`},
		{"trigger subscriber without ref or uri", del(first("Trigger"), "spec", "subscriber", "ref"), "spec.subscriber: expected ref or uri"},
		{"trigger subscriber ref without name", del(first("Trigger"), "spec", "subscriber", "ref", "name"), "spec.subscriber.ref.name: required"},
		{"trigger filter on a bad attribute name", set(first("Trigger"), map[string]any{"Type": "x"}, "spec", "filter", "attributes"), `invalid attribute name "Type"`},
		{"ping every 5 minutes by descriptor", set(first("PingSource"), "@every 5m", "spec", "schedule"), "unsupported descriptor"},
		{"ping on minute 60", set(first("PingSource"), "60 * * * *", "spec", "schedule"), `minute "60"`},
		{"ping with four fields", set(first("PingSource"), "* * * *", "spec", "schedule"), "want 5 fields"},
		{"ping without sink", del(first("PingSource"), "spec", "sink"), "spec.sink: expected ref or uri"},
		{"ping data not JSON", set(first("PingSource"), "tick", "spec", "data"), "spec.data: not a JSON object"},
		{"apiserver mode Ref", set(first("ApiServerSource"), "Ref", "spec", "mode"), `spec.mode: "Ref"`},
		{"apiserver without resources", del(first("ApiServerSource"), "spec", "resources"), "spec.resources: required"},
		{"apiserver without service account", del(first("ApiServerSource"), "spec", "serviceAccountName"), "spec.serviceAccountName: required"},
		{"apiserver resource without kind", set(first("ApiServerSource"), []any{map[string]any{"apiVersion": "apps/v1"}}, "spec", "resources"), "spec.resources[0].kind: required"},
		{"broker backoff policy", set(first("Broker"), "quadratic", "spec", "delivery", "backoffPolicy"), `"quadratic", want linear or exponential`},
		{"broker timeout not ISO 8601", set(first("Broker"), "130s", "spec", "delivery", "timeout"), "not a positive ISO 8601 duration"},
		{"sinkbinding subject with neither name nor selector", del(first("SinkBinding"), "spec", "subject", "name"), "exactly one of name and selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			e := decodeEventingQuiet(tt.obj)
			if e.err != nil {
				got = append(got, e.err.Error())
			}
			got = append(got, e.problems...)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tt.want) }) {
				t.Errorf("got %q, want a refusal containing %q", got, tt.want)
			}
		})
	}
}

type checked struct {
	err      error
	problems problems
}

func decodeEventingQuiet(o *unstructured.Unstructured) checked {
	var c checked
	switch o.GetKind() {
	case "Broker":
		var b broker
		if c.err = decodeStrict(o, &b); c.err == nil {
			c.problems = checkBroker(b)
		}
	case "Trigger":
		var tr trigger
		if c.err = decodeStrict(o, &tr); c.err == nil {
			c.problems = checkTrigger(tr)
		}
	case "PingSource":
		var s pingSource
		if c.err = decodeStrict(o, &s); c.err == nil {
			c.problems = checkPingSource(s)
		}
	case "ApiServerSource":
		var s apiServerSource
		if c.err = decodeStrict(o, &s); c.err == nil {
			c.problems = checkAPIServerSource(s)
		}
	case "SinkBinding":
		var s sinkBinding
		if c.err = decodeStrict(o, &s); c.err == nil {
			c.problems = checkSinkBinding(s)
		}
	}
	return c
}

func TestISODurationsAndCron(t *testing.T) {
	durations := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"PT0.5S", 0.5, true}, {"PT130S", 130, true}, {"PT2M", 120, true}, {"P1DT1H", 90000, true},
		{"130s", 0, false}, {"PT", 0, false}, {"P", 0, false}, {"PT1.5M", 0, false},
	}
	for _, tt := range durations {
		got, err := isoSeconds(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("isoSeconds(%q): got %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	crons := []struct {
		in string
		ok bool
	}{
		{"* * * * *", true}, {"*/5 0-23 1,15 jan-dec mon-fri", true}, {"@hourly", true}, {"0 12 * * SUN", true},
		{"@every 1m", false}, {"* * * *", false}, {"* 24 * * *", false}, {"* * 0 * *", false}, {"*/0 * * * *", false}, {"5-1 * * * *", false},
	}
	for _, tt := range crons {
		if err := checkCron(tt.in); (err == nil) != tt.ok {
			t.Errorf("checkCron(%q): got %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

// sampleData is a body each event type carries in real life, for Siskin's decoder.
func sampleData(t *testing.T, ceType string) (contentType string, data []byte) {
	t.Helper()
	switch ceType {
	case handlers.TypePing:
		return "application/json", []byte(`{"tick":"advance"}`)
	case "dev.knative.apiserver.ref.add", "dev.knative.apiserver.ref.update", "dev.knative.apiserver.ref.delete":
		return "application/json", []byte(`{"kind":"Deployment","namespace":"test","name":"podinfo","apiVersion":"apps/v1"}`)
	case "dev.knative.apiserver.resource.add", "dev.knative.apiserver.resource.update", "dev.knative.apiserver.resource.delete":
		return "application/json", []byte(`{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"namespace":"test","name":"podinfo"},"spec":{"hosts":["podinfo"]}}`)
	case handlers.TypeImagePushed:
		return "application/json", []byte(`{"repository":"shop/cart","tag":"1.2.3"}`)
	case "harbor.artifact.pushed":
		return "application/json", []byte(`{"resources":[{"digest":"sha256:` + strings.Repeat("a", 64) + `","tag":"v3"}],"repository":{"repo_full_name":"shop/cart"}}`)
	case handlers.TypeAlertmanagerNotification:
		b, err := os.ReadFile("../handlers/testdata/alertmanager/alertmanager-0.25-firing.json")
		if err != nil {
			t.Fatal(err)
		}
		return "application/json", b
	}
	t.Fatalf("no sample data for %s", ceType)
	return "", nil
}

func decodeType(t *testing.T, ceType, contentType string, data []byte) handlers.Inbound {
	t.Helper()
	e := event.New()
	e.SetID("1")
	e.SetSource("/test")
	e.SetType(ceType)
	if err := e.SetData(contentType, data); err != nil {
		t.Fatal(err)
	}
	in, err := handlers.DecodeCloudEvent(e)
	if err != nil {
		t.Fatalf("%s: Siskin refuses it: %v", ceType, err)
	}
	return in
}

// The Triggers route to Siskin exactly the event types it acts on, from the objects the bundle
// installs: every filtered type is one Siskin decodes into an action, every type a bundled
// source emits that Siskin acts on has a Trigger, and Siskin's own transition events loop back
// through none.
func TestTriggersRouteWhatSiskinHandles(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	e := decodeEventing(t, objs)
	ksvc := find(objs, "Service", "siskin")
	if ksvc == nil {
		t.Fatal("no Knative Service siskin")
	}
	if len(e.brokers) != 1 || len(e.pings) != 1 || len(e.apiServers) == 0 || len(e.sinkBinding) != 1 {
		t.Fatal("want one Broker, PingSource and SinkBinding and some ApiServerSources (see TestEventingObjectsMatchTheirSchemas)")
	}
	audience, _ := containerEnv(t, ksvc)["SISKIN_OIDC_AUDIENCE"]["value"].(string)
	routed := map[string]string{}
	for _, tr := range e.triggers {
		if tr.Spec.Broker != e.brokers[0].Name {
			t.Errorf("Trigger %s: broker %q, want the bundle's %q", tr.Name, tr.Spec.Broker, e.brokers[0].Name)
		}
		ref := tr.Spec.Subscriber.Ref
		if ref == nil || ref.APIVersion != "serving.knative.dev/v1" || ref.Kind != "Service" || ref.Name != ksvc.GetName() {
			t.Errorf("Trigger %s: subscriber %+v, want the Knative Service %s", tr.Name, ref, ksvc.GetName())
		}
		if a := tr.Spec.Subscriber.Audience; audience == "" || a == nil || *a != audience {
			t.Errorf("Trigger %s: subscriber audience %v, want SISKIN_OIDC_AUDIENCE %q so that Eventing's OIDC token passes", tr.Name, a, audience)
		}
		if tr.Spec.Filter == nil || len(tr.Spec.Filter.Attributes) != 1 || tr.Spec.Filter.Attributes["type"] == "" {
			t.Errorf("Trigger %s: want a filter on type alone", tr.Name)
			continue
		}
		ceType := tr.Spec.Filter.Attributes["type"]
		if other, dup := routed[ceType]; dup {
			t.Errorf("Triggers %s and %s both route %s: Siskin would get it twice", other, tr.Name, ceType)
		}
		routed[ceType] = tr.Name
		if strings.HasPrefix(ceType, analysis.TransitionEventPrefix) {
			t.Errorf("Trigger %s routes Siskin's own %s back to it", tr.Name, ceType)
		}
		ct, data := sampleData(t, ceType)
		if in := decodeType(t, ceType, ct, data); in.Kind == handlers.InboundIgnored {
			t.Errorf("Trigger %s routes %s, which Siskin ignores (%s)", tr.Name, ceType, in.Reason)
		}
	}

	// What the bundled sources emit.
	ping := e.pings[0]
	if in := decodeType(t, handlers.TypePing, ping.Spec.ContentType, []byte(ping.Spec.Data)); in.Kind != handlers.InboundTick {
		t.Errorf("the PingSource's event decodes as %s, want a tick", in.Kind)
	}
	emitted := []string{handlers.TypePing}
	for _, src := range e.apiServers {
		mode := map[string]string{"Reference": "ref", "Resource": "resource"}[src.Spec.Mode]
		for _, verb := range []string{"add", "update", "delete"} {
			emitted = append(emitted, "dev.knative.apiserver."+mode+"."+verb)
		}
	}
	for _, ceType := range emitted {
		ct, data := sampleData(t, ceType)
		acts := decodeType(t, ceType, ct, data).Kind != handlers.InboundIgnored
		if _, ok := routed[ceType]; acts && !ok {
			t.Errorf("a bundled source emits %s, which Siskin acts on, but no Trigger routes it", ceType)
		}
	}
	// The ApiServerSources watch every namespace: canaries live anywhere.
	for _, src := range e.apiServers {
		if sel := src.Spec.NamespaceSelector; sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) != 0 {
			t.Errorf("ApiServerSource %s namespaceSelector %v: want {} (all namespaces); without it only %s is watched", src.Name, sel, src.Namespace)
		}
	}
	// The SinkBinding gives the Knative Service K_SINK, the Broker.
	sb := e.sinkBinding[0]
	if sb.Spec.Subject.Kind != "Service" || sb.Spec.Subject.APIVersion != "serving.knative.dev/v1" || sb.Spec.Subject.Name != ksvc.GetName() {
		t.Errorf("SinkBinding subject %+v, want the Knative Service %s", sb.Spec.Subject, ksvc.GetName())
	}
	sinks := []struct {
		what string
		dst  destination
	}{{"PingSource sink", ping.Spec.Sink}, {"SinkBinding sink", sb.Spec.Sink}}
	for _, src := range e.apiServers {
		sinks = append(sinks, struct {
			what string
			dst  destination
		}{"ApiServerSource " + src.Name + " sink", src.Spec.Sink})
	}
	for _, d := range sinks {
		if r := d.dst.Ref; r == nil || r.Kind != "Broker" || r.Name != e.brokers[0].Name {
			t.Errorf("%s: %+v, want the Broker %s", d.what, r, e.brokers[0].Name)
		}
	}
}

// The Broker gives up on a delivery only after Knative has ended the request (timeoutSeconds),
// so a retried tick never overlaps the one still running.
func TestBrokerTimeoutOutlastsTheService(t *testing.T) {
	objs := kustomizeBuild(t, ".")
	e := decodeEventing(t, objs)
	ksvc := find(objs, "Service", "siskin")
	if ksvc == nil || len(e.brokers) != 1 {
		t.Fatal("want the Knative Service siskin and one Broker")
	}
	timeout, _, _ := unstructured.NestedInt64(ksvc.Object, "spec", "template", "spec", "timeoutSeconds")
	d := e.brokers[0].Spec.Delivery
	if d == nil || d.Timeout == nil {
		t.Fatal("Broker: no delivery timeout")
	}
	got, err := isoSeconds(*d.Timeout)
	if err != nil || got <= float64(timeout) {
		t.Errorf("Broker delivery timeout %s: want more than the Service's timeoutSeconds %d", *d.Timeout, timeout)
	}
	w, _ := containerEnv(t, ksvc)["SISKIN_TICK_WINDOW"]["value"].(string)
	window, err := time.ParseDuration(w)
	if err != nil || window <= 0 || window >= time.Duration(timeout)*time.Second {
		t.Errorf("SISKIN_TICK_WINDOW %v: want below timeoutSeconds %d, leaving room to finish a step", window, timeout)
	}
}
