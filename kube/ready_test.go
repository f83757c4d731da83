package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func ptr[T any](v T) *T { return &v }

func pod(name string, phase corev1.PodPhase, ready corev1.ConditionStatus, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: labels},
		Status: corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: ready},
		}},
	}
}

func TestPodReady(t *testing.T) {
	for _, tc := range []struct {
		p    *corev1.Pod
		want bool
	}{
		{pod("a", corev1.PodRunning, corev1.ConditionTrue, nil), true},
		{pod("a", corev1.PodRunning, corev1.ConditionFalse, nil), false},
		{pod("a", corev1.PodSucceeded, corev1.ConditionTrue, nil), false},
		{&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, false},
	} {
		if got := PodReady(tc.p); got != tc.want {
			t.Errorf("%+v: got %v", tc.p.Status, got)
		}
	}
}

func TestWorkloadReady(t *testing.T) {
	dep := func(replicas *int32, ready int32, gen, observed int64) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: replicas},
			Status:     appsv1.DeploymentStatus{ReadyReplicas: ready, ObservedGeneration: observed},
		}
	}
	for _, tc := range []struct {
		name   string
		d      *appsv1.Deployment
		want   bool
		reason string
	}{
		{"ready", dep(ptr[int32](2), 2, 3, 3), true, "2/2 replicas ready"},
		{"more ready than wanted (scale down)", dep(ptr[int32](1), 2, 3, 3), true, ""},
		{"one short", dep(ptr[int32](2), 1, 3, 3), false, "1/2 replicas ready"},
		{"new spec not observed", dep(ptr[int32](2), 2, 4, 3), false, "generation 4 not observed"},
		{"nil replicas means 1", dep(nil, 1, 1, 1), true, "1/1"},
		{"scaled to zero", dep(ptr[int32](0), 0, 1, 1), false, "scaled to zero"},
	} {
		got, reason := DeploymentReady(tc.d)
		if got != tc.want || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: got %v %q", tc.name, got, reason)
		}
	}
	sts := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: ptr[int32](3)}, Status: appsv1.StatefulSetStatus{ReadyReplicas: 2}}
	if ok, _ := StatefulSetReady(sts); ok {
		t.Error("statefulset 2/3 ready")
	}
	ds := &appsv1.DaemonSet{Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: 3}}
	if ok, reason := DaemonSetReady(ds); !ok {
		t.Errorf("daemonset 3/3: %s", reason)
	}
	ds.Status.NumberReady = 2
	if ok, _ := DaemonSetReady(ds); ok {
		t.Error("daemonset 2/3 ready")
	}
}

func TestDependencyValidate(t *testing.T) {
	for _, tc := range []struct {
		d    Dependency
		want string
	}{
		{Dependency{Kind: "Deployment", Name: "goldmane"}, ""},
		{Dependency{Kind: "Pods", Selector: "app=x"}, ""},
		{Dependency{Kind: "Deploy", Name: "x"}, "want one of"},
		{Dependency{Kind: "Pods", Name: "x"}, "needs a selector"},
		{Dependency{Kind: "StatefulSet"}, "needs a name or a selector"},
		{Dependency{Kind: "DaemonSet", Selector: "a in ("}, "invalid label selector"},
		{Dependency{Kind: "DaemonSet", Name: "x", Namespace: "Bad"}, "invalid namespace"},
	} {
		err := tc.d.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: got %v, want %q", tc.d, err, tc.want)
		}
	}
}

func TestDependencyReady(t *testing.T) {
	one := ptr[int32](1)
	objs := []runtime.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "goldmane", Namespace: "ns", Labels: map[string]string{"app": "g"}},
			Spec: appsv1.DeploymentSpec{Replicas: one}, Status: appsv1.DeploymentStatus{ReadyReplicas: 1}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "down", Namespace: "ns", Labels: map[string]string{"app": "d"}},
			Spec: appsv1.DeploymentSpec{Replicas: one}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"},
			Spec: appsv1.StatefulSetSpec{Replicas: one}, Status: appsv1.StatefulSetStatus{ReadyReplicas: 1}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "node", Namespace: "ns"},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, NumberReady: 1}},
		pod("w-1", corev1.PodRunning, corev1.ConditionTrue, map[string]string{"app": "w"}),
		pod("w-2", corev1.PodRunning, corev1.ConditionTrue, map[string]string{"app": "w"}),
		pod("v-1", corev1.PodRunning, corev1.ConditionTrue, map[string]string{"app": "v"}),
		pod("v-2", corev1.PodPending, corev1.ConditionFalse, map[string]string{"app": "v"}),
		func() *corev1.Pod {
			p := pod("t-old", corev1.PodRunning, corev1.ConditionFalse, map[string]string{"app": "t"})
			p.DeletionTimestamp = ptr(metav1.NewTime(time.Now()))
			p.Finalizers = []string{"test"}
			return p
		}(),
		pod("t-new", corev1.PodRunning, corev1.ConditionTrue, map[string]string{"app": "t"}),
	}
	c := fake.NewClientset(objs...)
	for _, tc := range []struct {
		d      Dependency
		want   bool
		reason string
	}{
		{Dependency{Kind: KindDeployment, Namespace: "ns", Name: "goldmane"}, true, "1/1 replicas ready"},
		{Dependency{Kind: KindDeployment, Namespace: "ns", Name: "down"}, false, "0/1 replicas ready"},
		{Dependency{Kind: KindDeployment, Namespace: "ns", Name: "missing"}, false, "not found"},
		{Dependency{Kind: KindDeployment, Namespace: "ns", Selector: "app=g"}, true, "1/1 ready"},
		{Dependency{Kind: KindDeployment, Namespace: "ns", Selector: "app in (g,d)"}, false, "down: 0/1"},
		{Dependency{Kind: KindDeployment, Namespace: "ns", Selector: "app=none"}, false, "no Deployment matches"},
		{Dependency{Kind: KindStatefulSet, Namespace: "ns", Name: "db"}, true, ""},
		{Dependency{Kind: KindDaemonSet, Namespace: "ns", Name: "node"}, false, "1/2 scheduled pods ready"},
		{Dependency{Kind: KindPods, Namespace: "ns", Selector: "app=w"}, true, "2/2 ready"},
		{Dependency{Kind: KindPods, Namespace: "ns", Selector: "app=v"}, false, "v-2: not ready (phase Pending)"},
		{Dependency{Kind: KindPods, Namespace: "ns", Selector: "app=t"}, true, "1/1 ready"},
		{Dependency{Kind: KindPods, Namespace: "ns", Selector: "app=none"}, false, "no Pods matches"},
	} {
		if err := tc.d.Validate(); err != nil {
			t.Fatal(err)
		}
		got, reason, err := tc.d.Ready(context.Background(), c)
		if err != nil || got != tc.want || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: got %v %q %v, want %v %q", &tc.d, got, reason, err, tc.want, tc.reason)
		}
	}

	c.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "goldmane", errors.New("no"))
	})
	d := Dependency{Kind: KindDeployment, Namespace: "ns", Name: "goldmane"}
	_, _, err := d.Ready(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), `RBAC does not allow "get" on "deployments" in namespace "ns"`) {
		t.Errorf("forbidden: %v", err)
	}
	if _, _, err := (&Dependency{Kind: KindDeployment, Name: "x"}).Ready(context.Background(), c); err == nil {
		t.Error("no namespace: want error")
	}
}
