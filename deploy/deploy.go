// Package deploy is Siskin's Kubernetes side, with client-go: the flagger.app Canary,
// MetricTemplate and AlertProvider resources, the Canary's status and Events, and the workloads
// Flagger manages for a canary (the primary Deployment and its HPA, the tracked ConfigMaps and
// Secrets, the apex, primary and canary Services), with Flagger's names and shapes.
//
// Every method does a bounded amount of work and returns: there is no informer, no cache and no
// background goroutine. Every API call has its own timeout (Options.Timeout). Writes follow
// get → compute → write only if changed, and compare only the fields Siskin owns, so that the
// apiserver's defaulting never makes an object look changed.
package deploy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/kubeapi"
)

// Flagger's API group and the resources Siskin reads.
var (
	CanaryGVR         = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}
	MetricTemplateGVR = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "metrictemplates"}
	AlertProviderGVR  = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "alertproviders"}
)

const (
	canaryAPIVersion = "flagger.app/v1beta1"
	canaryKind       = "Canary"
	// FinalizerName is Flagger's finalizer for revertOnDeletion.
	FinalizerName = "finalizer.flagger.app"
	// fieldManager names Siskin in managedFields.
	fieldManager = "siskin"
	// eventComponent is the source of the Events Siskin records.
	eventComponent = "siskin"
)

// DefaultSelectorLabels is Flagger's -selector-labels default.
var DefaultSelectorLabels = []string{"app", "name", "app.kubernetes.io/name"}

// DefaultTimeout bounds each API call when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Options configure a Cluster.
type Options struct {
	// Timeout bounds every API call (default DefaultTimeout).
	Timeout time.Duration
	// SelectorLabels: the first of these found in the target's spec.selector.matchLabels is the
	// selector label (Flagger's -selector-labels; default DefaultSelectorLabels).
	SelectorLabels []string
	// IncludeLabelPrefixes: which target labels (and, on promotion, annotations) are copied to
	// the primary Deployment and the -primary ConfigMaps and Secrets (Flagger's
	// -include-label-prefix; "*" copies all; default none). Keys containing toolkit.fluxcd.io
	// are never copied.
	IncludeLabelPrefixes []string
}

// Cluster implements functions.Workloads, plus the reads the analysis package needs
// (MetricTemplate, AlertProvider, Secret) and what the push trigger and the finalizer need
// (SetImage, EnsureFinalizer, Finalize).
type Cluster struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
	log  *slog.Logger
	opts Options
	// now and newID are replaced by tests.
	now   func() time.Time
	newID func() (string, error)
}

var (
	_ functions.Workloads         = (*Cluster)(nil)
	_ functions.EventObjectReader = (*Cluster)(nil)
)

// New returns a Cluster. kube and dyn talk to the same cluster; log must not be nil.
func New(kube kubernetes.Interface, dyn dynamic.Interface, log *slog.Logger, opts Options) *Cluster {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if len(opts.SelectorLabels) == 0 {
		opts.SelectorLabels = DefaultSelectorLabels
	}
	return &Cluster{kube: kube, dyn: dyn, log: log, opts: opts, now: time.Now, newID: newFlaggerID}
}

// call bounds one API call.
func (c *Cluster) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.Timeout)
}

// apiError wraps a client-go error with the verb and the object, and with the sentinel of
// functions/errors.go that tells the caller what to do with it.
func apiError(err error, verb, kind, namespace, name string) error {
	if err == nil {
		return nil
	}
	obj := kind + " " + namespace + "/" + name
	if name == "" {
		obj = kind + " in namespace " + namespace
		if namespace == "" {
			obj = kind + " in all namespaces"
		}
	}
	return kubeapi.Error(verb+" "+obj, err)
}

// group runs independent calls concurrently and joins their errors.
type group struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (g *group) Go(f func() error) {
	g.wg.Go(func() {
		if err := f(); err != nil {
			g.mu.Lock()
			g.errs = append(g.errs, err)
			g.mu.Unlock()
		}
	})
}

func (g *group) Wait() error {
	g.wg.Wait()
	return errors.Join(g.errs...)
}
