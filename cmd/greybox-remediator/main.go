// Command greybox-remediator reads greybox's probe results back from
// Prometheus and restarts what is provably wedged, with safety rails.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/greybox-probe/greybox/kube"
	"github.com/greybox-probe/greybox/remediate"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, signals))
}

// flags are the command line, shared by both commands.
type flags struct {
	configFile, promURL, promExternalURL, greyboxURL *string
	configCheck, dryRun, leaderElect                 *bool
	identity                                         *string
	shutdown                                         *time.Duration
	output                                           *string
	webFlags                                         *web.FlagConfig
	kubeOpts                                         *kube.Options
}

// run is the whole program; signals stop the server. It returns the exit
// code: 0, 1 (a runtime or configuration problem) or 2 (bad flags).
func run(args []string, stdout, stderr io.Writer, signals <-chan os.Signal) int {
	app := kingpin.New("greybox-remediator", "Restarts what greybox's probes show to be provably wedged, and never thrashes.")
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	f := flags{
		configFile:      app.Flag("config.file", "Remediator configuration file.").Default("remediator.yml").String(),
		configCheck:     app.Flag("config.check", "Validate the configuration file and exit (non-zero on error).").Bool(),
		promURL:         app.Flag("prometheus.url", "Prometheus base URL to query; overrides prometheus.url in the configuration file.").Default("").String(),
		promExternalURL: app.Flag("prometheus.external-url", "Prometheus URL as a browser reaches it, for the graph links of the status page and the plan. Empty: the URL queried.").Default("").String(),
		greyboxURL:      app.Flag("greybox.url", "greybox's URL as a browser reaches it: each candidate links to the probe's /logs. Empty: no links.").Default("").String(),
		dryRun:          app.Flag("dry-run", "Log and count what would be done; make no change in the cluster (overrides the config). Runs without Kubernetes when none is configured.").Bool(),
		leaderElect:     app.Flag("leader-elect", "Take the Lease in leader_election before acting; needed when more than one replica runs.").Bool(),
		identity:        app.Flag("leader-elect.identity", "Identity in the Lease and in Events. Empty: $POD_NAME, then the hostname.").Default("").Envar("POD_NAME").String(),
		shutdown:        app.Flag("web.shutdown-timeout", "How long shutdown may wait for an evaluation in progress.").Default("30s").Duration(),
		webFlags:        kingpinflag.AddFlags(app, ":9117"),
		kubeOpts:        kube.AddFlags(app, "greybox-remediator/"+version.Version),
	}
	app.Command("serve", "Evaluate the rules every evaluation_interval, act, and serve the status page (the default).").Default()
	plan := app.Command("plan", "Evaluate the rules once against Prometheus, print what would be done and why, and exit. Changes nothing; needs no Kubernetes (with it, candidates are resolved to pods).")
	f.output = plan.Flag("output", "Plan format: text or json.").Short('o').Default("text").Enum("text", "json")
	logCfg := &promslog.Config{Writer: stderr}
	flag.AddFlags(app, logCfg)
	var logLevelSet bool
	app.GetFlag("log.level").IsSetByUser(&logLevelSet)
	app.Version(version.Print("greybox-remediator"))
	app.HelpFlag.Short('h')
	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if cmd == plan.FullCommand() && !logLevelSet {
		// The plan on stdout says what the engine's info lines would;
		// keep stderr for warnings unless asked otherwise.
		_ = logCfg.Level.Set("warn")
	}
	logger := promslog.New(logCfg)
	// client-go (leader election) logs through klog; keep one log format.
	klog.SetSlogLogger(logger.With("component", "client-go"))

	for _, u := range []struct{ flag, value string }{
		{"--prometheus.url", *f.promURL}, {"--prometheus.external-url", *f.promExternalURL}, {"--greybox.url", *f.greyboxURL},
	} {
		if u.value == "" {
			continue
		}
		if err := remediate.CheckURL(u.flag, u.value); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
	}
	cfg, err := remediate.LoadWith(*f.configFile, remediate.Overrides{PrometheusURL: *f.promURL})
	if err != nil {
		if *f.configCheck || cmd == plan.FullCommand() {
			fmt.Fprintln(stderr, err)
		} else {
			logger.Error("invalid configuration", "err", err)
		}
		return 1
	}
	if *f.configCheck {
		fmt.Fprintf(stdout, "%s: OK, %d rules\n", *f.configFile, len(cfg.Rules))
		return 0
	}
	links := remediate.Links{Greybox: *f.greyboxURL, Prometheus: *f.promExternalURL}
	if links.Prometheus == "" {
		links.Prometheus = cfg.Prometheus.URL
	}
	if cmd == plan.FullCommand() {
		return runPlan(f, cfg, links, logger, stdout, stderr, signals)
	}
	return serve(f, cfg, links, logger, signals)
}

// optionalKube is the Kubernetes client for a dry run: nil, after one log
// line, when none is configured or it cannot be built.
func optionalKube(opts kube.Options, logger *slog.Logger) kubernetes.Interface {
	cs, _, err := kube.NewClientset(opts)
	if err != nil {
		msg := "plan mode runs without Kubernetes: candidates are not resolved to pods, cooldowns and budgets start empty, nothing is changed"
		if errors.Is(err, kube.ErrNotConfigured) {
			logger.Info(msg)
		} else {
			logger.Warn(msg, "err", err)
		}
		return nil
	}
	return cs
}

// runPlan evaluates once and prints the plan. 1 when a query failed (the
// plan is incomplete) or Prometheus could not be asked at all.
func runPlan(f flags, cfg *remediate.Config, links remediate.Links, logger *slog.Logger, stdout, stderr io.Writer, signals <-chan os.Signal) int {
	cfg.DryRun = true
	cs := optionalKube(*f.kubeOpts, logger)
	src, err := remediate.NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	opts := remediate.Options{Config: cfg, Source: src, Logger: logger, Leader: true, Links: links, Plan: true, Identity: "plan"}
	if cs != nil {
		// Reads only: a dry run never writes the state, never records an
		// Event, never acts.
		opts.Kube = cs
		opts.Store = &remediate.ConfigMapStore{Client: cs, Namespace: cfg.State.Namespace, Name: cfg.State.ConfigMapName}
	}
	engine, err := remediate.NewEngine(opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-signals:
			cancel()
		case <-done:
		}
	}()
	p := engine.Plan(ctx)
	if *f.output == "json" {
		err = p.WriteJSON(stdout)
	} else {
		err = p.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "plan interrupted")
		return 1
	}
	if h := engine.Health(); h.PrometheusOK.IsZero() && h.PrometheusErr != "" {
		fmt.Fprintf(stderr, "cannot query Prometheus at %s: %s\n", p.Prometheus, h.PrometheusErr)
		return 1
	}
	if len(p.Errors) > 0 {
		fmt.Fprintf(stderr, "plan incomplete: %d of the queries to Prometheus at %s failed; first: %s\n", len(p.Errors), p.Prometheus, p.Errors[0])
		return 1
	}
	return 0
}

// serve is the remediation loop and its web server, until a signal.
func serve(f flags, cfg *remediate.Config, links remediate.Links, logger *slog.Logger, signals <-chan os.Signal) int {
	if *f.dryRun {
		cfg.DryRun = true
	}
	logger.Info("starting greybox-remediator", "version", version.Info(), "build_context", version.BuildContext(),
		"rules", len(cfg.Rules), "dry_run", cfg.DryRun, "leader_elect", *f.leaderElect, "max_sample_age", cfg.MaxSampleAge)

	var cs kubernetes.Interface
	if cfg.DryRun {
		cs = optionalKube(*f.kubeOpts, logger)
	} else {
		var err error
		if cs, _, err = kube.NewClientset(*f.kubeOpts); err != nil {
			logger.Error("the remediator needs Kubernetes to act; --dry-run or the plan command try rules without it", "err", err)
			return 1
		}
	}
	electing := *f.leaderElect
	if electing && cs == nil {
		logger.Info("no leader election: not needed in plan mode without Kubernetes")
		electing = false
	}
	src, err := remediate.NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		logger.Error("prometheus source", "err", err)
		return 1
	}
	identity := *f.identity
	if identity == "" {
		if identity, err = os.Hostname(); err != nil || identity == "" {
			logger.Error("cannot derive a leader identity; set --leader-elect.identity", "err", err)
			return 1
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector("greybox_remediator"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	opts := remediate.Options{
		Config:   cfg,
		Source:   src,
		Logger:   logger,
		Metrics:  remediate.NewMetrics(reg),
		Identity: identity,
		Leader:   !electing,
		Electing: electing,
		Links:    links,
	}
	if cs != nil {
		opts.Kube = cs
		opts.Store = &remediate.ConfigMapStore{Client: cs, Namespace: cfg.State.Namespace, Name: cfg.State.ConfigMapName}
	}
	engine, err := remediate.NewEngine(opts)
	if err != nil {
		logger.Error("engine", "err", err)
		return 1
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !engine.Ready() {
			http.Error(w, "no evaluation finished yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	mux.Handle("/", engine.StatusHandler(version.Version))
	httpServer := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(httpServer, f.webFlags, logger) }()

	// The evaluation loop stops before the elector: the Lease is released
	// on cancel, and no action may be in flight once another replica can
	// take it.
	evalCtx, stopEval := context.WithCancel(context.Background())
	electCtx, stopElect := context.WithCancel(context.Background())
	var evalDone, electDone sync.WaitGroup
	evalDone.Add(1)
	go func() { defer evalDone.Done(); engine.Run(evalCtx) }()
	if electing {
		electDone.Add(1)
		go func() {
			defer electDone.Done()
			if err := remediate.RunLeaderElection(electCtx, cs, cfg.LeaderElection, identity, engine.SetLeader, logger); err != nil {
				logger.Error("leader election", "err", err)
			}
		}()
	}

	code := 0
	select {
	case err := <-serveErr:
		logger.Error("web server stopped", "err", err)
		code = 1
	case sig := <-signals:
		logger.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *f.shutdown)
	defer cancel()
	stopEval()
	waitOrTimeout(ctx, &evalDone)
	engine.SetLeader(false)
	stopElect()
	waitOrTimeout(ctx, &electDone)
	if err := httpServer.Shutdown(ctx); err != nil {
		logger.Error("shutdown did not finish cleanly", "err", err)
		code = 1
	}
	return code
}

func waitOrTimeout(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
