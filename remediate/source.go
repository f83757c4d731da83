package remediate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	pconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// Source answers instant PromQL queries. Warnings are returned separately so
// the caller can fail closed on a partial answer.
type Source interface {
	Query(ctx context.Context, expr string) (model.Vector, []string, error)
}

// PrometheusSource queries a Prometheus server's HTTP API.
type PrometheusSource struct {
	api     v1.API
	timeout time.Duration
}

// NewPrometheusSource builds a source from the config's prometheus section.
func NewPrometheusSource(cfg PrometheusConfig) (*PrometheusSource, error) {
	rt, err := pconfig.NewRoundTripperFromConfig(cfg.HTTPClientConfig, "greybox-remediator")
	if err != nil {
		return nil, fmt.Errorf("prometheus http client: %w", err)
	}
	c, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return &PrometheusSource{api: v1.NewAPI(c), timeout: time.Duration(cfg.Timeout)}, nil
}

// Query evaluates expr at Prometheus's own "now": the remediator's clock is
// not trusted to match the server's. Anything but an instant vector is an
// error.
func (s *PrometheusSource) Query(ctx context.Context, expr string) (model.Vector, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	val, warnings, _, err := s.api.Query(ctx, expr, time.Time{}, v1.WithTimeout(s.timeout))
	if err != nil {
		return nil, warnings, err
	}
	vec, ok := val.(model.Vector)
	if !ok {
		if val == nil {
			return nil, warnings, errors.New("query returned no value")
		}
		return nil, warnings, fmt.Errorf("query returned %s, want an instant vector", val.Type())
	}
	return vec, warnings, nil
}
