package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/siskin-dev/siskin/functions"
)

const (
	// OriginalSelectorAnnotation keeps the selector an apex Service had before Siskin took it
	// over (a Service Siskin did not create), so that revertOnDeletion can restore it.
	OriginalSelectorAnnotation = "siskin.dev/original-selector"
	// kubectlLastApplied is where kubectl apply keeps the applied object.
	kubectlLastApplied = "kubectl.kubernetes.io/last-applied-configuration"
	// Flagger marks the objects it manages so that Flux leaves them alone.
	fluxReconcileKey      = "kustomize.toolkit.fluxcd.io/reconcile"
	helmDriftDetectionKey = "helm.toolkit.fluxcd.io/driftDetection"
	fluxDisabled          = "disabled"
	toolkitMarker         = "toolkit.fluxcd.io"
)

// sidecars are skipped by port discovery.
var sidecars = []string{"istio-proxy", "envoy"}

// selectorLabel is Flagger's getSelectorLabel: the first of labels found in the Deployment's
// spec.selector.matchLabels, and its value.
func selectorLabel(d *appsv1.Deployment, labels []string) (string, string, error) {
	if d.Spec.Selector != nil {
		for _, l := range labels {
			if v, ok := d.Spec.Selector.MatchLabels[l]; ok {
				return l, v, nil
			}
		}
	}
	return "", "", fmt.Errorf("%w: deployment %s/%s spec.selector.matchLabels must contain one of %v",
		functions.ErrInvalid, d.Namespace, d.Name, labels)
}

// targetPort is spec.service.targetPort, defaulting to the port.
func targetPort(s functions.ServiceSpec) (intstr.IntOrString, error) {
	def := intstr.FromInt32(s.Port)
	if len(s.TargetPort) == 0 || string(s.TargetPort) == "null" {
		return def, nil
	}
	var tp intstr.IntOrString
	if err := json.Unmarshal(s.TargetPort, &tp); err != nil {
		return def, fmt.Errorf("%w: spec.service.targetPort %s: %w", functions.ErrInvalid, s.TargetPort, err)
	}
	if (tp.Type == intstr.Int && tp.IntVal == 0) || (tp.Type == intstr.String && tp.StrVal == "") {
		return def, nil
	}
	return tp, nil
}

// servicePorts are Flagger's Service ports: the main port {portName|"http", TCP, port,
// targetPort, appProtocol}, then with portDiscovery every other container port of the target
// (sidecars excluded), named after the container port or tcp-<container>-<index>, sorted by name.
func servicePorts(cd functions.Canary, target *appsv1.Deployment) ([]corev1.ServicePort, error) {
	s := cd.Spec.Service
	tp, err := targetPort(s)
	if err != nil {
		return nil, err
	}
	name := s.PortName
	if name == "" {
		name = "http"
	}
	main := corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: s.Port, TargetPort: tp}
	if s.AppProtocol != "" {
		main.AppProtocol = &s.AppProtocol
	}
	ports := []corev1.ServicePort{main}
	if !s.PortDiscovery || target == nil {
		return ports, nil
	}
	discovered := map[string]int32{}
	for _, ctr := range target.Spec.Template.Spec.Containers {
		if slices.Contains(sidecars, ctr.Name) {
			continue
		}
		for i, p := range ctr.Ports {
			if (tp.Type == intstr.Int && p.ContainerPort == tp.IntVal) || (tp.Type == intstr.String && p.Name == tp.StrVal) {
				continue
			}
			n := p.Name
			if n == "" {
				n = fmt.Sprintf("tcp-%s-%d", ctr.Name, i)
			}
			discovered[n] = p.ContainerPort
		}
	}
	for _, n := range slices.Sorted(maps.Keys(discovered)) {
		p := discovered[n]
		ports = append(ports, corev1.ServicePort{Name: n, Protocol: corev1.ProtocolTCP, Port: p, TargetPort: intstr.FromInt32(p)})
	}
	return ports, nil
}

// canaryOwnerRef makes the Canary the controller of a generated object.
func canaryOwnerRef(cd functions.Canary) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: canaryAPIVersion, Kind: canaryKind, Name: cd.Name,
		UID: types.UID(cd.UID), Controller: &t, BlockOwnerDeletion: &t}
}

// ownedByCanary reports whether obj's controller is a Canary, and whether it is this one.
func ownedByCanary(obj metav1.Object, canaryName string) (byACanary, byThisOne bool) {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.Kind != canaryKind {
		return false, false
	}
	return true, ref.Name == canaryName
}

// withFluxDisabled is Flagger's router filterMetadata: the annotations plus the two that keep
// Flux from reverting what Flagger manages.
func withFluxDisabled(annotations map[string]string) map[string]string {
	out := maps.Clone(annotations)
	if out == nil {
		out = map[string]string{}
	}
	out[fluxReconcileKey] = fluxDisabled
	out[helmDriftDetectionKey] = fluxDisabled
	return out
}

// desiredService is the Service Flagger creates: ClusterIP (None if headless), the ports, the
// selector {label: selectorValue}, the labels of meta plus {label: name}, the annotations of
// meta plus Flux's, owned by the Canary.
func desiredService(cd functions.Canary, name, label, selectorValue string, meta *functions.ServiceMeta, ports []corev1.ServicePort) *corev1.Service {
	var labels, annotations map[string]string
	if meta != nil {
		labels, annotations = maps.Clone(meta.Labels), meta.Annotations
	}
	if labels == nil {
		labels = map[string]string{}
	}
	labels[label] = name
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Namespace:       cd.Namespace,
			Labels:          labels,
			Annotations:     withFluxDisabled(annotations),
			OwnerReferences: []metav1.OwnerReference{canaryOwnerRef(cd)},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{label: selectorValue},
			Ports:    ports,
		},
	}
	if cd.Spec.Service.Headless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	return svc
}

// mergeService computes the update of a live Service towards desired, comparing only what
// Flagger owns: the ports (keeping allocated NodePorts) and the selector always; the labels and
// annotations only when this Canary owns the Service. When rememberSelector is set and the
// Service is not owned by this Canary, its selector before the first change is kept in
// OriginalSelectorAnnotation. It returns nil when nothing changes.
func mergeService(live, desired *corev1.Service, canaryName string, rememberSelector bool) *corev1.Service {
	ports := slices.Clone(desired.Spec.Ports)
	for i := range ports {
		for _, lp := range live.Spec.Ports {
			if lp.Name == ports[i].Name && lp.NodePort > 0 {
				ports[i].NodePort = lp.NodePort
				break
			}
		}
	}
	next := live.DeepCopy()
	changed := false
	if !samePorts(live.Spec.Ports, ports) || !maps.Equal(live.Spec.Selector, desired.Spec.Selector) {
		next.Spec.Ports = ports
		next.Spec.Selector = maps.Clone(desired.Spec.Selector)
		changed = true
	}
	_, owned := ownedByCanary(live, canaryName)
	if owned {
		if !maps.Equal(live.Annotations, desired.Annotations) {
			next.Annotations = maps.Clone(desired.Annotations)
			changed = true
		}
		if !maps.Equal(live.Labels, desired.Labels) {
			next.Labels = maps.Clone(desired.Labels)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if !owned {
		next.Annotations = withFluxDisabled(next.Annotations)
		if rememberSelector {
			if _, kept := live.Annotations[OriginalSelectorAnnotation]; !kept {
				b, _ := json.Marshal(live.Spec.Selector)
				next.Annotations[OriginalSelectorAnnotation] = string(b)
			}
		}
	}
	return next
}

// samePorts compares Service ports regardless of order.
func samePorts(a, b []corev1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(p corev1.ServicePort) string {
		ap := ""
		if p.AppProtocol != nil {
			ap = *p.AppProtocol
		}
		return strings.Join([]string{p.Name, string(p.Protocol), strconv.Itoa(int(p.Port)),
			p.TargetPort.String(), strconv.Itoa(int(p.TargetPort.Type)), strconv.Itoa(int(p.NodePort)), ap}, "|")
	}
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		ka[i], kb[i] = key(a[i]), key(b[i])
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

// originalSelector is the selector to restore on an apex Service Siskin took over: the one it
// remembered, else the one kubectl last applied, else Flagger's {label: value}.
func originalSelector(svc *corev1.Service, label, value string) map[string]string {
	if a, ok := svc.Annotations[OriginalSelectorAnnotation]; ok {
		var sel map[string]string
		if json.Unmarshal([]byte(a), &sel) == nil && len(sel) > 0 {
			return sel
		}
	}
	if a, ok := svc.Annotations[kubectlLastApplied]; ok {
		var applied corev1.Service
		if json.Unmarshal([]byte(a), &applied) == nil && len(applied.Spec.Selector) > 0 {
			return applied.Spec.Selector
		}
	}
	return map[string]string{label: value}
}

// assertService reconciles a Service read from the watch cache. A stale read shows as a
// conflict (or, for a Service created meanwhile, as one that already exists): then it reads
// the Service fresh and tries again.
func (c *Cluster) assertService(ctx context.Context, cd functions.Canary, live, desired *corev1.Service, rememberSelector bool) error {
	err := c.reconcileService(ctx, cd, live, desired, rememberSelector)
	for attempt := 0; attempt < 3 && isConflict(err) && ctx.Err() == nil; attempt++ {
		if live, err = optional(c.getService(ctx, desired.Namespace, desired.Name, fresh)); err != nil {
			return err
		}
		err = c.reconcileService(ctx, cd, live, desired, rememberSelector)
	}
	return err
}

// reconcileService creates the Service if missing (live nil) or updates it only if it differs.
func (c *Cluster) reconcileService(ctx context.Context, cd functions.Canary, live, desired *corev1.Service, rememberSelector bool) error {
	cctx, cancel := c.call(ctx)
	defer cancel()
	svcs := c.kube.CoreV1().Services(desired.Namespace)
	if live == nil {
		_, err := svcs.Create(cctx, desired, metav1.CreateOptions{FieldManager: fieldManager})
		if err != nil {
			return apiError(err, "create", "Service", desired.Namespace, desired.Name)
		}
		c.log.InfoContext(ctx, "service created", "canary", cd.Key.String(), "service", desired.Name)
		return nil
	}
	next := mergeService(live, desired, cd.Name, rememberSelector)
	if next == nil {
		return nil
	}
	if _, err := svcs.Update(cctx, next, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
		return apiError(err, "update", "Service", desired.Namespace, desired.Name)
	}
	c.log.InfoContext(ctx, "service updated", "canary", cd.Key.String(), "service", desired.Name)
	return nil
}
