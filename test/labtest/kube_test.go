//go:build e2e

package labtest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/siskin-dev/siskin/test/lab"
)

func adminClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	kube, err := kubernetes.NewForConfig(lab.Require(t).RESTConfig())
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	return kube
}

func newNamespace(t *testing.T, kube kubernetes.Interface) string {
	t.Helper()
	ns := unique("labtest-")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	return ns
}

func deployment(ns, name, image string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: image,
					Ports: []corev1.ContainerPort{{ContainerPort: 9898}},
				}}},
			},
		},
	}
}

// waitRolledOut waits for what kubectl rollout status waits for, then checks the pods.
func waitRolledOut(t *testing.T, kube kubernetes.Interface, ns, name, image string) *appsv1.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var last string
	for {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want := *d.Spec.Replicas
			s := d.Status
			last = fmt.Sprintf("generation %d observed %d, replicas %d updated %d ready %d available %d",
				d.Generation, s.ObservedGeneration, s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas)
			if s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want &&
				s.ReadyReplicas == want && s.AvailableReplicas == want {
				checkPods(t, kube, ns, name, image, want)
				return d
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment %s/%s not rolled out: %s", ns, name, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func checkPods(t *testing.T, kube kubernetes.Interface, ns, name, image string, want int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			t.Fatalf("list pods: %v", err)
		}
		ready := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == lab.NodeName &&
				p.Spec.Containers[0].Image == image && podReady(p) {
				ready++
			}
		}
		// Old pods may still be terminating; only the live ones count.
		live := slices.DeleteFunc(pods.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil })
		if ready == int(want) && len(live) == int(want) {
			return
		}
		last = fmt.Sprintf("%d pods, %d Running/Ready on %s with %s", len(live), ready, lab.NodeName, image)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pods of %s/%s: got %s, want %d", ns, name, last, want)
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestDeploymentRollsOutAndRollsOutAgain(t *testing.T) {
	kube := adminClient(t)
	ns := newNamespace(t, kube)
	ctx := t.Context()
	const v1, v2 = "ghcr.io/stefanprodan/podinfo:6.0.0", "ghcr.io/stefanprodan/podinfo:6.0.1"
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "podinfo", v1, 2), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	waitRolledOut(t, kube, ns, "podinfo", v1)
	first := replicaSets(t, kube, ns)
	if len(first) != 1 {
		t.Fatalf("after the first rollout: got %d ReplicaSets, want 1", len(first))
	}

	d, err := kube.AppsV1().Deployments(ns).Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment: %v", err)
	}
	d.Spec.Template.Spec.Containers[0].Image = v2
	if _, err := kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update image: %v", err)
	}
	waitRolledOut(t, kube, ns, "podinfo", v2)
	second := replicaSets(t, kube, ns)
	if len(second) != 2 {
		t.Fatalf("after the image change: got %d ReplicaSets, want 2 (old and new)", len(second))
	}
	for _, rs := range second {
		image := rs.Spec.Template.Spec.Containers[0].Image
		switch {
		case rs.Name == first[0].Name && (image != v1 || *rs.Spec.Replicas != 0):
			t.Errorf("old ReplicaSet %s: got image %s, %d replicas; want %s scaled to 0", rs.Name, image, *rs.Spec.Replicas, v1)
		case rs.Name != first[0].Name && (image != v2 || rs.Status.ReadyReplicas != 2):
			t.Errorf("new ReplicaSet %s: got image %s, %d ready; want %s with 2 ready", rs.Name, image, rs.Status.ReadyReplicas, v2)
		}
	}
}

func replicaSets(t *testing.T, kube kubernetes.Interface, ns string) []appsv1.ReplicaSet {
	t.Helper()
	list, err := kube.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=podinfo"})
	if err != nil {
		t.Fatalf("list ReplicaSets: %v", err)
	}
	return list.Items
}

func TestRestrictedIdentity(t *testing.T) {
	l := lab.Require(t)
	admin := adminClient(t)
	ns := newNamespace(t, admin)
	ctx := t.Context()
	if _, err := admin.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "victim", "example/app:1", 1), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	siskin, err := kubernetes.NewForConfig(l.SiskinRESTConfig())
	if err != nil {
		t.Fatalf("siskin client: %v", err)
	}

	t.Run("is authenticated as siskin", func(t *testing.T) {
		review, err := siskin.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("self subject review: %v", err)
		}
		if got := review.Status.UserInfo.Username; got != lab.SiskinUser {
			t.Errorf("got user %q, want %q", got, lab.SiskinUser)
		}
	})
	t.Run("cannot delete a Deployment", func(t *testing.T) {
		err := siskin.AppsV1().Deployments(ns).Delete(ctx, "victim", metav1.DeleteOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("delete deployment as siskin: got %v, want Forbidden", err)
		}
		if _, err := admin.AppsV1().Deployments(ns).Get(ctx, "victim", metav1.GetOptions{}); err != nil {
			t.Errorf("the deployment is gone after a refused delete: %v", err)
		}
	})
	t.Run("cannot enumerate Secrets", func(t *testing.T) {
		// It reads a Secret only by a name a manifest gives it (tracked configs, secretRefs).
		_, err := siskin.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("list Secrets as siskin: got %v, want Forbidden", err)
		}
	})
	t.Run("cannot grant itself more", func(t *testing.T) {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: unique("escalate-")},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: lab.SiskinUser}},
		}
		_, err := siskin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("create ClusterRoleBinding to cluster-admin as siskin: got %v, want Forbidden", err)
		}
	})
	t.Run("cannot list Nodes", func(t *testing.T) {
		_, err := siskin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("list nodes as siskin: got %v, want Forbidden", err)
		}
	})
	t.Run("can read Deployments through its ClusterRole", func(t *testing.T) {
		if _, err := admin.RbacV1().ClusterRoles().Get(ctx, lab.SiskinClusterRole, metav1.GetOptions{}); err != nil {
			t.Fatalf("ClusterRole %s from knative/rbac.yaml: %v; lab warnings: %v", lab.SiskinClusterRole, err, l.Warnings())
		}
		if _, err := siskin.AppsV1().Deployments(ns).Get(ctx, "victim", metav1.GetOptions{}); err != nil {
			t.Errorf("get deployment as siskin: %v", err)
		}
		canaries := schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}
		dyn, err := dynamic.NewForConfig(l.SiskinRESTConfig())
		if err != nil {
			t.Fatalf("dynamic client: %v", err)
		}
		if _, err := dyn.Resource(canaries).Namespace(ns).List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list canaries as siskin: %v", err)
		}
	})
}
