package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/siskin-dev/siskin/functions"
)

func boolp(b bool) *bool { return &b }

func cmRef(name string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: name} }

func TestConfigRefs(t *testing.T) {
	tests := []struct {
		name string
		spec corev1.PodSpec
		want []configRef
	}{
		{
			name: "configmap volume",
			spec: corev1.PodSpec{Volumes: []corev1.Volume{{VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef("cm")}}}}},
			want: []configRef{{Kind: "configmap", Name: "cm"}},
		},
		{
			name: "secret volume, optional false is mandatory",
			spec: corev1.PodSpec{Volumes: []corev1.Volume{{VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "s", Optional: boolp(false)}}}}},
			want: []configRef{{Kind: "secret", Name: "s", Mandatory: true}},
		},
		{
			name: "projected volume",
			spec: corev1.PodSpec{Volumes: []corev1.Volume{{VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: cmRef("pcm")}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: cmRef("ps"), Optional: boolp(true)}},
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
				}}}}}},
			want: []configRef{{Kind: "configmap", Name: "pcm"}, {Kind: "secret", Name: "ps"}},
		},
		{
			name: "env valueFrom of containers and init containers",
			spec: corev1.PodSpec{
				Containers: []corev1.Container{{Env: []corev1.EnvVar{
					{Name: "A", Value: "plain"},
					{Name: "B", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: cmRef("env-cm")}}},
					{Name: "C", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				}}},
				InitContainers: []corev1.Container{{Env: []corev1.EnvVar{
					{Name: "D", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: cmRef("init-s"), Optional: boolp(false)}}},
				}}},
			},
			want: []configRef{{Kind: "configmap", Name: "env-cm"}, {Kind: "secret", Name: "init-s", Mandatory: true}},
		},
		{
			name: "envFrom, duplicates merged, mandatory wins",
			spec: corev1.PodSpec{Containers: []corev1.Container{
				{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: cmRef("shared")}}}},
				{EnvFrom: []corev1.EnvFromSource{
					{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: cmRef("shared"), Optional: boolp(false)}},
					{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: cmRef("shared")}},
				}},
			}},
			want: []configRef{{Kind: "configmap", Name: "shared", Mandatory: true}, {Kind: "secret", Name: "shared"}},
		},
		{
			name: "nothing referenced",
			spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			want: []configRef{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, configRefs(tt.spec)); diff != "" {
				t.Errorf("refs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchConfigs(t *testing.T) {
	objs := []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "default"}, Data: map[string]string{"color": "blue"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bin", Namespace: "default"}, Data: map[string]string{"color": "blue"},
			BinaryData: map[string][]byte{"logo": {1, 2}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "off", Namespace: "default",
			Annotations: map[string]string{"flagger.app/config-tracking": "disabled"}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "off2", Namespace: "default",
			Annotations: map[string]string{"flagger.app/config-tracking": "disable"}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "on", Namespace: "default",
			Annotations: map[string]string{"flagger.app/config-tracking": "enabled"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "opaque", Namespace: "default"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"token": []byte("s3cr3t")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "basic", Namespace: "default"}, Type: corev1.SecretTypeBasicAuth},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ssh", Namespace: "default"}, Type: corev1.SecretTypeSSHAuth},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "default"}, Type: corev1.SecretTypeTLS},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "default"}, Type: corev1.SecretTypeDockerConfigJson},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sa", Namespace: "default"}, Type: corev1.SecretTypeServiceAccountToken},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec-off", Namespace: "default",
			Annotations: map[string]string{"flagger.app/config-tracking": "disabled-for-now"}}, Type: corev1.SecretTypeOpaque},
	}
	tests := []struct {
		name    string
		refs    []configRef
		want    map[string]string
		wantErr error
	}{
		{
			name: "checksums are Flagger's",
			refs: []configRef{{Kind: "configmap", Name: "cm"}, {Kind: "secret", Name: "opaque"}},
			// sha256 of {"color":"blue"} and of {"token":"czNjcjN0"}, first 8 bytes.
			want: map[string]string{"configmap/cm": "f234cb93c08ad64e", "secret/opaque": "6010bdf95cfd9d10"},
		},
		{
			name: "binaryData counts",
			refs: []configRef{{Kind: "configmap", Name: "bin"}},
			want: map[string]string{"configmap/bin": checksum(struct {
				Data       map[string]string `json:"data"`
				BinaryData map[string][]byte `json:"binaryData"`
			}{map[string]string{"color": "blue"}, map[string][]byte{"logo": {1, 2}}})},
		},
		{
			name: "tracked secret types",
			refs: []configRef{{Kind: "secret", Name: "basic"}, {Kind: "secret", Name: "ssh"}, {Kind: "secret", Name: "tls"}},
			want: map[string]string{"secret/basic": checksum(map[string][]byte(nil)), "secret/ssh": checksum(map[string][]byte(nil)),
				"secret/tls": checksum(map[string][]byte(nil))},
		},
		{
			name: "excluded: other secret types and disabled tracking",
			refs: []configRef{{Kind: "secret", Name: "pull"}, {Kind: "secret", Name: "sa"}, {Kind: "secret", Name: "sec-off"},
				{Kind: "configmap", Name: "off"}, {Kind: "configmap", Name: "off2"}, {Kind: "configmap", Name: "on"}},
			want: map[string]string{"configmap/on": checksum(map[string]string(nil))},
		},
		{
			name: "missing optional refs are skipped",
			refs: []configRef{{Kind: "configmap", Name: "gone"}, {Kind: "secret", Name: "gone"}, {Kind: "configmap", Name: "cm"}},
			want: map[string]string{"configmap/cm": "f234cb93c08ad64e"},
		},
		{
			name:    "missing mandatory ref is an error",
			refs:    []configRef{{Kind: "secret", Name: "gone", Mandatory: true}},
			wantErr: functions.ErrNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, objs)
			got, err := f.c.fetchConfigs(context.Background(), seedDomain(t), tt.refs)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("fetchConfigs: %v", err)
			}
			if diff := cmp.Diff(tt.want, checksums(got)); diff != "" {
				t.Errorf("checksums (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchConfigsTransientErrorIsNotAMissingConfig(t *testing.T) {
	f := newFixture(t, nil)
	f.kube.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbiddenErr("configmaps", "cm")
	})
	_, err := f.c.fetchConfigs(context.Background(), seedDomain(t), []configRef{{Kind: "configmap", Name: "cm"}})
	if !errors.Is(err, functions.ErrUpstreamDenied) || !strings.Contains(err.Error(), "get ConfigMap default/cm") {
		t.Errorf("got %v, want functions.ErrUpstreamDenied naming get ConfigMap default/cm", err)
	}
}

func TestRenameConfigRefs(t *testing.T) {
	spec := corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "a", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef("cm")}}},
			{Name: "b", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "c", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: cmRef("cm")}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: cmRef("untracked")}},
			}}}},
		},
		Containers: []corev1.Container{{
			Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: cmRef("s")}}}},
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: cmRef("cm")}},
				{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: cmRef("cm")}}},
		}},
		InitContainers: []corev1.Container{{
			Env: []corev1.EnvVar{{Name: "Y", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: cmRef("cm")}}}},
		}},
	}
	tracked := map[string]trackedConfig{"configmap/cm": {}, "secret/s": {}}
	got := *spec.DeepCopy()
	renameConfigRefs(&got, tracked)

	want := *spec.DeepCopy()
	want.Volumes[0].ConfigMap.Name = "cm-primary"
	want.Volumes[1].Secret.SecretName = "s-primary"
	want.Volumes[2].Projected.Sources[0].ConfigMap.Name = "cm-primary"
	want.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name = "s-primary"
	want.Containers[0].EnvFrom[0].ConfigMapRef.Name = "cm-primary"
	// secret "cm" is not tracked: only configmap "cm" is.
	want.InitContainers[0].Env[0].ValueFrom.ConfigMapKeyRef.Name = "cm-primary"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("renamed spec (-want +got):\n%s", diff)
	}
}
