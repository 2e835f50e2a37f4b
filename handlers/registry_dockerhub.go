package handlers

import (
	"net/http"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

// Docker Hub's webhook has no event id, no digest and no signature: the id is built from the
// repository, tag and push time, and the digest is left to the registry check.
func decodeDockerHub(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	data := root.get("push_data").object()
	tag := data.get("tag").str()
	if tag == "" {
		return nil
	}
	data.get("tag").checkTag(tag)
	repo := root.get("repository").object()
	name := repo.get("repo_name")
	full := name.str()
	if full == "" {
		full = repo.get("namespace").requiredStr() + "/" + repo.get("name").requiredStr()
	}
	if !strings.Contains(full, "/") {
		full = "library/" + full // official images live under library/
	}
	name.checkRepository(full)
	pushedAt := data.get("pushed_at")
	at := pushedAt.unixTime()
	stamp, _ := pushedAt.number()
	return []functions.ImagePush{{
		EventID:    "dockerhub:" + full + ":" + tag + "/" + stamp.String(),
		Source:     "dockerhub",
		Registry:   "docker.io",
		Repository: full,
		Tag:        tag,
		PushedAt:   at,
	}}
}
