package lab

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// StartAPIServerFaultProxy puts a fault proxy in front of kube-apiserver. It serves TLS with
// the apiserver's own certificate (valid for 127.0.0.1), so a client keeps verifying the
// lab's CA and authenticating as before; SiskinKubeconfigVia points Siskin at it.
func (l *Lab) StartAPIServerFaultProxy(opts FaultProxyOptions) (*FaultProxy, error) {
	cert, err := tls.LoadX509KeyPair(l.pki.serverCert, l.pki.serverKey)
	if err != nil {
		return nil, fmt.Errorf("apiserver fault proxy: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(l.pki.caPEM)
	opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	opts.Upstream = &tls.Config{RootCAs: pool}
	return StartHTTPFaultProxy("kube-apiserver", l.APIServerURL(), opts)
}

// SiskinKubeconfigVia writes a kubeconfig of the restricted identity (user "siskin") whose
// server is serverURL (a fault proxy's), and returns its path.
func (l *Lab) SiskinKubeconfigVia(name, serverURL string) (string, error) {
	path := filepath.Join(l.dir, name+".kubeconfig")
	return path, writeKubeconfig(path, serverURL, l.pki.caPEM, SiskinUser, &clientcmdapi.AuthInfo{Token: l.pki.siskinToken})
}
