package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

func (l *Lab) path(parts ...string) string {
	return filepath.Join(append([]string{l.dir}, parts...)...)
}

func (l *Lab) writeServiceConfigs() error {
	for _, d := range [][]string{
		{"redis"}, {"prometheus", "data"}, {"prometheus", "targets"}, {"prometheus", "rules"},
		{"alertmanager", "data"}, {"registry", "data"},
	} {
		if err := os.MkdirAll(l.path(d...), 0o755); err != nil {
			return fmt.Errorf("create lab dir: %w", err)
		}
	}
	prometheus := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
alerting:
  alertmanagers:
  - static_configs:
    - targets: [%q]
rule_files:
- %q
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: [%q]
# Tests add targets with AddScrapeTarget: one file per job, the job label set in the file.
- job_name: lab
  file_sd_configs:
  - files: [%q]
    refresh_interval: 1s
`, hostport(l.ports.alertmanager), l.path("prometheus", "rules", "*.yml"), hostport(l.ports.prometheus),
		l.path("prometheus", "targets", "*.json"))
	if err := os.WriteFile(l.path("prometheus", "prometheus.yml"), []byte(prometheus), 0o644); err != nil {
		return fmt.Errorf("write prometheus config: %w", err)
	}
	if err := l.writeAlertmanagerConfig(); err != nil {
		return err
	}
	return l.writeRegistryConfig()
}

// --- redis ---

func (l *Lab) startRedis() error {
	_, err := l.spawn("redis", "redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(l.ports.redis),
		"--save", "", "--appendonly", "no", "--dir", l.path("redis"),
		"--daemonize", "no", "--protected-mode", "no", "--logfile", "")
	return err
}

func (l *Lab) waitRedis(ctx context.Context) error {
	return l.waitFor(ctx, l.proc("redis"), "redis", func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", l.RedisAddr())
		if err != nil {
			return err
		}
		defer conn.Close()
		if deadline, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(deadline)
		}
		if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSpace(line) != "+PONG" {
			return fmt.Errorf("redis PING answered %q", line)
		}
		return nil
	})
}

// --- prometheus ---

func (l *Lab) startPrometheus() error {
	_, err := l.spawn("prometheus", "prometheus",
		"--config.file="+l.path("prometheus", "prometheus.yml"),
		"--storage.tsdb.path="+l.path("prometheus", "data"),
		"--web.listen-address="+hostport(l.ports.prometheus),
		"--web.external-url="+l.PrometheusURL(),
		"--web.enable-lifecycle",
		// Resend firing alerts every second (default 1 m): a reload briefly empties the list
		// of Alertmanagers, and an alert sent then would wait a minute for the next try.
		"--rules.alert.resend-delay=1s",
		"--log.level=info")
	return err
}

func (l *Lab) waitPrometheus(ctx context.Context) error {
	return l.waitFor(ctx, l.proc("prometheus"), "prometheus", httpOK(plainClient, l.PrometheusURL()+"/-/ready"))
}

const targetsAPI = "/api/v1/targets?state=active"

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

func fileName(name string) string { return unsafeFileChars.ReplaceAllString(name, "_") }

// AddScrapeTarget makes Prometheus scrape http://hostport/metrics every second with label
// job=job, and returns once Prometheus lists the target.
func (l *Lab) AddScrapeTarget(ctx context.Context, job, hostport string) error {
	if job == "" || hostport == "" {
		return errors.New("add scrape target: job and hostport are required")
	}
	l.servicesMu.Lock()
	targets := l.scrapeTargets[job]
	if !slices.Contains(targets, hostport) {
		targets = append(targets, hostport)
	}
	err := l.writeTargets(job, targets)
	l.servicesMu.Unlock()
	if err != nil {
		return err
	}
	return l.waitPrometheusAPI(ctx, targetsAPI, "target "+job+"/"+hostport, func(body []byte) (bool, error) {
		return hasTarget(body, job, hostport)
	})
}

// RemoveScrapeTarget undoes AddScrapeTarget and returns once Prometheus dropped the target.
func (l *Lab) RemoveScrapeTarget(ctx context.Context, job, hostport string) error {
	l.servicesMu.Lock()
	targets := slices.DeleteFunc(slices.Clone(l.scrapeTargets[job]), func(t string) bool { return t == hostport })
	err := l.writeTargets(job, targets)
	l.servicesMu.Unlock()
	if err != nil {
		return err
	}
	return l.waitPrometheusAPI(ctx, targetsAPI, "removal of target "+job+"/"+hostport, func(body []byte) (bool, error) {
		found, err := hasTarget(body, job, hostport)
		return !found, err
	})
}

// writeTargets writes a job's file_sd file; the caller holds servicesMu.
func (l *Lab) writeTargets(job string, targets []string) error {
	file := l.path("prometheus", "targets", fileName(job)+".json")
	if len(targets) == 0 {
		delete(l.scrapeTargets, job)
		if err := os.Remove(file); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove scrape targets of job %s: %w", job, err)
		}
		return nil
	}
	l.scrapeTargets[job] = targets
	data, err := json.Marshal([]map[string]any{{"targets": targets, "labels": map[string]string{"job": job}}})
	if err != nil {
		return fmt.Errorf("encode scrape targets of job %s: %w", job, err)
	}
	return writeFileAtomic(file, data)
}

func hasTarget(body []byte, job, hostport string) (bool, error) {
	var resp struct {
		Data struct {
			ActiveTargets []struct {
				Labels map[string]string `json:"labels"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return false, fmt.Errorf("decode prometheus targets: %w", err)
	}
	for _, t := range resp.Data.ActiveTargets {
		if t.Labels["job"] == job && t.Labels["instance"] == hostport {
			return true, nil
		}
	}
	return false, nil
}

// AddAlertRule adds (or replaces, by alert name) one Prometheus alerting rule, given as the
// YAML of a single rule (alert, expr, for, labels, annotations). It is evaluated every second;
// it returns once Prometheus has loaded it.
func (l *Lab) AddAlertRule(ctx context.Context, rule string) error {
	var parsed map[string]any
	if err := yaml.Unmarshal([]byte(rule), &parsed); err != nil {
		return fmt.Errorf("add alert rule: %w", err)
	}
	name, _ := parsed["alert"].(string)
	if name == "" || parsed["expr"] == nil {
		return errors.New("add alert rule: alert and expr are required")
	}
	group := "lab-" + name
	data, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": group, "interval": "1s", "rules": []any{parsed}}}})
	if err != nil {
		return fmt.Errorf("add alert rule %s: %w", name, err)
	}
	file := l.path("prometheus", "rules", fileName(name)+".yml")
	l.servicesMu.Lock()
	err = writeFileAtomic(file, data)
	if err == nil {
		if err = l.reload(ctx, l.PrometheusURL()); err != nil {
			_ = os.Remove(file) // Prometheus kept its old rules; keep the folder in sync
			err = fmt.Errorf("add alert rule %s: %w", name, err)
		}
	}
	l.servicesMu.Unlock()
	if err != nil {
		return err
	}
	return l.waitRuleGroup(ctx, group, true)
}

// RemoveAlertRule removes the alerting rule named alert.
func (l *Lab) RemoveAlertRule(ctx context.Context, alert string) error {
	l.servicesMu.Lock()
	err := os.Remove(l.path("prometheus", "rules", fileName(alert)+".yml"))
	if err == nil {
		err = l.reload(ctx, l.PrometheusURL())
	}
	l.servicesMu.Unlock()
	if err != nil {
		return fmt.Errorf("remove alert rule %s: %w", alert, err)
	}
	return l.waitRuleGroup(ctx, "lab-"+alert, false)
}

func (l *Lab) waitRuleGroup(ctx context.Context, group string, present bool) error {
	return l.waitPrometheusAPI(ctx, "/api/v1/rules?type=alert", "rule group "+group, func(body []byte) (bool, error) {
		var resp struct {
			Data struct {
				Groups []struct {
					Name string `json:"name"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			return false, fmt.Errorf("decode prometheus rules: %w", err)
		}
		found := slices.ContainsFunc(resp.Data.Groups, func(g struct {
			Name string `json:"name"`
		}) bool {
			return g.Name == group
		})
		return found == present, nil
	})
}

// waitPrometheusAPI polls an API of Prometheus until done says so.
func (l *Lab) waitPrometheusAPI(ctx context.Context, apiPath, what string, done func(body []byte) (bool, error)) error {
	api := l.PrometheusURL() + apiPath
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		body, err := get(ctx, api)
		if err == nil {
			var ok bool
			if ok, err = done(body); ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prometheus: waiting for %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// --- alertmanager ---

func (l *Lab) startAlertmanager() error {
	_, err := l.spawn("alertmanager", "prometheus-alertmanager",
		"--config.file="+l.path("alertmanager", "alertmanager.yml"),
		"--storage.path="+l.path("alertmanager", "data"),
		"--web.listen-address="+hostport(l.ports.alertmanager),
		"--web.external-url="+l.AlertmanagerURL(),
		"--cluster.listen-address=", // no gossip port on 0.0.0.0:9094
		"--log.level=info")
	return err
}

func (l *Lab) waitAlertmanager(ctx context.Context) error {
	return l.waitFor(ctx, l.proc("alertmanager"), "alertmanager", httpOK(plainClient, l.AlertmanagerURL()+"/-/ready"))
}

// writeAlertmanagerConfig routes every alert, one group per label set, to the webhook (or
// nowhere while none is set); the caller holds servicesMu or the lab is starting.
func (l *Lab) writeAlertmanagerConfig() error {
	receiver := map[string]any{"name": "lab-webhook"}
	if l.webhookURL != "" {
		hook := map[string]any{"url": l.webhookURL, "send_resolved": true}
		if l.webhookToken != "" {
			hook["http_config"] = map[string]any{"authorization": map[string]any{"type": "Bearer", "credentials": l.webhookToken}}
		}
		receiver["webhook_configs"] = []any{hook}
	}
	cfg := map[string]any{
		"route": map[string]any{
			"receiver":        "lab-webhook",
			"group_by":        []string{"..."},
			"group_wait":      "1s",
			"group_interval":  "1s",
			"repeat_interval": "1h",
		},
		"receivers": []any{receiver},
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode alertmanager config: %w", err)
	}
	return writeFileAtomic(l.path("alertmanager", "alertmanager.yml"), data)
}

// SetAlertWebhook points Alertmanager's only receiver at url (a webhook, version 4 payloads,
// resolved alerts included), sending "Authorization: Bearer token" when token is not empty.
// An empty url sends alerts nowhere. It returns once Alertmanager runs the new config.
func (l *Lab) SetAlertWebhook(ctx context.Context, webhookURL, token string) error {
	if webhookURL != "" {
		if _, err := url.ParseRequestURI(webhookURL); err != nil {
			return fmt.Errorf("set alert webhook: %w", err)
		}
	}
	l.servicesMu.Lock()
	defer l.servicesMu.Unlock()
	l.webhookURL, l.webhookToken = webhookURL, token
	if err := l.writeAlertmanagerConfig(); err != nil {
		return err
	}
	if err := l.reload(ctx, l.AlertmanagerURL()); err != nil {
		return fmt.Errorf("set alert webhook: %w", err)
	}
	body, err := get(ctx, l.AlertmanagerURL()+"/api/v2/status")
	if err != nil {
		return fmt.Errorf("set alert webhook: %w", err)
	}
	var status struct {
		Config struct {
			Original string `json:"original"`
		} `json:"config"`
	}
	if err := json.Unmarshal(body, &status); err != nil {
		return fmt.Errorf("set alert webhook: decode alertmanager status: %w", err)
	}
	if webhookURL != "" && !strings.Contains(status.Config.Original, webhookURL) {
		return fmt.Errorf("set alert webhook: alertmanager still runs an old config")
	}
	return nil
}

// --- registry ---

func (l *Lab) startRegistry() error {
	_, err := l.spawn("registry", "docker-registry", "serve", l.path("registry", "config.yml"))
	return err
}

func (l *Lab) waitRegistry(ctx context.Context) error {
	return l.waitFor(ctx, l.proc("registry"), "registry", httpOK(plainClient, "http://"+l.Registry()+"/v2/"))
}

// writeRegistryConfig: the caller holds servicesMu or the lab is starting.
func (l *Lab) writeRegistryConfig() error {
	cfg := map[string]any{
		"version": 0.1,
		"log":     map[string]any{"level": "info", "fields": map[string]any{"service": "registry"}},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": l.path("registry", "data")},
			"delete":     map[string]any{"enabled": true},
		},
		"http": map[string]any{"addr": l.Registry(), "secret": "siskin-lab"},
	}
	if l.notifyURL != "" {
		endpoint := map[string]any{
			"name": "lab", "url": l.notifyURL, "timeout": "2s", "threshold": 5, "backoff": "1s",
		}
		if l.notifyToken != "" {
			endpoint["headers"] = map[string]any{"Authorization": []string{"Bearer " + l.notifyToken}}
		}
		cfg["notifications"] = map[string]any{"endpoints": []any{endpoint}}
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode registry config: %w", err)
	}
	return writeFileAtomic(l.path("registry", "config.yml"), data)
}

// SetRegistryNotify makes the registry send its events (push, pull, delete) to url with
// "Authorization: Bearer token" (no header when token is empty; no notifications when url is
// empty). The registry cannot reload, so it restarts on the same port and storage: images
// pushed before are kept.
func (l *Lab) SetRegistryNotify(ctx context.Context, notifyURL, token string) error {
	if notifyURL != "" {
		if _, err := url.ParseRequestURI(notifyURL); err != nil {
			return fmt.Errorf("set registry notify: %w", err)
		}
	}
	l.servicesMu.Lock()
	defer l.servicesMu.Unlock()
	l.notifyURL, l.notifyToken = notifyURL, token
	if err := l.writeRegistryConfig(); err != nil {
		return err
	}
	if old := l.proc("registry"); old != nil {
		if err := old.stop(5 * time.Second); err != nil {
			return fmt.Errorf("set registry notify: %w", err)
		}
	}
	if err := l.startRegistry(); err != nil {
		return fmt.Errorf("set registry notify: %w", err)
	}
	if err := l.waitRegistry(ctx); err != nil {
		return fmt.Errorf("set registry notify: %w", err)
	}
	return nil
}

// --- plumbing ---

// reload asks a Prometheus or Alertmanager to reread its config; they answer 500 with the
// reason when it is invalid, and keep the old one.
func (l *Lab) reload(ctx context.Context, base string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/-/reload", nil)
	if err != nil {
		return err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return fmt.Errorf("reload %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reload %s: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func get(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// writeFileAtomic replaces a file in one rename, so that watchers never read half of it.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
