// Package knative holds Siskin's install manifests (the kustomize bundle of this directory), so
// that the lab and tests install exactly the files an operator applies.
package knative

import (
	"embed"
	"io/fs"
)

//go:embed core/crds/*.yaml core/rbac.yaml core/service.yaml core/eventing.yaml redis/redis.yaml
var embedded embed.FS

// Manifests holds the CRDs (crds/*.yaml), rbac.yaml, service.yaml and eventing.yaml of core/.
var Manifests = mustSub(embedded, "core")

// Redis holds redis.yaml, the bundled Redis.
var Redis = mustSub(embedded, "redis")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embed directive above guarantees the directory
	}
	return sub
}
