package remediate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Results of an action attempt, the "result" label of
// greybox_remediator_actions_total. Skips are "skipped_<reason>".
const (
	ResultSuccess   = "success"
	ResultDryRun    = "dry_run"
	ResultBlocked   = "blocked"   // eviction refused by a PodDisruptionBudget (429); retried next interval
	ResultConflict  = "conflict"  // UID precondition failed: the pod was replaced under the same name
	ResultForbidden = "forbidden" // RBAC does not allow the action
	ResultError     = "error"
)

// Skip reasons: why a firing candidate was not acted on.
const (
	SkipQueryError       = "query_error"
	SkipMissingLabels    = "missing_labels"
	SkipInvalidValue     = "invalid_value" // NaN or ±Inf: not a measurement
	SkipStaleSample      = "stale_sample"  // older than max_sample_age
	SkipGuardError       = "guard_error"
	SkipGuardFailed      = "guard_failed"
	SkipNamespace        = "namespace_not_allowed"
	SkipNotLeader        = "not_leader"
	SkipStateError       = "state_error"
	SkipCooldown         = "cooldown"
	SkipRuleBudget       = "rule_budget"
	SkipStormGuard       = "storm_guard"
	SkipPodGone          = "pod_gone"
	SkipPodTerminating   = "pod_terminating"
	SkipSelectorMismatch = "selector_mismatch"
	SkipAlreadyReplaced  = "already_replaced"
	SkipKubeError        = "kube_error"
	SkipNoOwner          = "no_owner"
)

// restartedAtAnnotation is what `kubectl rollout restart` sets.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// objectRef names the object an action touched, for records and events.
type objectRef struct {
	Kind, APIVersion, Namespace, Name string
	UID                               types.UID
}

func (o objectRef) String() string {
	return strings.ToLower(o.Kind) + "/" + o.Namespace + "/" + o.Name
}

func podRef(p *corev1.Pod) objectRef {
	return objectRef{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}

// evictPod asks for an eviction, which honours PodDisruptionBudgets. The UID
// precondition makes a pod replaced under the same name (StatefulSet) safe.
func evictPod(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) error {
	uid := pod.UID
	return cs.PolicyV1().Evictions(pod.Namespace).Evict(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}},
	})
}

// deletePod deletes the exact pod observed (UID precondition). Plain delete
// bypasses PodDisruptionBudgets; rules that need them use evict_pod.
func deletePod(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) error {
	uid := pod.UID
	return cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid},
	})
}

var errNoOwner = errors.New("no owning Deployment, StatefulSet or DaemonSet")

// resolveOwner walks the pod's controller reference to the workload a
// rollout restart patches: ReplicaSet → Deployment, StatefulSet, DaemonSet.
func resolveOwner(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod) (objectRef, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return objectRef{}, errNoOwner
	}
	switch ref.Kind {
	case "StatefulSet", "DaemonSet":
		return objectRef{Kind: ref.Kind, APIVersion: ref.APIVersion, Namespace: pod.Namespace, Name: ref.Name, UID: ref.UID}, nil
	case "ReplicaSet":
		rs, err := cs.AppsV1().ReplicaSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return objectRef{}, fmt.Errorf("replicaset %s: %w", ref.Name, err)
		}
		if rs.UID != ref.UID {
			return objectRef{}, fmt.Errorf("replicaset %s was replaced", ref.Name)
		}
		d := metav1.GetControllerOf(rs)
		if d == nil || d.Kind != "Deployment" {
			return objectRef{}, fmt.Errorf("replicaset %s: %w", ref.Name, errNoOwner)
		}
		return objectRef{Kind: "Deployment", APIVersion: d.APIVersion, Namespace: pod.Namespace, Name: d.Name, UID: d.UID}, nil
	}
	return objectRef{}, fmt.Errorf("controller %s %s: %w", ref.Kind, ref.Name, errNoOwner)
}

// rolloutRestart does what `kubectl rollout restart` does: bump a template
// annotation so the controller replaces pods under its own rollout rules.
// The patch carries the workload's UID observed through the owner chain: a
// workload deleted and recreated under the same name has another UID, and
// the apiserver refuses a patch that would change metadata.uid.
func rolloutRestart(ctx context.Context, cs kubernetes.Interface, w objectRef, now time.Time) error {
	patch := fmt.Appendf(nil,
		`{"metadata":{"uid":%q},"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`,
		w.UID, restartedAtAnnotation, now.UTC().Format(time.RFC3339))
	opts := metav1.PatchOptions{FieldManager: "greybox-remediator"}
	var err error
	switch w.Kind {
	case "Deployment":
		_, err = cs.AppsV1().Deployments(w.Namespace).Patch(ctx, w.Name, types.StrategicMergePatchType, patch, opts)
	case "StatefulSet":
		_, err = cs.AppsV1().StatefulSets(w.Namespace).Patch(ctx, w.Name, types.StrategicMergePatchType, patch, opts)
	case "DaemonSet":
		_, err = cs.AppsV1().DaemonSets(w.Namespace).Patch(ctx, w.Name, types.StrategicMergePatchType, patch, opts)
	default:
		err = fmt.Errorf("cannot restart a %s", w.Kind)
	}
	return err
}

// refused reports whether err is the API server's definite refusal (a 4xx
// status: PDB, UID precondition, RBAC, not found, invalid), after which the
// action certainly did not happen. A timeout, a dropped connection or a 5xx
// leaves the outcome unknown.
func refused(err error) bool {
	var st apierrors.APIStatus
	if err == nil || !errors.As(err, &st) {
		return false
	}
	code := st.Status().Code
	return code >= 400 && code < 500 && code != 408
}

// classify maps an API error to an action result.
func classify(err error) string {
	switch {
	case err == nil:
		return ResultSuccess
	case apierrors.IsTooManyRequests(err):
		return ResultBlocked
	case apierrors.IsConflict(err):
		return ResultConflict
	case apierrors.IsForbidden(err):
		return ResultForbidden
	case apierrors.IsNotFound(err):
		return "skipped_" + SkipPodGone
	}
	return ResultError
}
