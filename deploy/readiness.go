package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/siskin-dev/siskin/functions"
)

// DeploymentReadiness is Flagger's isDeploymentReady (canary/deployment_ready.go):
//
//   - not observed yet (generation > observedGeneration): not ready, retriable;
//   - condition Progressing with reason ProgressDeadlineExceeded: failed;
//   - condition Available=False with reason MinimumReplicasUnavailable whose lastUpdateTime is
//     more than deadline ago: failed, if one of the checks below also fails;
//   - updatedReplicas < spec.replicas; replicas > updatedReplicas (old replicas pending
//     termination); availableReplicas < updatedReplicas × threshold / 100: not ready.
//
// The threshold is applied in integer arithmetic (Flagger's float32 product can round 100 × 29%
// down to 28).
func DeploymentReadiness(d *appsv1.Deployment, deadline time.Duration, threshold int, now time.Time) functions.Readiness {
	if d.Generation > d.Status.ObservedGeneration {
		return functions.Readiness{Reason: "waiting for rollout to finish: observed deployment generation less than desired generation"}
	}
	progressing := deploymentCondition(d.Status, appsv1.DeploymentProgressing)
	retriable := true
	if progressing != nil {
		available := deploymentCondition(d.Status, appsv1.DeploymentAvailable)
		if available != nil && available.Status == corev1.ConditionFalse && available.Reason == "MinimumReplicasUnavailable" {
			retriable = !available.LastUpdateTime.Add(deadline).Before(now)
		}
	}
	if progressing != nil && progressing.Reason == "ProgressDeadlineExceeded" {
		return functions.Readiness{Failed: true, Reason: fmt.Sprintf("deployment %q exceeded its progress deadline", d.Name)}
	}
	st := d.Status
	needAvailable := int64(st.UpdatedReplicas) * int64(threshold) / 100
	var reason string
	switch {
	case d.Spec.Replicas != nil && st.UpdatedReplicas < *d.Spec.Replicas:
		reason = fmt.Sprintf("waiting for rollout to finish: %d out of %d new replicas have been updated",
			st.UpdatedReplicas, *d.Spec.Replicas)
	case st.Replicas > st.UpdatedReplicas:
		reason = fmt.Sprintf("waiting for rollout to finish: %d old replicas are pending termination",
			st.Replicas-st.UpdatedReplicas)
	case int64(st.AvailableReplicas) < needAvailable:
		reason = fmt.Sprintf("waiting for rollout to finish: %d of %d (readyThreshold %d%%) updated replicas are available",
			st.AvailableReplicas, needAvailable, threshold)
	default:
		return functions.Readiness{Ready: true}
	}
	if !retriable {
		reason = fmt.Sprintf("deployment %q has been unavailable for longer than its progress deadline: %s", d.Name, reason)
	}
	return functions.Readiness{Failed: !retriable, Reason: reason}
}

func deploymentCondition(st appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// TemplateHash is Siskin's lastAppliedSpec: the first 8 bytes of the SHA-256 of the pod
// template's JSON encoding, as 16 hex characters. encoding/json writes struct fields in
// declaration order and map keys sorted, so the encoding is canonical for a given k8s.io/api
// version; fields outside spec.template (replicas, strategy, metadata) do not count. Flagger
// hashes a spew dump with FNV-32a, so the values differ from Flagger's: a Canary taken over from
// Flagger sees one new revision.
func TemplateHash(t corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec always encodes; keep the hash total anyway.
		b = fmt.Appendf(nil, "%#v", t)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
