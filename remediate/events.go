package remediate

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Event reasons. They are stable: users filter on them
// (kubectl get events --field-selector reason=GreyboxEvicted).
const (
	ReasonEvicted          = "GreyboxEvicted"
	ReasonDeleted          = "GreyboxDeleted"
	ReasonRolloutRestarted = "GreyboxRolloutRestarted"
	ReasonBlocked          = "GreyboxBlocked"
	ReasonFailed           = "GreyboxActionFailed"
)

const eventComponent = "greybox-remediator"

// eventRecorder writes core/v1 Events synchronously: an action is rare, and
// the audit entry should exist before the next evaluation, not whenever an
// asynchronous broadcaster gets to it. Failures are logged, never fatal.
type eventRecorder struct {
	client   kubernetes.Interface
	instance string
	logger   *slog.Logger
}

func (r *eventRecorder) record(ctx context.Context, obj objectRef, eventType, reason, msg string, now time.Time) {
	if r == nil || r.client == nil {
		return
	}
	t := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", obj.Name, now.UnixNano()),
			Namespace: obj.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind: obj.Kind, APIVersion: obj.APIVersion, Namespace: obj.Namespace, Name: obj.Name, UID: obj.UID,
		},
		Reason:              reason,
		Message:             msg,
		Type:                eventType,
		Source:              corev1.EventSource{Component: eventComponent},
		FirstTimestamp:      t,
		LastTimestamp:       t,
		Count:               1,
		ReportingController: "greybox.io/remediator",
		ReportingInstance:   r.instance,
		Action:              reason,
	}
	if _, err := r.client.CoreV1().Events(obj.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		r.logger.Warn("could not record event", "object", obj.String(), "reason", reason, "err", err)
	}
}
