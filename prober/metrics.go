package prober

import "github.com/prometheus/client_golang/prometheus"

// gauge registers a plain gauge on reg.
func gauge(reg *prometheus.Registry, name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	reg.MustRegister(g)
	return g
}

// boolValue is the 1/0 a yes-or-no gauge reports.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
