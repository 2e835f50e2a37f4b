package handlers

import (
	"net/http"
	"strings"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// Harbor's default webhook format: {"type", "occur_at", "operator", "event_data"}. Harbor 1.x
// named the push type pushImage.
func decodeHarbor(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	typ := root.get("type").requiredStr()
	if typ != "PUSH_ARTIFACT" && typ != "pushImage" {
		return nil
	}
	occurAt := root.get("occur_at")
	at := occurAt.unixTime()
	stamp, _ := occurAt.number()
	return harborPushes(root.get("event_data"), at, func(digest, tag string) string {
		return "harbor:" + typ + "/" + stamp.String() + "/" + digest + "/" + tag
	})
}

// harborPushes reads Harbor's event_data (the CloudEvents format's data is the same object).
// Harbor names one resource per push; a push without a tag carries the digest as its tag, and
// is ignored: there is no tag to hold a policy against.
func harborPushes(data jsonNode, at time.Time, eventID func(digest, tag string) string) []functions.ImagePush {
	data.object()
	repo := data.get("repository")
	name := repo.get("repo_full_name")
	full := name.str()
	if full == "" {
		full = repo.get("namespace").requiredStr() + "/" + repo.get("name").requiredStr()
	}
	var pushes []functions.ImagePush
	for _, r := range data.get("resources").items() {
		r.object()
		tag, digest := r.get("tag").str(), r.get("digest").optionalDigest()
		if tag == "" || tag == digest || strings.HasPrefix(tag, "sha256:") {
			continue
		}
		r.get("tag").checkTag(tag)
		name.checkRepository(full)
		host, _ := splitHost(r.get("resource_url").str())
		if host != "" {
			r.get("resource_url").checkHost(host)
		}
		pushes = append(pushes, functions.ImagePush{
			EventID:    eventID(digest, tag),
			Source:     "harbor",
			Registry:   host,
			Repository: full,
			Tag:        tag,
			Digest:     digest,
			PushedAt:   at,
		})
	}
	return pushes
}
