package deploy

import (
	"context"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/siskin-dev/siskin/functions"
)

// DeploymentImages lists a namespace's Deployments with their container images: name ->
// container -> image. One LIST answers a push for every canary of the namespace.
func (c *Cluster) DeploymentImages(ctx context.Context, namespace string) (map[string]map[string]string, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	// From the watch cache, as ListCanaries: a push is matched against a list milliseconds old,
	// and SetImage reads the Deployment it changes fresh.
	list, err := c.kube.AppsV1().Deployments(namespace).List(cctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, apiError(err, "list", "Deployments", namespace, "")
	}
	out := make(map[string]map[string]string, len(list.Items))
	for _, d := range list.Items {
		images := make(map[string]string, len(d.Spec.Template.Spec.Containers))
		for _, ctr := range d.Spec.Template.Spec.Containers {
			images[ctr.Name] = ctr.Image
		}
		out[d.Name] = images
	}
	return out, nil
}

// CanaryEvents lists the Events recorded for a Canary, oldest first.
func (c *Cluster) CanaryEvents(ctx context.Context, cd functions.Canary) ([]functions.EventRecord, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	sel := fields.Set{"involvedObject.kind": "Canary", "involvedObject.name": cd.Name}.AsSelector().String()
	list, err := c.kube.CoreV1().Events(cd.Namespace).List(cctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, apiError(err, "list", "Events", cd.Namespace, cd.Name)
	}
	out := make([]functions.EventRecord, 0, len(list.Items))
	for _, e := range list.Items {
		at := e.LastTimestamp.Time
		if at.IsZero() {
			at = e.EventTime.Time
		}
		if at.IsZero() {
			at = e.CreationTimestamp.Time
		}
		out = append(out, functions.EventRecord{Time: at, Type: e.Type, Reason: e.Reason, Message: e.Message, Count: max(e.Count, 1)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// PrimaryRevision is the functions.Revision the primary Deployment was last given; empty when
// there is no primary or it carries no revision.
func (c *Cluster) PrimaryRevision(ctx context.Context, cd functions.Canary) (string, error) {
	if err := checkRefs(cd); err != nil {
		return "", nil // never managed: nothing was promoted
	}
	d, err := optional(c.getDeployment(ctx, cd.Namespace, cd.Names().Primary, fresh))
	if err != nil || d == nil {
		return "", err
	}
	return d.Annotations[RevisionAnnotation], nil
}

// TargetReadiness is the target Deployment's readiness, with Flagger's rules.
func (c *Cluster) TargetReadiness(ctx context.Context, cd functions.Canary) (functions.Readiness, error) {
	d, err := c.getDeployment(ctx, cd.Namespace, cd.Spec.TargetRef.Name, fresh)
	if err != nil {
		return functions.Readiness{}, err
	}
	return DeploymentReadiness(d, cd.Spec.ProgressDeadline(), cd.Spec.CanaryReadyThreshold(), time.Now()), nil
}
