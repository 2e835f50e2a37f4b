package handlers

import (
	"fmt"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

// Manifest and index media types: the pushes that can start a release. Blobs (layers,
// configs) and anything else are acknowledged and ignored.
var manifestMediaTypes = map[string]bool{
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
}

// The problems of a reference's parts, in the words of an error, on the grammar of
// functions.ParseImageRef: a push that fails it can never match a container image, and the
// strings end up in logs, Events and patches.

func repositoryProblem(s string) string {
	if s == "" {
		return "missing repository"
	}
	if !functions.ValidRepository(s) {
		return fmt.Sprintf("%s is not a repository name (lowercase path components separated by /)", quote(s))
	}
	return ""
}

func tagProblem(s string) string {
	if !functions.ValidTag(s) {
		return fmt.Sprintf("%s is not a tag", quote(s))
	}
	return ""
}

func digestProblem(s string) string {
	if !functions.ValidDigest(s) {
		return fmt.Sprintf("%s is not a digest (sha256:<64 lowercase hex digits>)", quote(s))
	}
	return ""
}

func hostProblem(s string) string {
	if !functions.ValidHost(s) {
		return fmt.Sprintf("%s is not a registry host[:port]", quote(s))
	}
	return ""
}

// The checked readers: each reads a string member and fails at its path when the value is not
// what the name says. Optional ones accept absence.

func (n jsonNode) repository() string {
	s := n.str()
	if p := repositoryProblem(s); p != "" && n.err() == nil {
		n.fail("%s", p)
	}
	return s
}

func (n jsonNode) optionalDigest() string {
	s := n.str()
	if s != "" {
		n.checkDigest(s)
	}
	return s
}

func (n jsonNode) optionalHost() string {
	s := strings.ToLower(n.str())
	if s != "" {
		n.checkHost(s)
	}
	return s
}

func (n jsonNode) checkTag(s string) {
	if p := tagProblem(s); p != "" {
		n.fail("%s", p)
	}
}

func (n jsonNode) checkDigest(s string) {
	if p := digestProblem(s); p != "" {
		n.fail("%s", p)
	}
}

func (n jsonNode) checkHost(s string) {
	if p := hostProblem(s); p != "" {
		n.fail("%s", p)
	}
}

func (n jsonNode) checkRepository(s string) {
	if p := repositoryProblem(s); p != "" {
		n.fail("%s", p)
	}
}

// checkPush is the last line of defence: every push a decoder returns is well formed whatever
// path produced it.
func checkPush(p functions.ImagePush) error {
	problems := []string{repositoryProblem(p.Repository)}
	if p.Tag != "" {
		problems = append(problems, tagProblem(p.Tag))
	}
	if p.Digest != "" {
		problems = append(problems, digestProblem(p.Digest))
	}
	if p.Registry != "" {
		problems = append(problems, hostProblem(p.Registry))
	}
	if p.EventID == "" {
		problems = append(problems, "missing event id")
	}
	if p.Source == "" {
		problems = append(problems, "missing source")
	}
	for _, pr := range problems {
		if pr != "" {
			return invalid(p.Source+" push", "%s", pr)
		}
	}
	return nil
}

// splitHost separates a leading registry host from a reference "host/path…"; the first
// component is a host only when it looks like one (a dot, a port or localhost), as docker
// decides.
func splitHost(ref string) (host, rest string) {
	first, rest, ok := strings.Cut(ref, "/")
	if !ok {
		return "", ref
	}
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return strings.ToLower(first), rest
	}
	return "", ref
}

// splitTagged splits "repo:tag" (the tag follows the last colon after the last slash).
func splitTagged(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || i < strings.LastIndex(ref, "/") {
		return ref, "", false
	}
	return ref[:i], ref[i+1:], true
}

// dedupeEventIDs makes the ids of pushes that came from one native event distinct, so dedupe
// by EventID never drops a sibling; stable because the order follows the body.
func dedupeEventIDs(pushes []functions.ImagePush) {
	seen := make(map[string]int, len(pushes))
	for _, p := range pushes {
		seen[p.EventID]++
	}
	nth := make(map[string]int, len(pushes))
	for i, p := range pushes {
		if seen[p.EventID] > 1 {
			nth[p.EventID]++
			pushes[i].EventID = fmt.Sprintf("%s/%d", p.EventID, nth[p.EventID])
		}
	}
}
