package functions

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// dockerHub is Docker Hub's registry as go-containerregistry (and so the registry adapter)
// names it; distribution's grammar says docker.io.
const dockerHub = "index.docker.io"

// ParseImageRef is the one parser of image references, on distribution/reference's grammar
// (the one registries and the kubelet use): Docker Hub's host and library/ prefix are filled
// in, the registry host is lowercased, a tag is kept beside a digest, and a reference with
// neither gets Docker's default tag, latest. Anything else is ErrInvalid.
func ParseImageRef(s string) (ImageRef, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return ImageRef{}, fmt.Errorf("%w: image reference %q: %v", ErrInvalid, s, err)
	}
	named = reference.TagNameOnly(named)
	out := ImageRef{Registry: strings.ToLower(reference.Domain(named)), Repository: reference.Path(named)}
	if out.Registry == "docker.io" {
		out.Registry = dockerHub
	}
	if t, ok := named.(reference.Tagged); ok {
		out.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		out.Digest = d.Digest().String()
	}
	return out, nil
}

// ImageHost is the registry host a full reference starts with ("quay.io/ns/app:1" → quay.io);
// false when the reference names no host of its own.
func ImageHost(s string) (string, bool) {
	named, err := reference.ParseNamed(s)
	if err != nil {
		return "", false
	}
	return strings.ToLower(reference.Domain(named)), true
}

// The component checks, for decoders that get a reference in parts, in the same grammar.
var (
	anchoredTag    = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
	anchoredDomain = regexp.MustCompile(`^` + reference.DomainRegexp.String() + `$`)
)

// ValidRepository: a repository path without a host, such as acme/app or nginx.
func ValidRepository(s string) bool {
	named, err := reference.ParseNormalizedNamed(s)
	return err == nil && reference.Domain(named) == "docker.io" && reference.IsNameOnly(named) &&
		(reference.Path(named) == s || reference.Path(named) == "library/"+s)
}

// ValidTag: a tag, up to 128 word characters, dots and dashes.
func ValidTag(s string) bool { return anchoredTag.MatchString(s) }

// ValidDigest: a digest a registry can be asked about (sha256, sha384, sha512).
func ValidDigest(s string) bool {
	d, err := digest.Parse(s)
	return err == nil && (d.Algorithm() == digest.SHA256 || d.Algorithm() == digest.SHA384 || d.Algorithm() == digest.SHA512)
}

// ValidHost: a registry host[:port].
func ValidHost(s string) bool { return len(s) <= 253 && anchoredDomain.MatchString(s) }
