// Command greybox-remediator reads greybox's probe results back from
// Prometheus and restarts what is provably wedged, with safety rails.
package main

import (
	"context"
	"fmt"
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
	"k8s.io/klog/v2"

	"github.com/greybox-probe/greybox/kube"
	"github.com/greybox-probe/greybox/remediate"
)

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New("greybox-remediator", "Restarts what greybox's probes show to be provably wedged, and never thrashes.")
	var (
		configFile  = app.Flag("config.file", "Remediator configuration file.").Default("remediator.yml").String()
		configCheck = app.Flag("config.check", "Validate the configuration file and exit (non-zero on error).").Bool()
		dryRun      = app.Flag("dry-run", "Log and count what would be done; make no change in the cluster (overrides the config).").Bool()
		leaderElect = app.Flag("leader-elect", "Take the Lease in leader_election before acting; needed when more than one replica runs.").Bool()
		identity    = app.Flag("leader-elect.identity", "Identity in the Lease and in Events. Empty: $POD_NAME, then the hostname.").Default("").Envar("POD_NAME").String()
		shutdown    = app.Flag("web.shutdown-timeout", "How long shutdown may wait for an evaluation in progress.").Default("30s").Duration()
		webFlags    = kingpinflag.AddFlags(app, ":9117")
		kubeOpts    = kube.AddFlags(app, "greybox-remediator/"+version.Version)
	)
	logCfg := &promslog.Config{}
	flag.AddFlags(app, logCfg)
	app.Version(version.Print("greybox-remediator"))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := promslog.New(logCfg)
	// client-go (leader election) logs through klog; keep one log format.
	klog.SetSlogLogger(logger.With("component", "client-go"))

	cfg, err := remediate.Load(*configFile)
	if err != nil {
		if *configCheck {
			fmt.Fprintln(os.Stderr, err)
		} else {
			logger.Error("invalid configuration", "err", err)
		}
		return 1
	}
	if *configCheck {
		fmt.Printf("%s: OK, %d rules\n", *configFile, len(cfg.Rules))
		return 0
	}
	if *dryRun {
		cfg.DryRun = true
	}
	logger.Info("starting greybox-remediator", "version", version.Info(), "build_context", version.BuildContext(),
		"rules", len(cfg.Rules), "dry_run", cfg.DryRun, "leader_elect", *leaderElect, "max_sample_age", cfg.MaxSampleAge)

	cs, _, err := kube.NewClientset(*kubeOpts)
	if err != nil {
		logger.Error("the remediator needs Kubernetes", "err", err)
		return 1
	}
	src, err := remediate.NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		logger.Error("prometheus source", "err", err)
		return 1
	}
	if *identity == "" {
		if *identity, err = os.Hostname(); err != nil || *identity == "" {
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
	engine, err := remediate.NewEngine(remediate.Options{
		Config:   cfg,
		Source:   src,
		Kube:     cs,
		Store:    &remediate.ConfigMapStore{Client: cs, Namespace: cfg.State.Namespace, Name: cfg.State.ConfigMapName},
		Logger:   logger,
		Metrics:  remediate.NewMetrics(reg),
		Identity: *identity,
		Leader:   !*leaderElect,
	})
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
	go func() { serveErr <- web.ListenAndServe(httpServer, webFlags, logger) }()

	// The evaluation loop stops before the elector: the Lease is released
	// on cancel, and no action may be in flight once another replica can
	// take it.
	evalCtx, stopEval := context.WithCancel(context.Background())
	electCtx, stopElect := context.WithCancel(context.Background())
	var evalDone, electDone sync.WaitGroup
	evalDone.Add(1)
	go func() { defer evalDone.Done(); engine.Run(evalCtx) }()
	if *leaderElect {
		electDone.Add(1)
		go func() {
			defer electDone.Done()
			if err := remediate.RunLeaderElection(electCtx, cs, cfg.LeaderElection, *identity, engine.SetLeader, logger); err != nil {
				logger.Error("leader election", "err", err)
			}
		}()
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	code := 0
	select {
	case err := <-serveErr:
		logger.Error("web server stopped", "err", err)
		code = 1
	case sig := <-signals:
		logger.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *shutdown)
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
