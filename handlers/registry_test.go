package handlers

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/siskin-dev/siskin/functions"
)

func sign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func TestVerifyGitHubSignature(t *testing.T) {
	body := `{"action":"published"}`
	tests := []struct {
		name    string
		secret  string
		header  string
		wantErr string
	}{
		{"valid", "s3cret", sign("s3cret", body), ""},
		{"other secret", "s3cret", sign("guess", body), "does not match"},
		{"other body", "s3cret", sign("s3cret", body+" "), "does not match"},
		{"missing header", "s3cret", "", "missing X-Hub-Signature-256"},
		{"sha1 form", "s3cret", "sha1=" + strings.Repeat("a", 40), "not sha256="},
		{"not hex", "s3cret", "sha256=" + strings.Repeat("z", 64), "not sha256="},
		{"short", "s3cret", sign("s3cret", body)[:20], "not sha256="},
		{"empty secret never verifies", "", sign("", body), "secret is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set("X-Hub-Signature-256", tt.header)
			}
			err := VerifyGitHubSignature([]byte(tt.secret), h, []byte(body))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, functions.ErrUnauthorized) {
				t.Fatalf("got error %v, want an ErrUnauthorized containing %q", err, tt.wantErr)
			}
		})
	}
}

// Cases the recorded samples do not cover: edge shapes and the field each error names.
func TestDecodeRegistryWebhook(t *testing.T) {
	const digest = "sha256:1bc04b5291c26a46d918139138b992d2de976d6851d0893b0476b85bfbdfc6e6"
	distEvent := func(target string) string {
		return `{"events":[{"id":"e1","action":"push","target":` + target + `,"request":{"host":"Registry.Example.com"}}]}`
	}
	tests := []struct {
		name    string
		header  http.Header
		body    string
		want    []functions.ImagePush
		wantErr string
	}{
		{
			name: "registry host is lowercased",
			body: distEvent(`{"mediaType":"application/vnd.oci.image.index.v1+json","repository":"shop/cart","tag":"2.0.0","digest":"` + digest + `"}`),
			want: []functions.ImagePush{{EventID: "distribution:e1", Source: "distribution", Registry: "registry.example.com",
				Repository: "shop/cart", Tag: "2.0.0", Digest: digest, MediaType: "application/vnd.oci.image.index.v1+json"}},
		},
		{
			name:    "uppercase repository",
			body:    distEvent(`{"mediaType":"application/vnd.oci.image.index.v1+json","repository":"Shop/Cart","tag":"2.0.0"}`),
			wantErr: `events[0].target.repository: "Shop/Cart" is not a repository name`,
		},
		{
			name:    "tag with a space",
			body:    distEvent(`{"mediaType":"application/vnd.oci.image.index.v1+json","repository":"shop/cart","tag":"2.0 final"}`),
			wantErr: `events[0].target.tag: "2.0 final" is not a tag`,
		},
		{
			name:    "missing event id",
			body:    `{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.index.v1+json","repository":"shop/cart","tag":"2"}}]}`,
			wantErr: "events[0].id: missing",
		},
		{
			name: "schema1 manifest is not a release",
			body: distEvent(`{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","repository":"shop/cart","tag":"2.0.0"}`),
		},
		{name: "events is not an array", body: `{"events":{"id":"e1"}}`, wantErr: "events: expected array, got object"},
		{name: "event is not an object", body: `{"events":["push"]}`, wantErr: "events[0]: expected object, got string"},
		{
			name:    "distribution media type without the envelope",
			header:  http.Header{"Content-Type": {"application/vnd.docker.distribution.events.v2+json"}},
			body:    `{"id":"e1"}`,
			wantErr: "events: missing",
		},
		{name: "data after the object", body: `{"events":[]} {"events":[]}`, wantErr: "body: invalid JSON at offset 14: data after the top-level value"},
		{name: "syntax error names the offset", body: `{"events":[}`, wantErr: "body: invalid JSON at offset 12: invalid character '}'"},
		{name: "deep nesting is an error, not a crash", body: strings.Repeat("[", 20000), wantErr: "body: JSON nested deeper than 64 levels"},
		{
			name: "docker hub official image lives under library/",
			body: `{"push_data":{"tag":"1.27","pushed_at":1741531466},"repository":{"repo_name":"nginx"}}`,
			want: []functions.ImagePush{{EventID: "dockerhub:library/nginx:1.27/1741531466", Source: "dockerhub", Registry: "docker.io",
				Repository: "library/nginx", Tag: "1.27", PushedAt: mustUnix(1741531466)}},
		},
		{
			name:    "docker hub pushed_at as a string",
			body:    `{"push_data":{"tag":"1.27","pushed_at":"yesterday"},"repository":{"repo_name":"acme/web"}}`,
			wantErr: "push_data.pushed_at: expected number, got string",
		},
		{
			name: "harbor tag that only looks like a digest is untagged",
			body: `{"type":"PUSH_ARTIFACT","occur_at":1,"event_data":{"resources":[{"digest":"` + digest + `","tag":"sha256:abc"}],"repository":{"repo_full_name":"shop/cart"}}}`,
		},
		{
			name: "harbor without a host in resource_url",
			body: `{"type":"PUSH_ARTIFACT","occur_at":1,"event_data":{"resources":[{"digest":"` + digest + `","tag":"v2","resource_url":"shop/cart:v2"}],"repository":{"namespace":"shop","name":"cart"}}}`,
			want: []functions.ImagePush{{EventID: "harbor:PUSH_ARTIFACT/1/" + digest + "/v2", Source: "harbor", Repository: "shop/cart",
				Tag: "v2", Digest: digest, PushedAt: mustUnix(1)}},
		},
		{
			name:    "harbor without a repository",
			body:    `{"type":"PUSH_ARTIFACT","occur_at":1,"event_data":{"resources":[{"tag":"v2"}]}}`,
			wantErr: "event_data.repository.namespace: missing",
		},
		{name: "harbor other event", body: `{"type":"SCANNING_COMPLETED","occur_at":1,"event_data":{}}`},
		{name: "quay updated_tags of the wrong type", body: `{"repository":"acme/web","updated_tags":3}`, wantErr: "updated_tags: expected array, got number"},
		{name: "quay bad tag", body: `{"repository":"acme/web","updated_tags":["ok","-bad"]}`, wantErr: `updated_tags[1]: "-bad" is not a tag`},
		{
			name: "ecr in a China region",
			body: `{"id":"x1","detail-type":"ECR Image Action","account":"123456789012","region":"cn-north-1","detail":{"result":"SUCCESS","action-type":"PUSH","repository-name":"web","image-tag":"v1"}}`,
			want: []functions.ImagePush{{EventID: "ecr:x1", Source: "ecr", Registry: "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", Repository: "web", Tag: "v1"}},
		},
		{
			name:    "ecr bad account",
			body:    `{"id":"x1","detail-type":"ECR Image Action","account":"12345","region":"us-east-1","detail":{"result":"SUCCESS","action-type":"PUSH","repository-name":"web","image-tag":"v1"}}`,
			wantErr: `account: "12345" is not a 12-digit AWS account id`,
		},
		{name: "other eventbridge event", body: `{"id":"x2","detail-type":"ECR Image Scan","detail":{}}`},
		{
			name:    "gar tag without a host",
			body:    `{"action":"INSERT","tag":"apps/web:v1"}`,
			wantErr: `tag: "apps/web:v1" is not host/repository:tag`,
		},
		{
			name:    "pub/sub message that is not a registry notification",
			body:    `{"message":{"data":"eyJmb28iOjF9","messageId":"1"},"subscription":"projects/p/subscriptions/s"}`,
			wantErr: "message.data.action: missing",
		},
		{
			name:   "ghcr npm package",
			header: http.Header{"X-Github-Event": {"package"}},
			body:   `{"action":"published","package":{"name":"lib","namespace":"acme","ecosystem":"npm","package_type":"npm"}}`,
		},
		{
			name:   "ghcr deleted",
			header: http.Header{"X-Github-Event": {"package"}},
			body:   `{"action":"deleted","package":{}}`,
		},
		{
			name:   "ghcr legacy registry_package",
			header: http.Header{"X-Github-Event": {"registry_package"}, "X-Github-Delivery": {"d1"}},
			body:   `{"action":"published","registry_package":{"name":"Web","namespace":"Acme","package_type":"CONTAINER","package_version":{"container_metadata":{"tag":{"name":"v1","digest":"` + digest + `"}}}}}`,
			want:   []functions.ImagePush{{EventID: "ghcr:d1", Source: "ghcr", Registry: "ghcr.io", Repository: "acme/web", Tag: "v1", Digest: digest}},
		},
		{
			name:    "ghcr body of the wrong type",
			header:  http.Header{"X-Github-Event": {"package"}},
			body:    `{"action":"published","package":"web"}`,
			wantErr: "package: expected object, got string",
		},
		{name: "no headers at all", header: nil, body: `{"kind":"x"}`, wantErr: "unrecognised registry notification"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRegistryWebhook(tt.header, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, functions.ErrInvalid) {
					t.Fatalf("got error %v, want an ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("pushes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDedupeEventIDs(t *testing.T) {
	pushes := []functions.ImagePush{{EventID: "a", Tag: "1"}, {EventID: "b", Tag: "2"}, {EventID: "a", Tag: "3"}}
	dedupeEventIDs(pushes)
	var got []string
	for _, p := range pushes {
		got = append(got, p.EventID)
	}
	if want := []string{"a/1", "b", "a/2"}; !cmp.Equal(got, want) {
		t.Errorf("got ids %v, want %v", got, want)
	}
}

func TestReferenceProblems(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) string
		in    string
		ok    bool
	}{
		{"repository", repositoryProblem, "shop/checkout", true},
		{"repository nested", repositoryProblem, "acme-prod/apps/check_out.v2", true},
		{"repository uppercase", repositoryProblem, "Shop/checkout", false},
		{"repository empty component", repositoryProblem, "shop//checkout", false},
		{"repository leading slash", repositoryProblem, "/checkout", false},
		{"repository too long", repositoryProblem, strings.Repeat("a", 256), false},
		{"tag", tagProblem, "1.4.2-rc.1_b", true},
		{"tag leading dash", tagProblem, "-1", false},
		{"tag too long", tagProblem, strings.Repeat("a", 129), false},
		{"digest sha256", digestProblem, "sha256:" + strings.Repeat("a", 64), true},
		{"digest sha512", digestProblem, "sha512:" + strings.Repeat("0", 128), true},
		{"digest short", digestProblem, "sha256:abc", false},
		{"digest uppercase hex", digestProblem, "sha256:" + strings.Repeat("A", 64), false},
		{"digest unknown algorithm", digestProblem, "md5:" + strings.Repeat("a", 32), false},
		{"host", hostProblem, "registry.example.com:5000", true},
		{"host ipv6", hostProblem, "[::1]:5000", true},
		{"host with path", hostProblem, "registry.example.com/x", false},
		{"host with scheme", hostProblem, "https://registry.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.check(tt.in); (got == "") != tt.ok {
				t.Errorf("problem with %q: got %q, want ok=%v", tt.in, got, tt.ok)
			}
		})
	}
}

func TestErrorPathsQuoteOddKeys(t *testing.T) {
	_, err := DecodeAlertmanager([]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a.b\n":1}}]}`))
	want := `alerts[0].labels["a.b\n"]: expected string, got number`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got error %v, want one containing %s", err, want)
	}
}
