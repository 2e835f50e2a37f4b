package functions

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DefaultProvider is the router of a Canary without spec.provider, as in Flagger with Istio.
const DefaultProvider = "istio"

// Routers is the registry of traffic providers, keyed by the spec.provider value that selects
// each ("istio", "gatewayapi:v1", ...). A Canary whose provider is not registered is an
// invalid spec.
type Routers map[string]Router

// For returns the router of provider ("" is DefaultProvider).
func (rs Routers) For(provider string) (Router, bool) {
	if provider == "" {
		provider = DefaultProvider
	}
	r, ok := rs[provider]
	return r, ok
}

// Providers lists the registered spec.provider values, sorted.
func (rs Routers) Providers() []string {
	return slices.Sorted(maps.Keys(rs))
}

// validate is the registry's part of Validate: a known provider, and that router's own rules.
func (rs Routers) validate(c Canary) []string {
	r, ok := rs.For(c.Spec.Provider)
	if !ok {
		return []string{fmt.Sprintf("spec.provider %s is not supported: this Siskin routes with %s",
			c.Spec.Provider, strings.Join(rs.Providers(), ", "))}
	}
	if v, ok := r.(RouteValidator); ok {
		return v.ValidateRoutes(c)
	}
	return nil
}

// routerOf is the canary's router. A canary with an unknown provider is reported invalid
// before any routing; the stand-in refuses the calls that would slip past that.
func (s *Service) routerOf(c Canary) Router {
	if r, ok := s.d.Routers.For(c.Spec.Provider); ok {
		return r
	}
	return unknownRouter{provider: c.Spec.Provider}
}

type unknownRouter struct{ provider string }

func (u unknownRouter) err() error {
	return fmt.Errorf("%w: spec.provider %s has no router", ErrInvalid, u.provider)
}

func (u unknownRouter) ApplyRoutes(context.Context, Canary, RoutePlan) error { return u.err() }
func (u unknownRouter) ObserveRoutes(context.Context, Canary) (Routing, bool, error) {
	return Routing{}, false, u.err()
}
func (u unknownRouter) Finalize(context.Context, Canary) error { return u.err() }
