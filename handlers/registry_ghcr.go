package handlers

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

// decodeGitHub reads a GitHub webhook. Only the package event (and its legacy twin
// registry_package) of a container can carry a push; ping and every other event are
// acknowledged.
func decodeGitHub(h http.Header, body []byte) ([]functions.ImagePush, error) {
	event := h.Get("X-GitHub-Event")
	if event != "package" && event != "registry_package" {
		return nil, nil
	}
	root, err := parseJSON(body, "")
	if err != nil {
		return nil, err
	}
	pushes := ghcrPushes(h, root.object(), event)
	if err := root.err(); err != nil {
		return nil, fmt.Errorf("ghcr %s event: %w", event, err)
	}
	return pushes, nil
}

func ghcrPushes(h http.Header, root jsonNode, event string) []functions.ImagePush {
	action := root.get("action").str()
	if action != "published" && action != "updated" {
		return nil
	}
	pkg := root.get(event).object()
	kind := pkg.get("package_type").str() + " " + pkg.get("ecosystem").str()
	if kind = strings.ToLower(kind); !strings.Contains(kind, "container") && !strings.Contains(kind, "docker") {
		return nil // npm, maven… packages
	}
	tagNode := pkg.get("package_version").get("container_metadata").get("tag")
	tag := tagNode.get("name").str()
	if tag == "" {
		return nil // an untagged manifest, e.g. one platform of a multi-arch push
	}
	tagNode.get("name").checkTag(tag)
	digest := tagNode.get("digest").optionalDigest()
	namespace := pkg.get("namespace").str()
	if namespace == "" {
		namespace = pkg.get("owner").get("login").requiredStr()
	}
	name := pkg.get("name")
	repo := strings.ToLower(namespace + "/" + name.requiredStr()) // GHCR repositories are lowercase
	name.checkRepository(repo)
	id := h.Get("X-GitHub-Delivery")
	if id == "" {
		id = repo + ":" + tag + "@" + digest
	}
	return []functions.ImagePush{{
		EventID:    "ghcr:" + id,
		Source:     "ghcr",
		Registry:   "ghcr.io",
		Repository: repo,
		Tag:        tag,
		Digest:     digest,
		PushedAt:   pkg.get("package_version").get("created_at").time(),
	}}
}

// VerifyGitHubSignature checks X-Hub-Signature-256 ("sha256=" and the hex HMAC-SHA256 of the
// body under secret) in constant time. Errors wrap functions.ErrUnauthorized; an empty secret
// never verifies, since anyone can sign with it.
func VerifyGitHubSignature(secret []byte, h http.Header, body []byte) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: github webhook secret is empty", functions.ErrUnauthorized)
	}
	header := h.Get("X-Hub-Signature-256")
	if header == "" {
		return fmt.Errorf("%w: missing X-Hub-Signature-256", functions.ErrUnauthorized)
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: X-Hub-Signature-256 is not sha256=<64 hex digits>", functions.ErrUnauthorized)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: X-Hub-Signature-256 does not match the body", functions.ErrUnauthorized)
	}
	return nil
}
