package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/greybox-probe/greybox/remediate"
)

// newE2EEngine is the remediator's engine as the binary builds it, leading,
// reading the test's Prometheus (cfg.Prometheus) and acting on a fake
// clientset that holds objs, with its state in a ConfigMap there too. The
// clientset's actions start empty, so a test sees only what the engine did.
func newE2EEngine(t *testing.T, cfg *remediate.Config, objs ...runtime.Object) (*remediate.Engine, *remediate.PrometheusSource, *fake.Clientset, *prometheus.Registry) {
	t.Helper()
	src, err := remediate.NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(objs...)
	cs.ClearActions()
	reg := prometheus.NewRegistry()
	engine, err := remediate.NewEngine(remediate.Options{
		Config: cfg, Source: src, Kube: cs,
		Store:   &remediate.ConfigMapStore{Client: cs, Namespace: cfg.State.Namespace, Name: cfg.State.ConfigMapName},
		Metrics: remediate.NewMetrics(reg), Identity: "e2e", Leader: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return engine, src, cs, reg
}

// hasSample returns a check of whether an expression has at least one
// sample in Prometheus now, with what it returned for the failure message.
func hasSample(ctx context.Context, src *remediate.PrometheusSource) func(expr string) (bool, string) {
	return func(expr string) (bool, string) {
		vec, warnings, err := src.Query(ctx, expr)
		if err != nil {
			return false, err.Error()
		}
		return len(vec) > 0, fmt.Sprintf("%s → %v (warnings %v)", expr, vec, warnings)
	}
}
