package kube

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Target is a probe target of the form <namespace>/<label-selector>, e.g.
// "calico-system/k8s-app=whisker".
type Target struct {
	Namespace string
	Selector  labels.Selector
}

func (t Target) String() string { return t.Namespace + "/" + t.Selector.String() }

// ParseTarget parses <namespace>/<label-selector>. The selector must not be
// empty: a probe that silently covers every pod of a namespace is almost
// always a typo.
func ParseTarget(s string) (Target, error) {
	ns, sel, ok := strings.Cut(s, "/")
	if !ok {
		return Target{}, fmt.Errorf("target %q: want <namespace>/<label-selector>, e.g. calico-system/k8s-app=whisker", s)
	}
	if err := ValidateNamespace(ns); err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	selector, err := ParseSelector(sel)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	return Target{Namespace: ns, Selector: selector}, nil
}

// ParseSelector parses a non-empty label selector (kubectl -l syntax).
func ParseSelector(s string) (labels.Selector, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty label selector (it would match every pod)")
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid label selector %q: %v", s, err)
	}
	if sel.Empty() {
		return nil, fmt.Errorf("empty label selector %q (it would match every pod)", s)
	}
	return sel, nil
}

// ValidateNamespace checks that ns is a namespace name (a DNS-1123 label).
func ValidateNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("empty namespace")
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return fmt.Errorf("invalid namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	return nil
}

// Namespaces is a module's list of the namespaces its targets may name;
// empty allows every namespace. It is checked before any API call.
type Namespaces []string

// Validate checks every entry is a valid namespace name.
func (n Namespaces) Validate() error {
	for _, ns := range n {
		if err := ValidateNamespace(ns); err != nil {
			return fmt.Errorf("namespaces: %w", err)
		}
	}
	return nil
}

// Check says why ns is not allowed, or returns nil.
func (n Namespaces) Check(ns string) error {
	if len(n) == 0 || slices.Contains(n, ns) {
		return nil
	}
	return fmt.Errorf("namespace %q is not allowed (this module's namespaces: %s)", ns, strings.Join(n, ", "))
}
