package lab

import (
	"io/fs"

	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/siskin-dev/siskin/knative"
)

const (
	// NodeName is the lab's simulated node; kwok runs its pods.
	NodeName = "kwok-node-0"
	// IstioAPIVersion is the istio.io/api module whose CRDs the lab installs.
	IstioAPIVersion = "v1.32.0"
	// GatewayAPIVersion is the sigs.k8s.io/gateway-api module whose standard-channel CRDs the
	// lab installs beside Istio's: the version go.mod pins for the gatewayapi router.
	GatewayAPIVersion = "v1.4.1"
	// ServiceClusterIPRange is large so that scale tests with thousands of Services fit.
	ServiceClusterIPRange = "10.96.0.0/12"
	fieldManager          = "siskin-lab"
)

func (l *Lab) writeKubeconfigs() error {
	server := l.APIServerURL()
	l.adminKubeconfig = filepath.Join(l.dir, "admin.kubeconfig")
	l.siskinKubeconfig = filepath.Join(l.dir, "siskin.kubeconfig")
	admin := &clientcmdapi.AuthInfo{ClientCertificateData: l.pki.adminCertPEM, ClientKeyData: l.pki.adminKeyPEM}
	if err := writeKubeconfig(l.adminKubeconfig, server, l.pki.caPEM, adminUser, admin); err != nil {
		return err
	}
	siskin := &clientcmdapi.AuthInfo{Token: l.pki.siskinToken}
	if err := writeKubeconfig(l.siskinKubeconfig, server, l.pki.caPEM, SiskinUser, siskin); err != nil {
		return err
	}
	tlsCA := rest.TLSClientConfig{CAData: l.pki.caPEM}
	l.admin = &rest.Config{Host: server, QPS: 100, Burst: 200, TLSClientConfig: tlsCA}
	l.admin.CertData, l.admin.KeyData = l.pki.adminCertPEM, l.pki.adminKeyPEM
	l.siskin = &rest.Config{Host: server, QPS: 100, Burst: 200, TLSClientConfig: tlsCA, BearerToken: l.pki.siskinToken}
	var err error
	l.apiClient, err = l.newAPIClient()
	return err
}

// KubeconfigForToken writes a kubeconfig for the lab's apiserver that authenticates with a
// bearer token (a ServiceAccount's, say), and returns its path.
func (l *Lab) KubeconfigForToken(name, token string) (string, error) {
	path := filepath.Join(l.dir, name+".kubeconfig")
	return path, writeKubeconfig(path, l.APIServerURL(), l.pki.caPEM, name, &clientcmdapi.AuthInfo{Token: token})
}

func writeKubeconfig(path, server string, ca []byte, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["siskin-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["siskin-lab"] = &clientcmdapi.Context{Cluster: "siskin-lab", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "siskin-lab"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

func (l *Lab) startEtcd() error {
	client := "http://" + hostport(l.ports.etcd)
	peer := "http://" + hostport(l.ports.etcdPeer)
	_, err := l.spawn("etcd", filepath.Join(l.bin, "etcd"),
		"--name=lab",
		"--data-dir="+filepath.Join(l.dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=lab="+peer,
		"--unsafe-no-fsync", // a throwaway store; fsync is most of etcd's latency
		"--log-level=warn",
	)
	return err
}

// startKubernetes brings up the control plane after etcd, then in parallel the controllers,
// kwok and its node, the CRDs and the RBAC of the restricted identity.
func (l *Lab) startKubernetes(ctx context.Context) error {
	if err := l.waitFor(ctx, l.proc("etcd"), "etcd", httpOK(plainClient, "http://"+hostport(l.ports.etcd)+"/health")); err != nil {
		return err
	}
	if err := l.startAPIServer(); err != nil {
		return err
	}
	if err := l.waitFor(ctx, l.proc("kube-apiserver"), "kube-apiserver", httpOK(l.apiClient, l.APIServerURL()+"/readyz")); err != nil {
		return err
	}
	for _, start := range []func() error{l.startControllerManager, l.startScheduler, l.startKwok} {
		if err := start(); err != nil {
			return err
		}
	}
	kube, err := kubernetes.NewForConfig(l.admin)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	var g errgroup.Group
	g.Go(func() error {
		return l.waitFor(ctx, l.proc("kube-controller-manager"), "kube-controller-manager",
			httpOK(insecureClient, "https://"+hostport(l.ports.controllerManager)+"/healthz"))
	})
	g.Go(func() error {
		return l.waitFor(ctx, l.proc("kube-scheduler"), "kube-scheduler",
			httpOK(insecureClient, "https://"+hostport(l.ports.scheduler)+"/healthz"))
	})
	g.Go(func() error { return l.startNode(ctx, kube) })
	g.Go(func() error { return l.installCRDs(ctx) })
	g.Go(func() error { return l.installRBAC(ctx, kube) })
	return g.Wait()
}

func (l *Lab) startAPIServer() error {
	p := l.pki
	_, err := l.spawn("kube-apiserver", filepath.Join(l.bin, "kube-apiserver"),
		"--etcd-servers=http://"+hostport(l.ports.etcd),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(l.ports.apiserver),
		"--cert-dir="+filepath.Join(l.dir, "kube-apiserver"),
		"--tls-cert-file="+p.serverCert,
		"--tls-private-key-file="+p.serverKey,
		"--client-ca-file="+p.caCert,
		"--token-auth-file="+p.tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.saPub,
		"--service-account-signing-key-file="+p.saKey,
		"--service-cluster-ip-range="+ServiceClusterIPRange,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		// Pods of the simulated node need no service-account token volumes.
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
	)
	return err
}

func (l *Lab) startControllerManager() error {
	k := l.adminKubeconfig
	_, err := l.spawn("kube-controller-manager", filepath.Join(l.bin, "kube-controller-manager"),
		"--kubeconfig="+k, "--authentication-kubeconfig="+k, "--authorization-kubeconfig="+k,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(l.ports.controllerManager),
		"--cert-dir="+filepath.Join(l.dir, "kube-controller-manager"),
		"--leader-elect=false",
		"--service-account-private-key-file="+l.pki.saKey,
		"--root-ca-file="+l.pki.caCert,
		"--service-cluster-ip-range="+ServiceClusterIPRange,
		"--profiling=false",
	)
	return err
}

func (l *Lab) startScheduler() error {
	k := l.adminKubeconfig
	_, err := l.spawn("kube-scheduler", filepath.Join(l.bin, "kube-scheduler"),
		"--kubeconfig="+k, "--authentication-kubeconfig="+k, "--authorization-kubeconfig="+k,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(l.ports.scheduler),
		"--cert-dir="+filepath.Join(l.dir, "kube-scheduler"),
		"--leader-elect=false",
		"--profiling=false",
	)
	return err
}

func (l *Lab) startKwok() error {
	_, err := l.spawn("kwok", filepath.Join(l.bin, "kwok"),
		"--kubeconfig="+l.adminKubeconfig,
		"--config="+filepath.Join(l.bin, "kwok-stages.yaml"),
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--manage-nodes-with-label-selector=",
		"--node-ip=10.0.0.1",
		"--cidr=10.0.0.1/24",
		"--node-lease-duration-seconds=40",
		"--server-address=127.0.0.1:0",
	)
	return err
}

// startNode registers the simulated node; kwok makes it Ready and runs the pods bound to it.
func (l *Lab) startNode(ctx context.Context, kube kubernetes.Interface) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"type": "kwok", "kubernetes.io/hostname": NodeName,
				"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	create, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := kube.CoreV1().Nodes().Create(create, node, metav1.CreateOptions{FieldManager: fieldManager})
	cancel()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", NodeName, err)
	}
	return l.waitFor(ctx, l.proc("kwok"), "kwok node Ready", func(ctx context.Context) error {
		n, err := kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready yet", NodeName)
	})
}

// installCRDs applies the Istio CRDs of the istio.io/api module and the project's flagger.app
// CRDs, and waits until all are Established.
func (l *Lab) installCRDs(ctx context.Context) error {
	istio, err := istioCRDFile(ctx, l.root)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(istio)
	if err != nil {
		return fmt.Errorf("read Istio CRDs: %w", err)
	}
	objs, err := decodeManifest(data)
	if err != nil {
		return fmt.Errorf("read Istio CRDs %s: %w", istio, err)
	}
	gateway, err := gatewayAPICRDs(ctx, l.root)
	if err != nil {
		return err
	}
	objs = append(objs, gateway...)
	// The project's own CRDs, exactly as `kubectl apply -k knative/` installs them.
	flagger, err := fs.Glob(knative.Manifests, "crds/*.yaml")
	if err != nil || len(flagger) == 0 {
		return fmt.Errorf("no flagger.app CRDs in the knative bundle: %v", err)
	}
	for _, f := range flagger {
		data, err := fs.ReadFile(knative.Manifests, f)
		if err != nil {
			return fmt.Errorf("read CRDs: %w", err)
		}
		more, err := decodeManifest(data)
		if err != nil {
			return fmt.Errorf("read CRDs %s: %w", f, err)
		}
		objs = append(objs, more...)
	}
	a, err := l.applier()
	if err != nil {
		return err
	}
	// CRDs do not depend on each other: applying them at once saves seconds.
	var g errgroup.Group
	applied := make([]*unstructured.Unstructured, len(objs))
	for i, obj := range objs {
		g.Go(func() (err error) {
			applied[i], err = a.apply(ctx, obj)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("CRDs: %w", err)
	}
	l.log.Info("CRDs applied", "count", len(applied), "after", time.Since(l.began).Round(time.Millisecond))
	if err := l.waitEstablished(ctx, applied); err != nil {
		return fmt.Errorf("CRDs: %w", err)
	}
	l.ready("CRDs Established")
	return nil
}

// istioCRDFile finds customresourcedefinitions.gen.yaml in the istio.io/api module, downloading
// the module through the Go module proxy if the cache lacks it.
func istioCRDFile(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "istio.io/api@"+IstioAPIVersion)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download istio.io/api@%s: %w", IstioAPIVersion, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("go mod download istio.io/api@%s: %w", IstioAPIVersion, err)
	}
	if mod.Error != "" {
		return "", fmt.Errorf("go mod download istio.io/api@%s: %s", IstioAPIVersion, mod.Error)
	}
	return filepath.Join(mod.Dir, "kubernetes", "customresourcedefinitions.gen.yaml"), nil
}

// gatewayAPICRDs reads the standard-channel CRDs (HTTPRoute, Gateway, GatewayClass, ...) of the
// sigs.k8s.io/gateway-api module, downloading it through the Go module proxy if the cache lacks
// it.
func gatewayAPICRDs(ctx context.Context, root string) ([]*unstructured.Unstructured, error) {
	dir, err := moduleDir(ctx, root, "sigs.k8s.io/gateway-api@"+GatewayAPIVersion)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "config", "crd", "standard", "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no standard-channel CRDs in sigs.k8s.io/gateway-api@%s (%s): %v", GatewayAPIVersion, dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read Gateway API CRDs: %w", err)
		}
		more, err := decodeManifest(data)
		if err != nil {
			return nil, fmt.Errorf("read Gateway API CRDs %s: %w", f, err)
		}
		objs = append(objs, more...)
	}
	return objs, nil
}

// moduleDir is the module cache folder of module@version, downloaded if missing.
func moduleDir(ctx context.Context, root, moduleAtVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", moduleAtVersion)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", moduleAtVersion, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", moduleAtVersion, err)
	}
	if mod.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", moduleAtVersion, mod.Error)
	}
	return mod.Dir, nil
}

// installRBAC applies the knative bundle's rbac.yaml and binds the restricted identity to its
// ClusterRole.
func (l *Lab) installRBAC(ctx context.Context, kube kubernetes.Interface) error {
	data, err := fs.ReadFile(knative.Manifests, "rbac.yaml")
	if err != nil {
		return fmt.Errorf("read RBAC from the knative bundle: %w", err)
	}
	if _, err := l.Apply(ctx, data); err != nil {
		return fmt.Errorf("apply knative rbac.yaml: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "siskin-lab"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: SiskinClusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: SiskinUser}},
	}
	manifest, err := json.Marshal(binding)
	if err != nil {
		return fmt.Errorf("encode ClusterRoleBinding: %w", err)
	}
	if _, err := l.Apply(ctx, manifest); err != nil {
		return err
	}
	get, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := kube.RbacV1().ClusterRoles().Get(get, SiskinClusterRole, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("get ClusterRole %s: %w", SiskinClusterRole, err)
	}
	l.ready("RBAC")
	return nil
}
