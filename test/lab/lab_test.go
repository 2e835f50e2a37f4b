package lab

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

func TestDecodeManifest(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		want     []string // kind/name
		wantErr  string
	}{
		{
			name: "documents, empty ones skipped",
			manifest: "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n# only a comment\n---\n" +
				"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: b\n",
			want: []string{"Namespace/a", "ClusterRole/b"},
		},
		{
			name:     "List flattened",
			manifest: `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}]}`,
			want:     []string{"ConfigMap/c"},
		},
		{name: "no name", manifest: "apiVersion: v1\nkind: ConfigMap\n", wantErr: "metadata.name"},
		{name: "not YAML", manifest: "apiVersion: [", wantErr: "document 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := decodeManifest([]byte(tt.manifest))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v", err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.GetKind()+"/"+o.GetName())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewPKI(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.caPEM)
	parse := func(path string) *x509.Certificate {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	admin := parse(p.adminCert)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate as a client: %v", err)
	}
	if got := admin.Subject.Organization; !cmp.Equal(got, []string{"system:masters"}) {
		t.Errorf("admin organization: got %v, want [system:masters]", got)
	}
	server := parse(p.serverCert)
	for _, host := range []string{"127.0.0.1", "10.96.0.1", "localhost", "kubernetes.default.svc"} {
		if _, err := server.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
	tokens, err := os.ReadFile(p.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := p.siskinToken + ",siskin,siskin,\"siskin-lab\"\n"; string(tokens) != want {
		t.Errorf("token file: got %q, want %q", tokens, want)
	}
	if len(p.siskinToken) < 32 {
		t.Errorf("token %q is too short", p.siskinToken)
	}
}

func TestFreePortsAreDistinctAndFree(t *testing.T) {
	ports, err := freePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d given twice in %v", p, ports)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", hostport(p))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		ln.Close()
	}
}

func TestServiceConfigs(t *testing.T) {
	l := &Lab{dir: t.TempDir(), ports: ports{prometheus: 9090, alertmanager: 9093, registry: 5000}}
	l.webhookURL, l.webhookToken = "http://127.0.0.1:8080/alerts", "s3cret"
	l.notifyURL, l.notifyToken = "http://127.0.0.1:8080/registry", "t0ken"
	if err := l.writeServiceConfigs(); err != nil {
		t.Fatal(err)
	}
	read := func(parts ...string) map[string]any {
		b, err := os.ReadFile(l.path(parts...))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", filepath.Join(parts...), err)
		}
		return m
	}

	am := read("alertmanager", "alertmanager.yml")
	wantReceivers := []any{map[string]any{
		"name": "lab-webhook",
		"webhook_configs": []any{map[string]any{
			"url": "http://127.0.0.1:8080/alerts", "send_resolved": true,
			"http_config": map[string]any{"authorization": map[string]any{"type": "Bearer", "credentials": "s3cret"}},
		}},
	}}
	if diff := cmp.Diff(wantReceivers, am["receivers"]); diff != "" {
		t.Errorf("alertmanager receivers (-want +got):\n%s", diff)
	}
	registry := read("registry", "config.yml")
	wantNotify := map[string]any{"endpoints": []any{map[string]any{
		"name": "lab", "url": "http://127.0.0.1:8080/registry", "timeout": "2s", "threshold": float64(5), "backoff": "1s",
		"headers": map[string]any{"Authorization": []any{"Bearer t0ken"}},
	}}}
	if diff := cmp.Diff(wantNotify, registry["notifications"]); diff != "" {
		t.Errorf("registry notifications (-want +got):\n%s", diff)
	}
	prom := read("prometheus", "prometheus.yml")
	if got := prom["global"].(map[string]any)["scrape_interval"]; got != "1s" {
		t.Errorf("scrape_interval: got %v, want 1s", got)
	}

	// The servers' own checkers, when installed, must accept the files.
	for _, check := range [][]string{
		{"promtool", "check", "config", l.path("prometheus", "prometheus.yml")},
		{"amtool", "check-config", l.path("alertmanager", "alertmanager.yml")},
	} {
		if _, err := exec.LookPath(check[0]); err != nil {
			t.Logf("%s not installed; skipping its check", check[0])
			continue
		}
		if out, err := exec.Command(check[0], check[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(check, " "), err, out)
		}
	}
}

func TestHasTarget(t *testing.T) {
	body := []byte(`{"status":"success","data":{"activeTargets":[
		{"labels":{"job":"lab","instance":"127.0.0.1:1"}},
		{"labels":{"job":"app","instance":"127.0.0.1:2"}}]}}`)
	tests := []struct {
		job, hostport string
		want          bool
	}{
		{"app", "127.0.0.1:2", true},
		{"app", "127.0.0.1:1", false},
		{"other", "127.0.0.1:2", false},
	}
	for _, tt := range tests {
		got, err := hasTarget(body, tt.job, tt.hostport)
		if err != nil || got != tt.want {
			t.Errorf("hasTarget(%s, %s): got %v, %v; want %v", tt.job, tt.hostport, got, err, tt.want)
		}
	}
}

func TestProcessStopLeavesNothing(t *testing.T) {
	tests := []struct {
		name   string
		script string
	}{
		{name: "exits on SIGTERM, with a child", script: "sleep 300 & wait"},
		{name: "ignores SIGTERM, with a child that ignores it too", script: `trap "" TERM; sh -c 'trap "" TERM; sleep 300' & wait`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := spawn(t.TempDir(), "sh", "sh", "-c", tt.script)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // let the children start
			if gone, how := p.exited(); gone {
				t.Fatalf("exited early: %v", how)
			}
			began := time.Now()
			if err := p.stop(500 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(-p.pid(), 0); err != syscall.ESRCH {
				t.Errorf("process group %d after stop: got %v, want ESRCH", p.pid(), err)
			}
			if d := time.Since(began); d > 5*time.Second {
				t.Errorf("stop took %s", d)
			}
		})
	}
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.json")
	for _, content := range []string{"[1]", "[2]"} {
		if err := writeFileAtomic(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != content {
			t.Errorf("got %q, want %q", got, content)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
}
