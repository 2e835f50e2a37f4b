package deploy

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/siskin-dev/siskin/functions"
)

// TokenReviewer verifies bearer tokens with the TokenReview API: it is how Knative Eventing's
// OIDC tokens are checked on the CloudEvents route. It runs on a client of its own, with a
// budget of its own, so that a flood of bad tokens cannot spend the API budget of the steps:
// past its budget it answers ErrRateLimited at once instead of queueing.
type TokenReviewer struct {
	kube    kubernetes.Interface
	budget  *rate.Limiter
	timeout time.Duration
}

// NewTokenReviewer reviews at most qps tokens a second (bursts of burst). kube should be a
// client built for reviews alone.
func NewTokenReviewer(kube kubernetes.Interface, qps float64, burst int, timeout time.Duration) *TokenReviewer {
	return &TokenReviewer{kube: kube, budget: rate.NewLimiter(rate.Limit(qps), max(burst, 1)), timeout: timeout}
}

// Review asks the apiserver who holds token, for the given audiences. ok is false when the
// apiserver does not authenticate it.
func (r *TokenReviewer) Review(ctx context.Context, token string, audiences []string) (functions.TokenIdentity, bool, error) {
	if !r.budget.Allow() {
		return functions.TokenIdentity{}, false, fmt.Errorf("token review: %w: more than %.0f reviews a second", functions.ErrRateLimited, float64(r.budget.Limit()))
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	tr, err := r.kube.AuthenticationV1().TokenReviews().Create(cctx, &authv1.TokenReview{
		Spec: authv1.TokenReviewSpec{Token: token, Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		return functions.TokenIdentity{}, false, fmt.Errorf("token review: %w", apiError(err, "create", "TokenReview", "", ""))
	}
	if !tr.Status.Authenticated {
		return functions.TokenIdentity{}, false, nil
	}
	return functions.TokenIdentity{User: tr.Status.User.Username, Audiences: tr.Status.Audiences}, true, nil
}
