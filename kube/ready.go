package kube

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// PodReady is the kubelet's view: phase Running and condition Ready True.
func PodReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// The workload rules below treat a workload scaled to zero as not ready: a
// dependency guard asks "is it serving?", and nothing serves with zero
// replicas, so a guard built on them fails closed.

// DeploymentReady: readyReplicas ≥ replicas and the controller has observed
// the latest spec (a rollout that has not started yet is not ready).
func DeploymentReady(d *appsv1.Deployment) (bool, string) {
	want := replicas(d.Spec.Replicas)
	return workloadReady(want, d.Status.ReadyReplicas, d.Status.ObservedGeneration, d.Generation, "replicas")
}

// StatefulSetReady uses the same rule as DeploymentReady.
func StatefulSetReady(s *appsv1.StatefulSet) (bool, string) {
	want := replicas(s.Spec.Replicas)
	return workloadReady(want, s.Status.ReadyReplicas, s.Status.ObservedGeneration, s.Generation, "replicas")
}

// DaemonSetReady: numberReady ≥ desiredNumberScheduled, latest spec observed.
func DaemonSetReady(d *appsv1.DaemonSet) (bool, string) {
	return workloadReady(d.Status.DesiredNumberScheduled, d.Status.NumberReady, d.Status.ObservedGeneration, d.Generation, "scheduled pods")
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1 // the API server's default
	}
	return *p
}

func workloadReady(want, ready int32, observed, generation int64, what string) (bool, string) {
	switch {
	case observed < generation:
		return false, fmt.Sprintf("generation %d not observed yet (observed %d)", generation, observed)
	case want <= 0:
		return false, fmt.Sprintf("0 %s wanted (scaled to zero)", what)
	case ready < want:
		return false, fmt.Sprintf("%d/%d %s ready", ready, want, what)
	}
	return true, fmt.Sprintf("%d/%d %s ready", ready, want, what)
}

// Dependency kinds.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
	KindPods        = "Pods"
)

var dependencyKinds = []string{KindDeployment, KindStatefulSet, KindDaemonSet, KindPods}

// Dependency names something whose readiness guards a decision (e.g. "only
// blame whisker if Goldmane is Ready"). A workload is named by Name, or by
// Selector (then every matching workload must be ready, and at least one
// must exist). Pods need a Selector: at least one pod matches and every
// matching pod that is not terminating is ready.
type Dependency struct {
	Kind      string `yaml:"kind"`
	Namespace string `yaml:"namespace,omitempty"`
	Name      string `yaml:"name,omitempty"`
	Selector  string `yaml:"selector,omitempty"`

	selector labels.Selector
}

// Validate checks the fields and parses the selector; call it once at load.
func (d *Dependency) Validate() error {
	found := false
	for _, k := range dependencyKinds {
		if d.Kind == k {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("dependency kind %q: want one of %s", d.Kind, strings.Join(dependencyKinds, ", "))
	}
	if d.Namespace != "" {
		if err := ValidateNamespace(d.Namespace); err != nil {
			return fmt.Errorf("dependency: %w", err)
		}
	}
	d.selector = nil
	if d.Selector != "" {
		sel, err := ParseSelector(d.Selector)
		if err != nil {
			return fmt.Errorf("dependency: %w", err)
		}
		d.selector = sel
	}
	if d.Kind == KindPods && d.selector == nil {
		return fmt.Errorf("dependency of kind Pods needs a selector")
	}
	if d.Kind != KindPods && d.selector == nil && d.Name == "" {
		return fmt.Errorf("dependency of kind %s needs a name or a selector", d.Kind)
	}
	return nil
}

// String describes the dependency for logs, e.g. "Deployment calico-system/goldmane".
func (d *Dependency) String() string {
	if d.Selector != "" {
		return fmt.Sprintf("%s %s/%s", d.Kind, d.Namespace, d.Selector)
	}
	return fmt.Sprintf("%s %s/%s", d.Kind, d.Namespace, d.Name)
}

// Ready reports whether the dependency is ready and why. An API error
// (forbidden, not reachable) is returned as err; a missing object is not an
// error but "not ready", so callers fail closed either way. Validate must
// have succeeded and Namespace must be set.
func (d *Dependency) Ready(ctx context.Context, c kubernetes.Interface) (bool, string, error) {
	if d.Namespace == "" {
		return false, "", fmt.Errorf("dependency %s: no namespace", d)
	}
	if d.Selector != "" && d.selector == nil {
		if err := d.Validate(); err != nil {
			return false, "", err
		}
	}
	if d.selector == nil {
		return d.readyByName(ctx, c)
	}
	opts := metav1.ListOptions{LabelSelector: d.selector.String()}
	var results []result
	switch d.Kind {
	case KindDeployment:
		l, err := c.AppsV1().Deployments(d.Namespace).List(ctx, opts)
		if err != nil {
			return false, "", apiError(err, "list", "deployments", d.Namespace)
		}
		for i := range l.Items {
			results = append(results, named(l.Items[i].Name)(DeploymentReady(&l.Items[i])))
		}
	case KindStatefulSet:
		l, err := c.AppsV1().StatefulSets(d.Namespace).List(ctx, opts)
		if err != nil {
			return false, "", apiError(err, "list", "statefulsets", d.Namespace)
		}
		for i := range l.Items {
			results = append(results, named(l.Items[i].Name)(StatefulSetReady(&l.Items[i])))
		}
	case KindDaemonSet:
		l, err := c.AppsV1().DaemonSets(d.Namespace).List(ctx, opts)
		if err != nil {
			return false, "", apiError(err, "list", "daemonsets", d.Namespace)
		}
		for i := range l.Items {
			results = append(results, named(l.Items[i].Name)(DaemonSetReady(&l.Items[i])))
		}
	case KindPods:
		l, err := c.CoreV1().Pods(d.Namespace).List(ctx, opts)
		if err != nil {
			return false, "", apiError(err, "list", "pods", d.Namespace)
		}
		for i := range l.Items {
			p := &l.Items[i]
			if p.DeletionTimestamp != nil {
				continue // on its way out; its replacement is what counts
			}
			ok := PodReady(p)
			reason := "ready"
			if !ok {
				reason = fmt.Sprintf("not ready (phase %s)", p.Status.Phase)
			}
			results = append(results, result{p.Name, ok, reason})
		}
	}
	return summarize(results, d.Kind)
}

func (d *Dependency) readyByName(ctx context.Context, c kubernetes.Interface) (bool, string, error) {
	var (
		ok     bool
		reason string
		err    error
	)
	switch d.Kind {
	case KindDeployment:
		var o *appsv1.Deployment
		if o, err = c.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{}); err == nil {
			ok, reason = DeploymentReady(o)
		}
		err = apiError(err, "get", "deployments", d.Namespace)
	case KindStatefulSet:
		var o *appsv1.StatefulSet
		if o, err = c.AppsV1().StatefulSets(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{}); err == nil {
			ok, reason = StatefulSetReady(o)
		}
		err = apiError(err, "get", "statefulsets", d.Namespace)
	case KindDaemonSet:
		var o *appsv1.DaemonSet
		if o, err = c.AppsV1().DaemonSets(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{}); err == nil {
			ok, reason = DaemonSetReady(o)
		}
		err = apiError(err, "get", "daemonsets", d.Namespace)
	case KindPods:
		var o *corev1.Pod
		if o, err = c.CoreV1().Pods(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{}); err == nil {
			ok = PodReady(o)
			reason = fmt.Sprintf("phase %s, ready %t", o.Status.Phase, ok)
		}
		err = apiError(err, "get", "pods", d.Namespace)
	}
	if IsNotFound(err) {
		return false, fmt.Sprintf("%s %s/%s not found", d.Kind, d.Namespace, d.Name), nil
	}
	if err != nil {
		return false, "", err
	}
	return ok, reason, nil
}

type result struct {
	name   string
	ready  bool
	reason string
}

func named(name string) func(bool, string) result {
	return func(ok bool, reason string) result { return result{name, ok, reason} }
}

func summarize(rs []result, kind string) (bool, string, error) {
	if len(rs) == 0 {
		return false, "no " + kind + " matches the selector", nil
	}
	var bad []string
	for _, r := range rs {
		if !r.ready {
			bad = append(bad, r.name+": "+r.reason)
		}
	}
	if len(bad) > 0 {
		return false, fmt.Sprintf("%d/%d not ready (%s)", len(bad), len(rs), strings.Join(bad, "; ")), nil
	}
	return true, fmt.Sprintf("%d/%d ready", len(rs), len(rs)), nil
}
