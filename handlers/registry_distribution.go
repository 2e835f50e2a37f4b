package handlers

import (
	"net/http"

	"github.com/siskin-dev/siskin/functions"
)

// decodeDistribution reads a CNCF Distribution envelope: {"events": [...]}, one event per POST
// from registry 3.0, batches before.
func decodeDistribution(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	events := root.get("events")
	if !events.present() {
		events.fail("missing, want an array of events")
		return nil
	}
	var pushes []functions.ImagePush
	for _, ev := range events.items() {
		if p, ok := distributionPush(ev, "distribution"); ok {
			pushes = append(pushes, p)
		}
	}
	return pushes
}

// decodeACR reads Azure Container Registry's webhook: one Distribution-shaped event, not
// wrapped in events[].
func decodeACR(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	if p, ok := distributionPush(root, "acr"); ok {
		return []functions.ImagePush{p}
	}
	return nil
}

// distributionPush converts one Distribution event. Only a push of a manifest or an index by
// tag can start a release; blobs, pulls, mounts, deletes and pushes by digest (the
// per-platform manifests of a multi-arch push) are ignored.
func distributionPush(ev jsonNode, source string) (functions.ImagePush, bool) {
	ev.object()
	target := ev.get("target")
	action := ev.get("action").str()
	mediaType := target.get("mediaType").str()
	tag := target.get("tag").str()
	if ev.err() != nil || action != "push" || !manifestMediaTypes[mediaType] || tag == "" {
		return functions.ImagePush{}, false
	}
	target.get("tag").checkTag(tag)
	return functions.ImagePush{
		EventID:    source + ":" + ev.get("id").requiredStr(),
		Source:     source,
		Registry:   ev.get("request").get("host").optionalHost(),
		Repository: target.get("repository").repository(),
		Tag:        tag,
		Digest:     target.get("digest").optionalDigest(),
		MediaType:  mediaType,
		PushedAt:   ev.get("timestamp").time(),
	}, true
}
