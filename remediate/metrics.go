package remediate

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the remediator's own series (README, "Running the remediator").
type Metrics struct {
	actions        *prometheus.CounterVec
	pending        *prometheus.GaugeVec
	queryErrors    *prometheus.CounterVec
	lastAction     *prometheus.GaugeVec
	isLeader       prometheus.Gauge
	evaluations    *prometheus.CounterVec
	lastEvaluation prometheus.Gauge
}

// NewMetrics registers the remediator metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greybox_remediator_actions_total",
			Help: "Action attempts by rule, action and result (success, dry_run, blocked, conflict, forbidden, error, skipped_<reason>).",
		}, []string{"rule", "action", "result"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "greybox_remediator_candidates_pending",
			Help: "Candidates currently returned by the rule's expression (pending or firing).",
		}, []string{"rule"}),
		queryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greybox_remediator_query_errors_total",
			Help: "Failed rule or guard queries (errors, non-vector results, warnings without data).",
		}, []string{"rule"}),
		lastAction: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "greybox_remediator_last_action_timestamp_seconds",
			Help: "Unix time of the rule's last successful (or dry-run) action.",
		}, []string{"rule"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "greybox_remediator_is_leader",
			Help: "1 when this instance holds the leader Lease (or runs without leader election).",
		}),
		evaluations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greybox_remediator_evaluations_total",
			Help: "Rule evaluations.",
		}, []string{"rule"}),
		lastEvaluation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "greybox_remediator_last_evaluation_timestamp_seconds",
			Help: "Unix time the last evaluation round finished.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.actions, m.pending, m.queryErrors, m.lastAction, m.isLeader, m.evaluations, m.lastEvaluation)
	}
	return m
}
