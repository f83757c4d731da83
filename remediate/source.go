package remediate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	// Ask Prometheus to give up when we do, not later.
	timeout := s.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	val, warnings, _, err := s.api.Query(ctx, expr, time.Time{}, v1.WithTimeout(serverTimeout(timeout)))
	if err != nil {
		return nil, warnings, withDetail(err)
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

// serverTimeout rounds d down to what Prometheus's timeout parameter
// accepts: the client sends time.Duration.String(), and Prometheus reads
// "1m30s" or "500ms" but not "1.5s".
func serverTimeout(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Truncate(time.Second)
	}
	return max(d.Truncate(time.Millisecond), time.Millisecond)
}

// maxDetail bounds how much of an error body reaches logs and the status page.
const maxDetail = 256

// withDetail adds what Prometheus said to an error the client reduced to
// its status code ("server error: 500"): the error field of an error
// body, or the start of any other body.
func withDetail(err error) error {
	var perr *v1.Error
	if !errors.As(err, &perr) || perr.Detail == "" {
		return err
	}
	detail := strings.TrimSpace(perr.Detail)
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(perr.Detail), &body) == nil && body.Error != "" {
		detail = body.Error
	}
	if len(detail) > maxDetail {
		detail = detail[:maxDetail] + "…"
	}
	return fmt.Errorf("%w: %q", err, detail)
}
