package handlers

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

var (
	awsAccountRE = regexp.MustCompile(`^[0-9]{12}$`)
	awsRegionRE  = regexp.MustCompile(`^[a-z]{2}(?:-[a-z]+)+-[0-9]+$`)
)

// decodeECR reads an EventBridge event. Only a successful ECR push with a tag counts; other
// EventBridge events (scans, deletes, failures, other services) are acknowledged.
func decodeECR(_ http.Header, root jsonNode, _ []byte) []functions.ImagePush {
	if root.get("detail-type").str() != "ECR Image Action" {
		return nil
	}
	detail := root.get("detail").object()
	if detail.get("action-type").str() != "PUSH" || detail.get("result").str() != "SUCCESS" {
		return nil
	}
	tag := detail.get("image-tag").str()
	if tag == "" {
		return nil
	}
	detail.get("image-tag").checkTag(tag)
	account, region := root.get("account").requiredStr(), root.get("region").requiredStr()
	if account != "" && !awsAccountRE.MatchString(account) {
		root.get("account").fail("%s is not a 12-digit AWS account id", quote(account))
	}
	if region != "" && !awsRegionRE.MatchString(region) {
		root.get("region").fail("%s is not an AWS region", quote(region))
	}
	// The event does not name the registry host; it is the account's private registry.
	host := account + ".dkr.ecr." + region + ".amazonaws.com"
	if strings.HasPrefix(region, "cn-") {
		host += ".cn"
	}
	return []functions.ImagePush{{
		EventID:    "ecr:" + root.get("id").requiredStr(),
		Source:     "ecr",
		Registry:   host,
		Repository: detail.get("repository-name").repository(),
		Tag:        tag,
		Digest:     detail.get("image-digest").optionalDigest(),
		MediaType:  detail.get("manifest-media-type").str(),
		PushedAt:   root.get("time").time(),
	}}
}
