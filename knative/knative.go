// Package knative holds Siskin's install manifests (the kustomize bundle of this directory), so
// that the lab and tests install exactly the files an operator applies.
package knative

import "embed"

// Manifests holds the CRDs (crds/*.yaml) and rbac.yaml.
//
//go:embed crds/*.yaml rbac.yaml
var Manifests embed.FS
