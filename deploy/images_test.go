package deploy

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestDeploymentImagesIsOneList(t *testing.T) {
	dep := func(ns, name string, images ...string) *appsv1.Deployment {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		for i, img := range images {
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: []string{"app", "sidecar"}[i], Image: img})
		}
		return d
	}
	kube := fake.NewClientset(dep("shop", "checkout", "r/shop/checkout:1.0.0", "r/envoy:1"), dep("shop", "cart", "r/shop/cart:2"), dep("other", "x", "r/x:1"))
	c := New(kube, nil, nil, Options{})
	got, err := c.DeploymentImages(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"checkout": {"app": "r/shop/checkout:1.0.0", "sidecar": "r/envoy:1"},
		"cart":     {"app": "r/shop/cart:2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if n := len(kube.Actions()); n != 1 || kube.Actions()[0].GetVerb() != "list" {
		t.Errorf("got %d API calls %v, want one list", n, kube.Actions())
	}
}
