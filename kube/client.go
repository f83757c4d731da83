// Package kube is the Kubernetes access shared by the probe server and the
// remediator: a client from kubeconfig or in-cluster config, selectors and
// readiness rules.
package kube

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options configures the client; both binaries expose them as flags.
type Options struct {
	// Kubeconfig is a path; empty means $KUBECONFIG, then in-cluster config.
	Kubeconfig string
	QPS        float32
	Burst      int
	UserAgent  string
}

// ErrNotConfigured means neither a kubeconfig nor an in-cluster
// environment was found; callers run without Kubernetes.
var ErrNotConfigured = errors.New("no Kubernetes configuration: set --kubeconfig or KUBECONFIG, or run in a cluster")

// RESTConfig resolves the client configuration: --kubeconfig, then
// $KUBECONFIG, then the in-cluster service account. ~/.kube/config is
// deliberately not a fallback, unlike kubectl: a binary that can delete
// pods must be pointed at a cluster, never find one in a home directory. Log streams are bounded
// by their request contexts, so no client-wide Timeout is set.
func RESTConfig(o Options) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch path := firstNonEmpty(o.Kubeconfig, os.Getenv("KUBECONFIG")); {
	case path != "":
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
		if o.Kubeconfig == "" {
			rules = clientcmd.NewDefaultClientConfigLoadingRules()
		}
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
	default:
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, ErrNotConfigured
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	if o.QPS > 0 {
		cfg.QPS = o.QPS
	}
	if o.Burst > 0 {
		cfg.Burst = o.Burst
	}
	if o.UserAgent != "" {
		cfg.UserAgent = o.UserAgent
	}
	return cfg, nil
}

// NewClientset returns a clientset and its REST config.
func NewClientset(o Options) (kubernetes.Interface, *rest.Config, error) {
	cfg, err := RESTConfig(o)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cs, cfg, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
