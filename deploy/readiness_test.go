package deploy

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/siskin-dev/siskin/functions"
)

func TestDeploymentReadiness(t *testing.T) {
	deadline := 60 * time.Second
	progressing := func(reason string) appsv1.DeploymentCondition {
		return appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: reason}
	}
	unavailableSince := func(ago time.Duration) appsv1.DeploymentCondition {
		return appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
			Reason: "MinimumReplicasUnavailable", LastUpdateTime: metav1.NewTime(testNow.Add(-ago))}
	}
	dep := func(gen, observed int64, replicas *int32, st appsv1.DeploymentStatus, conds ...appsv1.DeploymentCondition) *appsv1.Deployment {
		st.ObservedGeneration = observed
		st.Conditions = conds
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Generation: gen},
			Spec: appsv1.DeploymentSpec{Replicas: replicas}, Status: st}
	}
	tests := []struct {
		name      string
		d         *appsv1.Deployment
		threshold int
		want      functions.Readiness
	}{
		{
			name:      "ready",
			d:         dep(2, 2, int32p(3), appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}, progressing("NewReplicaSetAvailable")),
			threshold: 100,
			want:      functions.Readiness{Ready: true},
		},
		{
			name:      "generation not observed yet",
			d:         dep(3, 2, int32p(3), appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}),
			threshold: 100,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: observed deployment generation less than desired generation"},
		},
		{
			name:      "progress deadline exceeded",
			d:         dep(2, 2, int32p(3), appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}, progressing("ProgressDeadlineExceeded")),
			threshold: 100,
			want:      functions.Readiness{Failed: true, Reason: `deployment "podinfo" exceeded its progress deadline`},
		},
		{
			name:      "updated replicas behind spec",
			d:         dep(2, 2, int32p(3), appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 3}, progressing("ReplicaSetUpdated")),
			threshold: 100,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: 1 out of 3 new replicas have been updated"},
		},
		{
			name:      "old replicas pending termination",
			d:         dep(2, 2, int32p(3), appsv1.DeploymentStatus{Replicas: 5, UpdatedReplicas: 3, AvailableReplicas: 3}, progressing("ReplicaSetUpdated")),
			threshold: 100,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: 2 old replicas are pending termination"},
		},
		{
			name:      "available below threshold",
			d:         dep(2, 2, int32p(4), appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 4, AvailableReplicas: 2}, progressing("ReplicaSetUpdated")),
			threshold: 100,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: 2 of 4 (readyThreshold 100%) updated replicas are available"},
		},
		{
			name:      "available meets a lower threshold",
			d:         dep(2, 2, int32p(4), appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 4, AvailableReplicas: 2}, progressing("ReplicaSetUpdated")),
			threshold: 50,
			want:      functions.Readiness{Ready: true},
		},
		{
			name:      "threshold in integer arithmetic",
			d:         dep(2, 2, int32p(100), appsv1.DeploymentStatus{Replicas: 100, UpdatedReplicas: 100, AvailableReplicas: 28}, progressing("ReplicaSetUpdated")),
			threshold: 29,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: 28 of 29 (readyThreshold 29%) updated replicas are available"},
		},
		{
			name: "unavailable within the deadline is retriable",
			d: dep(2, 2, int32p(2), appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 0},
				progressing("ReplicaSetUpdated"), unavailableSince(30*time.Second)),
			threshold: 100,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: 0 of 2 (readyThreshold 100%) updated replicas are available"},
		},
		{
			name: "unavailable past the deadline fails",
			d: dep(2, 2, int32p(2), appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 0},
				progressing("ReplicaSetUpdated"), unavailableSince(2*time.Minute)),
			threshold: 100,
			want: functions.Readiness{Failed: true, Reason: `deployment "podinfo" has been unavailable for longer than its progress deadline: ` +
				"waiting for rollout to finish: 0 of 2 (readyThreshold 100%) updated replicas are available"},
		},
		{
			name: "unavailable past the deadline but all checks pass is ready",
			d: dep(2, 2, int32p(2), appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2},
				progressing("ReplicaSetUpdated"), unavailableSince(2*time.Minute)),
			threshold: 100,
			want:      functions.Readiness{Ready: true},
		},
		{
			name: "unavailable condition without a progressing condition stays retriable",
			d: dep(2, 2, int32p(2), appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 0},
				unavailableSince(2*time.Minute)),
			threshold: 100,
			want:      functions.Readiness{Reason: "waiting for rollout to finish: 0 of 2 (readyThreshold 100%) updated replicas are available"},
		},
		{
			name:      "scaled to zero is ready",
			d:         dep(2, 2, int32p(0), appsv1.DeploymentStatus{}),
			threshold: 100,
			want:      functions.Readiness{Ready: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DeploymentReadiness(tt.d, deadline, tt.threshold, testNow)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("readiness (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTemplateHash(t *testing.T) {
	base := podinfo()
	h := TemplateHash(base.Spec.Template)
	if len(h) != 16 {
		t.Fatalf("got hash %q, want 16 hex characters", h)
	}

	// The same template with maps built in another order.
	reordered := podinfo()
	reordered.Spec.Template.Labels = map[string]string{}
	for _, k := range []string{"version", "app"} {
		reordered.Spec.Template.Labels[k] = base.Spec.Template.Labels[k]
	}
	unchanged := map[string]func(d *appsv1.Deployment){
		"replicas":    func(d *appsv1.Deployment) { d.Spec.Replicas = int32p(7) },
		"strategy":    func(d *appsv1.Deployment) { d.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType },
		"labels":      func(d *appsv1.Deployment) { d.Labels["team"] = "b" },
		"annotations": func(d *appsv1.Deployment) { d.Annotations["deployment.kubernetes.io/revision"] = "9" },
		"status":      func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 0 },
		"map order":   func(d *appsv1.Deployment) { d.Spec.Template.Labels = reordered.Spec.Template.Labels },
	}
	for name, mutate := range unchanged {
		d := podinfo()
		mutate(d)
		if got := TemplateHash(d.Spec.Template); got != h {
			t.Errorf("%s: got hash %s, want %s (unchanged)", name, got, h)
		}
	}
	changed := map[string]func(d *appsv1.Deployment){
		"image":          func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "podinfo:6.0.1" },
		"env":            func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Env[0].Name = "COLOR" },
		"pod annotation": func(d *appsv1.Deployment) { d.Spec.Template.Annotations["retry"] = "1" },
		"pod label":      func(d *appsv1.Deployment) { d.Spec.Template.Labels["version"] = "v2" },
	}
	for name, mutate := range changed {
		d := podinfo()
		mutate(d)
		if got := TemplateHash(d.Spec.Template); got == h {
			t.Errorf("%s: got the same hash %s, want a new one", name, got)
		}
	}
}
