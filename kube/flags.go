package kube

import "github.com/alecthomas/kingpin/v2"

// AddFlags registers the shared Kubernetes client flags on app.
func AddFlags(app *kingpin.Application, userAgent string) *Options {
	o := &Options{UserAgent: userAgent}
	app.Flag("kubeconfig", "Path to a kubeconfig file. Empty: $KUBECONFIG, then in-cluster config.").Default("").StringVar(&o.Kubeconfig)
	app.Flag("kube.qps", "Kubernetes API client queries per second.").Default("20").Float32Var(&o.QPS)
	app.Flag("kube.burst", "Kubernetes API client burst.").Default("40").IntVar(&o.Burst)
	return o
}
