package kube

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// APIError is a failed API call with the verb and resource that failed, so
// a log line can say which RBAC rule is missing.
type APIError struct {
	Verb, Resource, Namespace string
	Err                       error
}

func (e *APIError) Error() string {
	if apierrors.IsForbidden(e.Err) {
		return fmt.Sprintf("forbidden: RBAC does not allow %q on %q in namespace %q (grant it to greybox's ServiceAccount): %v",
			e.Verb, e.Resource, e.Namespace, e.Err)
	}
	return fmt.Sprintf("%s %s in namespace %q: %v", e.Verb, e.Resource, e.Namespace, e.Err)
}

func (e *APIError) Unwrap() error { return e.Err }

func apiError(err error, verb, resource, ns string) error {
	if err == nil {
		return nil
	}
	return &APIError{Verb: verb, Resource: resource, Namespace: ns, Err: err}
}

// IsNotFound unwraps err and reports a 404 from the API server.
func IsNotFound(err error) bool {
	return err != nil && apierrors.IsNotFound(err)
}

// WrapAPIError is apiError for other packages: it names verb and resource.
func WrapAPIError(err error, verb, resource, ns string) error {
	return apiError(err, verb, resource, ns)
}
