// Package access asks kube-apiserver what the sidecar's own RBAC allows, with
// a SelfSubjectAccessReview (which Kubernetes lets every authenticated user
// create: ClusterRole system:basic-user). A feature whose rule is missing then
// degrades once, saying which rule to add, instead of failing on every call
// or filling the log with an informer's retries. That is what upstream
// external-provisioner does for a missing verb, and what users who keep
// upstream's ClusterRole after swapping the image rely on.
package access

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Rule is one RBAC rule: verbs on a resource of an API group ("" = core), in
// Namespace ("" = cluster-wide or every namespace).
type Rule struct {
	Group, Resource string
	Verbs           []string
	Namespace       string
}

// String renders the rule as it is written in a ClusterRole, for messages.
func (r Rule) String() string {
	return fmt.Sprintf(`apiGroups: [%q], resources: [%q], verbs: ["%s"]`, r.Group, r.Resource, strings.Join(r.Verbs, `", "`))
}

// Checker answers whether a rule is granted.
type Checker interface {
	// Allowed returns the verbs of r that are not granted (none: allowed).
	// err is set when kube-apiserver could not answer; callers then keep the
	// behaviour they would have with the rule (the error shows up where the
	// rule is used).
	Allowed(ctx context.Context, r Rule) (missing []string, err error)
}

// Reviewer is the Checker backed by SelfSubjectAccessReviews, one per verb.
type Reviewer struct {
	Client kubernetes.Interface
}

// Allowed implements Checker.
func (rv Reviewer) Allowed(ctx context.Context, r Rule) ([]string, error) {
	var missing []string
	for _, verb := range r.Verbs {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group: r.Group, Resource: r.Resource, Verb: verb, Namespace: r.Namespace,
			},
		}}
		got, err := rv.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("asking kube-apiserver whether %s is allowed: %w", r, err)
		}
		if !got.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	return missing, nil
}

// Static is a Checker for tests: verbs listed in Denied[resource] are missing.
type Static struct {
	Denied map[string][]string
	Err    error
}

// Allowed implements Checker.
func (s Static) Allowed(_ context.Context, r Rule) ([]string, error) {
	if s.Err != nil {
		return nil, s.Err
	}
	var missing []string
	for _, v := range r.Verbs {
		for _, d := range s.Denied[r.Resource] {
			if d == v {
				missing = append(missing, v)
			}
		}
	}
	return missing, nil
}
