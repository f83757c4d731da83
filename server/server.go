// Package server wires the probe server's HTTP endpoints: /probe, the
// landing page and history, /config, /metrics, health and reload.
package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/prober"
)

// MaxHeaderBytes bounds a request's line and headers as read by the
// http.Server in front of these endpoints: a URL-escaped maximal target
// fits three times over.
const MaxHeaderBytes = 64 << 10

// Server is the probe server's state shared by its endpoints.
type Server struct {
	ConfigFile string
	Logger     *slog.Logger
	Registry   *prometheus.Registry

	base    string // path prefix of every link: --web.external-url's path
	prefix  string // where routes are served: --web.route-prefix, "" for /
	cfg     *config.SafeConfig
	history *prober.History
	probe   *prober.Handler
	reloads reloadMetrics
	mux     *http.ServeMux
	mu      sync.Mutex // serialises reloads
}

type reloadMetrics struct {
	ok   prometheus.Gauge
	last prometheus.Gauge
}

// Options for New.
type Options struct {
	ConfigFile  string
	Config      *config.Config
	Logger      *slog.Logger
	Registry    *prometheus.Registry
	HistorySize int
	// HistoryBytes bounds history's memory (0: prober.DefaultHistoryBytes).
	HistoryBytes int64
	MaxInFlight  int
	// MaxBodyMemory bounds response bytes held by probes in flight.
	MaxBodyMemory int64
	TimeoutOffset time.Duration
	// LogProber is the level of a failed probe's one process-log line
	// (prober.LogNone: none).
	LogProber slog.Level
	// Resolver looks names up for probes; nil is net.DefaultResolver.
	Resolver *net.Resolver
	// Kube returns the Kubernetes client for probers that need one.
	Kube func() (kubernetes.Interface, error)
	// ExternalURL is where users reach greybox (behind a reverse proxy
	// that may strip a path); every link starts with its path.
	ExternalURL *url.URL
	// RoutePrefix is the path the endpoints are served under ("" or "/":
	// the root). greybox's flag defaults it to ExternalURL's path, as
	// Prometheus does; a proxy that strips the path wants it at the root.
	RoutePrefix string
}

// New builds the server around an already-validated config.
func New(o Options) *Server {
	s := &Server{
		ConfigFile: o.ConfigFile,
		Logger:     o.Logger,
		Registry:   o.Registry,
		cfg:        config.NewSafeConfig(o.Config),
		history:    prober.NewHistory(o.HistorySize, o.HistoryBytes),
		mux:        http.NewServeMux(),
	}
	if o.ExternalURL != nil {
		s.base = strings.TrimRight(o.ExternalURL.Path, "/")
	}
	s.prefix = strings.TrimRight(o.RoutePrefix, "/")
	if o.ExternalURL == nil {
		s.base = s.prefix // reached directly: links follow the routes
	}
	s.reloads.ok = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "greybox_config_last_reload_successful", Help: "Whether the last configuration reload succeeded.",
	})
	s.reloads.last = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "greybox_config_last_reload_success_timestamp_seconds", Help: "Time of the last successful configuration reload.",
	})
	o.Registry.MustRegister(s.reloads.ok, s.reloads.last)
	s.reloads.ok.Set(1)
	s.reloads.last.SetToCurrentTime()

	s.probe = prober.NewHandler(prober.HandlerOptions{
		Config:        s.cfg.Get,
		Logger:        o.Logger,
		History:       s.history,
		TimeoutOffset: o.TimeoutOffset,
		LogProber:     o.LogProber,
		MaxInFlight:   o.MaxInFlight,
		MaxBodyMemory: o.MaxBodyMemory,
		Resolver:      o.Resolver,
		Kube:          o.Kube,
		Registerer:    o.Registry,
	})
	s.mux.Handle("/probe", s.probe)
	s.mux.Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	s.mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy") })
	s.mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Ready") })
	s.mux.HandleFunc("/-/reload", s.handleReload)
	s.mux.HandleFunc("/config", s.handleConfig)
	s.mux.HandleFunc("/logs", s.handleLogs)
	s.mux.HandleFunc("/{$}", s.handleLanding)
	return s
}

// ServeHTTP makes Server an http.Handler. Under a route prefix, "/"
// redirects to it and everything else outside it is 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.prefix == "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/" || r.URL.Path == s.prefix {
		http.Redirect(w, r, s.base+"/", http.StatusFound)
		return
	}
	// "/gbx" is not under "/gb": only the prefix followed by a slash is.
	if !strings.HasPrefix(r.URL.Path, s.prefix+"/") {
		http.NotFound(w, r)
		return
	}
	http.StripPrefix(s.prefix, s.mux).ServeHTTP(w, r)
}

// HistoryBytes is the memory the probe history holds, as it estimates it.
func (s *Server) HistoryBytes() int64 { return s.history.Bytes() }

// ProbesInFlight is the number of probes running now.
func (s *Server) ProbesInFlight() int { return s.probe.InFlight() }

// Config returns the running config.
func (s *Server) Config() *config.Config { return s.cfg.Get() }

// Reload re-reads the config file; on error the running config stays.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cfg.Reload(s.ConfigFile); err != nil {
		s.reloads.ok.Set(0)
		s.Logger.Error("config reload failed; keeping the running config", "err", err)
		return err
	}
	s.reloads.ok.Set(1)
	s.reloads.last.SetToCurrentTime()
	s.Logger.Info("config reloaded", "file", s.ConfigFile, "modules", len(s.cfg.Get().Modules))
	for _, w := range s.cfg.Get().Warnings {
		s.Logger.Warn("configuration", "warning", w)
	}
	return nil
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "reload requires POST", http.StatusMethodNotAllowed)
		return
	}
	if err := s.Reload(); err != nil {
		http.Error(w, fmt.Sprintf("failed to reload config: %v", err), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "config reloaded")
}

func (s *Server) handleConfig(w http.ResponseWriter, _ *http.Request) {
	out, err := s.cfg.Get().Redacted()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(out)
}

func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var (
		e  *prober.Entry
		ok bool
	)
	switch {
	case q.Get("id") != "":
		id, err := strconv.ParseInt(q.Get("id"), 10, 64)
		if err != nil {
			http.Error(w, "id must be an integer", http.StatusBadRequest)
			return
		}
		e, ok = s.history.Get(id)
	case q.Get("module") != "" && q.Get("target") != "":
		// History keeps targets redacted, hostnames as the probe got them.
		e, ok = s.history.NewestFor(q.Get("module"), prober.Redact(q.Get("target")), q.Get("hostname"))
	default:
		http.Error(w, "give id, or module and target", http.StatusBadRequest)
		return
	}
	if !ok {
		http.Error(w, "no such probe in history (it may have rotated out)", http.StatusNotFound)
		return
	}
	if wantsHTML(r) {
		s.render(w, logsPage, s.page(map[string]any{"Entry": e}))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Probe %d: module=%s target=%s at %s, %s, %s\n", e.ID, e.Module, e.Target,
		e.Start.UTC().Format(time.RFC3339), human(e.Duration), result(e))
	if e.Reason != "" {
		fmt.Fprintf(w, "Reason: %s\n", e.Reason)
	}
	fmt.Fprint(w, "\n", e.Debug())
}
