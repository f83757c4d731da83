// Command greybox is the probe server: /probe?module=&target= for the
// failures black-box checks miss.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"k8s.io/client-go/kubernetes"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/kube"
	"github.com/greybox-probe/greybox/prober"
	"github.com/greybox-probe/greybox/server"
)

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New("greybox", "Probe server for the failures black-box checks miss.")
	var (
		configFile      = app.Flag("config.file", "Probe configuration file.").Default("greybox.yml").String()
		configCheck     = app.Flag("config.check", "Validate the configuration file and exit (non-zero on error).").Bool()
		timeoutOffset   = seconds(app.Flag("timeout-offset", "Subtracted from Prometheus' scrape timeout to leave time for the answer: seconds (0.5) or a duration (500ms).").Default("0.5"))
		logProber       = proberLevel(app.Flag("log.prober", "Level of the one line a failed probe writes to the process log: debug, info, warn, error or none. A probe's own lines go to the process log at debug level; debug=true and /logs always have them.").Default("warn"))
		maxInFlight     = app.Flag("probes.max-in-flight", "Probes allowed to run at once; past it /probe answers 503 immediately.").Default("100").Int()
		maxBodyMemory   = app.Flag("probes.max-body-memory", "Response bytes all probes in flight may hold in memory at once; a probe that would pass it fails.").Default("64MiB").Bytes()
		historySize     = app.Flag("history.limit", "Recent probes kept for the landing page and /logs (failures are kept as many again).").Default("100").Int()
		historyBytes    = app.Flag("history.max-bytes", "Memory history may hold in all (logs, targets, metrics); past it the oldest probes go, successes first.").Default("16MiB").Bytes()
		gcHeapFloor     = app.Flag("runtime.gc-heap-floor", "Heap size below which the garbage collector does not run: a probe's garbage then does not make it mark greybox's fixed heap every few dozen probes. 0 leaves Go's pacing; GOGC in the environment overrides it.").Default("32MiB").Bytes()
		shutdownTimeout = app.Flag("web.shutdown-timeout", "How long in-flight probes may take to finish after SIGTERM.").Default("15s").Duration()
		externalURL     = app.Flag("web.external-url", "URL under which greybox is reached (behind a reverse proxy, say); links on its pages use its path.").Default("").String()
		routePrefix     = app.Flag("web.route-prefix", "Path prefix the endpoints are served under. Defaults to --web.external-url's path.").Default("").String()
		webFlags        = kingpinflag.AddFlags(app, ":9116")
		kubeOpts        = kube.AddFlags(app, "greybox/"+version.Version)
	)
	logCfg := &promslog.Config{}
	flag.AddFlags(app, logCfg)
	app.Version(version.Print("greybox"))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := promslog.New(logCfg)
	heapFloor(uint64(*gcHeapFloor), os.Getenv("GOGC"), logger)
	extURL, prefix, err := webPaths(*externalURL, *routePrefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	prober.UserAgent = "greybox/" + cmp.Or(version.Version, "dev") // a build without make's ldflags

	cfg, err := config.Load(*configFile)
	if err != nil {
		if *configCheck {
			fmt.Fprintln(os.Stderr, err)
		} else {
			logger.Error("invalid configuration", "err", err)
		}
		return 1
	}
	for _, w := range cfg.Warnings {
		if *configCheck {
			fmt.Fprintln(os.Stderr, "warning:", w)
		} else {
			logger.Warn("configuration", "warning", w)
		}
	}
	if *configCheck {
		fmt.Printf("%s: OK, %d modules\n", *configFile, len(cfg.Modules))
		return 0
	}
	logger.Info("starting greybox", "version", version.Info(), "build_context", version.BuildContext(), "modules", len(cfg.Modules))

	kubeClient := func() (kubernetes.Interface, error) { return nil, prober.ErrNoKube }
	if cs, _, err := kube.NewClientset(*kubeOpts); err == nil {
		kubeClient = func() (kubernetes.Interface, error) { return cs, nil }
	} else if errors.Is(err, kube.ErrNotConfigured) {
		logger.Info("no Kubernetes configuration; Kubernetes modules will fail with a reason", "err", err)
	} else {
		logger.Warn("Kubernetes client unavailable; Kubernetes modules will fail", "err", err)
		kubeErr := err
		kubeClient = func() (kubernetes.Interface, error) { return nil, kubeErr }
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector("greybox"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	srv := server.New(server.Options{
		ConfigFile:    *configFile,
		Config:        cfg,
		Logger:        logger,
		Registry:      reg,
		HistorySize:   *historySize,
		HistoryBytes:  int64(*historyBytes),
		MaxBodyMemory: int64(*maxBodyMemory),
		MaxInFlight:   *maxInFlight,
		TimeoutOffset: *timeoutOffset,
		LogProber:     *logProber,
		ExternalURL:   extURL,
		RoutePrefix:   prefix,
		Kube:          kubeClient,
	})

	// A probe request is a short line: MaxHeaderBytes refuses a huge one
	// (431) before it is read into memory; the handler bounds the target
	// itself (prober.MaxTargetLength).
	httpServer := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: server.MaxHeaderBytes}
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(httpServer, webFlags, logger) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	for {
		select {
		case err := <-serveErr:
			logger.Error("web server stopped", "err", err)
			return 1
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				_ = srv.Reload()
				continue
			}
			logger.Info("shutting down; waiting for in-flight probes", "signal", sig.String(), "timeout", shutdownTimeout.String())
			ctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
			err := httpServer.Shutdown(ctx)
			cancel()
			if err != nil {
				logger.Error("shutdown did not finish cleanly", "err", err)
				return 1
			}
			return 0
		}
	}
}
