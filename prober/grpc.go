package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	pconfig "github.com/prometheus/common/config"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/greybox-probe/greybox/config"
)

// GRPCSettings is the `grpc:` section of a module, blackbox_exporter's
// grpc_probe key for key: the standard health check (grpc.health.v1).
type GRPCSettings struct {
	Service    string `yaml:"service,omitempty"`
	IPProtocol `yaml:",inline"`
	Metadata   GRPCMetadata      `yaml:"metadata,omitempty"`
	TLS        bool              `yaml:"tls,omitempty"`
	TLSConfig  pconfig.TLSConfig `yaml:"tls_config,omitempty"`
	TLSFiles   `yaml:"-"`
	outgoingMD metadata.MD
}

// GRPCMetadata is sent with the health check. Values often carry
// credentials (an API key, a bearer token), so printed configs show
// them as <secret>.
type GRPCMetadata map[string][]string

func (m GRPCMetadata) MarshalYAML() (any, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[string][]string, len(m))
	for k, vs := range m {
		red := make([]string, len(vs))
		for i := range vs {
			red[i] = "<secret>"
		}
		out[k] = red
	}
	return out, nil
}

func (s *GRPCSettings) Validate() error {
	if err := s.IPProtocol.validate(); err != nil {
		return err
	}
	s.outgoingMD = metadata.MD{}
	for k, vs := range s.Metadata {
		// gRPC sends metadata as HTTP/2 headers, which must be lower
		// case; blackbox passes the key as written and the call fails.
		lk := strings.ToLower(k)
		if !httpguts.ValidHeaderFieldName(lk) || strings.HasPrefix(lk, "grpc-") || strings.HasPrefix(lk, ":") {
			return fmt.Errorf("metadata: %q is not a key gRPC can send (header name characters, no grpc- prefix)", k)
		}
		for _, v := range vs {
			if !strings.HasSuffix(lk, "-bin") && !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("metadata: the value of %q has characters a header cannot carry", k)
			}
		}
		s.outgoingMD[lk] = append(s.outgoingMD[lk], vs...)
	}
	return s.TLSFiles.set(s.TLSConfig)
}

func init() {
	Register("grpc", Spec{
		Settings: func() config.Settings { return &GRPCSettings{IPProtocol: defaultIPProtocol()} },
		Probe:    probeGRPC,
		CheckTarget: func(ctx context.Context, target string, m config.Module, g *Guard) error {
			host, _, err := grpcTarget(target, false)
			if err != nil {
				return err
			}
			return checkHost(ctx, m, g, host)
		},
	})
}

// grpcTarget takes blackbox's forms: host:port, or an http(s) URL whose
// host and port are used. Without a port: 80, or 443 with tls (as in
// blackbox; the URL's scheme does not turn TLS on).
func grpcTarget(target string, useTLS bool) (host, port string, err error) {
	raw := target
	if !strings.HasPrefix(raw, "http://") && !strings.HasPrefix(raw, "https://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || badHost(u.Hostname()) || u.User != nil {
		return "", "", &TargetError{Reason: fmt.Sprintf("target %q must be host:port or an http(s) URL with a host", oneLine(target))}
	}
	host, port = u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if useTLS {
			port = "443"
		}
	} else if err := checkPort(port); err != nil {
		return "", "", &TargetError{Reason: fmt.Sprintf("target %q: %v", oneLine(target), err)}
	}
	return host, port, nil
}

func probeGRPC(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*GRPCSettings)
	phases := newGaugeVec("probe_grpc_duration_seconds", "Duration of the gRPC health check by phase, in seconds.", "phase")
	reg.MustRegister(phases)
	phases.WithLabelValues("resolve")
	isSSL := gauge(reg, "probe_grpc_ssl", "1 if the connection used TLS.")
	statusCode := gauge(reg, "probe_grpc_status_code", "gRPC status code of the health check (0 = OK).")
	serving := newGaugeVec("probe_grpc_healthcheck_response", "The health check's serving status: 1 for the one answered.", "serving_status")
	reg.MustRegister(serving)
	for name := range healthpb.HealthCheckResponse_ServingStatus_value {
		serving.WithLabelValues(name)
	}

	host, port, err := grpcTarget(target, s.TLS)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	addr, ok := resolveTarget(ctx, env.Guard, host, s.IPProtocol, reg, logger, phases, "target")
	if !ok {
		return false
	}
	// The chosen address is what is dialled, through the guard; the
	// authority stays the target's (with TLS, the server name's, which
	// grpc-go takes from the credentials), as a proxy in front routes by it.
	dialed := net.JoinHostPort(addr.String(), port)
	opts := []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return env.Guard.DialContext(ctx, "tcp", a)
		}),
		grpc.WithUserAgent(UserAgent),
		grpc.WithDisableServiceConfig(),
		grpc.WithDisableRetry(),
	}
	if !s.TLS {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(net.JoinHostPort(host, port)))
	} else {
		cfg, err := s.tlsConfig(ctx, host)
		if err != nil {
			logger.Error("building the TLS config failed", "err", err)
			return false
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	conn, err := grpc.NewClient("passthrough:///"+dialed, opts...)
	if err != nil {
		logger.Error("building the gRPC client failed", "err", err)
		return false
	}
	defer conn.Close()

	logger.Debug("health check", "address", dialed, "service", s.Service, "tls", s.TLS)
	start := time.Now()
	var p peer.Peer
	// The probe's context bounds the call: blackbox makes it on
	// context.Background(), so a server that accepts and never answers
	// holds the probe past its deadline.
	resp, err := healthpb.NewHealthClient(conn).Check(metadata.NewOutgoingContext(ctx, s.outgoingMD.Copy()),
		&healthpb.HealthCheckRequest{Service: s.Service}, grpc.Peer(&p))
	phases.WithLabelValues("check").Set(time.Since(start).Seconds())
	if tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		isSSL.Set(1)
		(&tlsMetrics{reg: reg}).record(tlsInfo.State)
	}
	if err != nil {
		st, _ := grpcstatus.FromError(err)
		statusCode.Set(float64(st.Code()))
		switch {
		case st.Code() == codes.Unimplemented:
			logger.Error("the server does not implement grpc.health.v1.Health", "err", err)
		case st.Code() == codes.NotFound:
			logger.Error("the server does not know the service", "service", s.Service, "err", err)
		case st.Code() == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
			logger.Error("health check did not answer before the probe deadline", "err", err)
		default:
			logger.Error("health check failed", "code", st.Code().String(), "err", err)
		}
		return false
	}
	statusCode.Set(float64(codes.OK))
	serving.WithLabelValues(resp.GetStatus().String()).Set(1)
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		logger.Error("service is not serving", "service", s.Service, "serving_status", resp.GetStatus().String())
		return false
	}
	logger.Debug("service is serving", "service", s.Service)
	return true
}

// grpcServingStatuses lists the label values probe_grpc_healthcheck_response
// always has, for tests and docs.
func grpcServingStatuses() []string {
	var out []string
	for name := range healthpb.HealthCheckResponse_ServingStatus_value {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
