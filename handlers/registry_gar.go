package handlers

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// decodePubSubPush reads a Pub/Sub push envelope whose message is an Artifact Registry (or
// Container Registry) notification from the gcr topic.
func decodePubSubPush(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	return pubSubPushes(root, "")
}

// pubSubPushes reads {"message": {"data": base64, "messageId", "publishTime"}, "subscription"},
// the body of a push subscription and the data of Eventarc's messagePublished CloudEvent.
// eventID overrides the message id when the envelope came inside a CloudEvent.
func pubSubPushes(root jsonNode, eventID string) []functions.ImagePush {
	msg := root.get("message").object()
	dataNode := msg.get("data")
	encoded := dataNode.requiredStr()
	if root.err() != nil {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		dataNode.fail("invalid base64: %v", err)
		return nil
	}
	inner, err := parseJSON(raw, dataNode.path)
	if err != nil {
		root.doc.err = err
		return nil
	}
	if eventID == "" {
		id := msg.get("messageId").str()
		if id == "" {
			id = msg.get("message_id").requiredStr()
		}
		eventID = "gar:" + id
	}
	published := msg.get("publishTime")
	if !published.present() {
		published = msg.get("publish_time")
	}
	pushes := garPushes(inner, eventID, published.time())
	if err := inner.err(); err != nil {
		root.doc.err = err
	}
	return pushes
}

// decodeGARRaw reads the notification itself, as an unwrapped push subscription delivers it.
// It has no id: the digest and tag references name the push.
func decodeGARRaw(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	return garPushes(root, "", time.Time{})
}

// garPushes reads {"action": "INSERT", "digest": "host/path@sha256:…", "tag": "host/path:tag"}.
// Deletes and untagged pushes (no tag member) are ignored.
func garPushes(msg jsonNode, eventID string, at time.Time) []functions.ImagePush {
	msg.object()
	if msg.get("action").requiredStr() != "INSERT" {
		return nil
	}
	tagNode := msg.get("tag")
	tagRef := tagNode.str()
	if tagRef == "" {
		return nil
	}
	host, rest := splitHost(tagRef)
	repo, tag, ok := splitTagged(rest)
	if !ok || host == "" {
		tagNode.fail("%s is not host/repository:tag", quote(tagRef))
		return nil
	}
	tagNode.checkHost(host)
	tagNode.checkRepository(repo)
	tagNode.checkTag(tag)
	digestNode := msg.get("digest")
	var digest string
	if digestRef := digestNode.str(); digestRef != "" {
		name, d, ok := strings.Cut(digestRef, "@")
		if !ok || name != host+"/"+repo {
			digestNode.fail("%s is not %s@<digest>", quote(digestRef), host+"/"+repo)
			return nil
		}
		digestNode.checkDigest(d)
		digest = d
	}
	if eventID == "" {
		eventID = "gar:" + host + "/" + repo + ":" + tag + "@" + digest
	}
	return []functions.ImagePush{{
		EventID:    eventID,
		Source:     "gar",
		Registry:   host,
		Repository: repo,
		Tag:        tag,
		Digest:     digest,
		PushedAt:   at,
	}}
}
