package handlers

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/siskin-dev/siskin/functions"
)

// Quay's repository push notification: no event id, no digest, and updated_tags either a list
// of tags or (older Quay) a map of tag to image id. One push per tag. The id is a hash of the
// body, so a redelivery dedupes and a later push does not.
func decodeQuay(_ http.Header, root jsonNode, body []byte) []functions.ImagePush {
	repoNode := root.get("repository")
	repo := repoNode.repository()
	host := "quay.io"
	if h, _ := splitHost(root.get("docker_url").str()); h != "" {
		root.get("docker_url").checkHost(h)
		host = h
	}
	tagsNode := root.get("updated_tags")
	var tags []string
	if tagsNode.isObject() {
		for _, k := range tagsNode.keys() {
			tagsNode.get(k).checkTag(k)
			tags = append(tags, k)
		}
	} else {
		for _, t := range tagsNode.items() {
			tag := t.requiredStr()
			t.checkTag(tag)
			tags = append(tags, tag)
		}
	}
	sum := sha256.Sum256(body)
	delivery := "quay:" + hex.EncodeToString(sum[:8])
	var pushes []functions.ImagePush
	for _, tag := range tags {
		pushes = append(pushes, functions.ImagePush{
			EventID:    delivery + "/" + tag,
			Source:     "quay",
			Registry:   host,
			Repository: repo,
			Tag:        tag,
		})
	}
	return pushes
}
