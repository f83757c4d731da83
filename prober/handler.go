package prober

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"k8s.io/client-go/kubernetes"

	"github.com/greybox-probe/greybox/config"
)

// HandlerOptions wires the /probe handler to the rest of the server.
type HandlerOptions struct {
	Config  func() *config.Config
	Logger  *slog.Logger
	History *History
	// TimeoutOffset is subtracted from Prometheus' scrape timeout so the
	// answer arrives before Prometheus gives up.
	TimeoutOffset time.Duration
	// MaxInFlight caps concurrent probes; past it /probe answers 503 at once.
	MaxInFlight int
	Kube        func() (kubernetes.Interface, error)
	// Registerer receives greybox's own metrics about probes.
	Registerer prometheus.Registerer
	// MaxBodyMemory bounds the response bytes all probes in flight hold
	// (0: DefaultBodyMemory).
	MaxBodyMemory int64
	// Resolver looks names up for every probe; nil is net.DefaultResolver.
	Resolver *net.Resolver
	// LogProber is the level of the one line a failed probe writes to
	// the process log (LogNone: no line). A probe's own lines go there at
	// debug level only.
	LogProber slog.Level
}

// Handler serves /probe.
type Handler struct {
	opts     HandlerOptions
	bodies   *BodyBudget
	slots    chan struct{}
	requests *prometheus.CounterVec
	inFlight prometheus.Gauge
	duration *prometheus.HistogramVec
	overruns prometheus.Counter
	// byModule caches each module's series of requests and duration
	// (*moduleSeries by module name): a vector's lookup hashes and locks
	// on every probe.
	byModule sync.Map
}

type moduleSeries struct {
	success, failure prometheus.Counter
	duration         prometheus.Observer
}

func (h *Handler) seriesFor(module string) *moduleSeries {
	if s, ok := h.byModule.Load(module); ok {
		return s.(*moduleSeries)
	}
	s, _ := h.byModule.LoadOrStore(module, &moduleSeries{
		success:  h.requests.WithLabelValues(module, resultSuccess),
		failure:  h.requests.WithLabelValues(module, resultFailure),
		duration: h.duration.WithLabelValues(module),
	})
	return s.(*moduleSeries)
}

// MaxTargetLength bounds the target parameter. Every log line of a probe
// carries its target and history keeps it, so this is part of what bounds
// memory; the longest real targets (a list of replica URLs) stay far below.
const MaxTargetLength = 8 << 10

// Result labels of greybox_probe_requests_total.
const (
	resultSuccess    = "success"
	resultFailure    = "failure"
	resultBadRequest = "bad_request"
	resultForbidden  = "forbidden"
	resultOverloaded = "overloaded"
)

// NewHandler builds the /probe handler and registers its own metrics.
func NewHandler(o HandlerOptions) *Handler {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 100
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.History == nil {
		o.History = NewHistory(100, 0)
	}
	if o.Kube == nil {
		o.Kube = func() (kubernetes.Interface, error) { return nil, ErrNoKube }
	}
	if o.MaxBodyMemory <= 0 {
		o.MaxBodyMemory = DefaultBodyMemory
	}
	h := &Handler{
		opts:   o,
		bodies: NewBodyBudget(o.MaxBodyMemory),
		slots:  make(chan struct{}, o.MaxInFlight),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greybox_probe_requests_total",
			Help: "Probe requests by module and result (success, failure, bad_request, forbidden, overloaded).",
		}, []string{"module", "result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "greybox_probes_in_flight",
			Help: "Probes running now.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "greybox_probe_duration_seconds",
			Help:    "Duration of probes that ran, by module.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"module"}),
		overruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greybox_probe_overruns_total",
			Help: "Probes whose prober had not returned by the deadline; the answer went out without it.",
		}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(h.requests, h.inFlight, h.duration, h.overruns)
	}
	return h
}

// refuse answers a request that is not probed, and keeps it in history
// with its reason: a target whose up is 0 because of a 403 shows why on
// the landing page.
func (h *Handler) refuse(w http.ResponseWriter, module, target, result string, code int, reason string) {
	h.requests.WithLabelValues(module, result).Inc()
	http.Error(w, reason, code)
	if module == "" || target == "" {
		return // nothing to show it under
	}
	h.opts.History.Add(&Entry{
		Module: module, Target: truncate(Redact(target), 512), Start: time.Now(),
		Status: code, Reason: truncate(reason, maxReason),
		Logs: fmt.Sprintf("refused with %d %s: %s\n", code, http.StatusText(code), reason),
	})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := h.opts.Config()
	params := r.URL.Query()
	moduleName := params.Get("module")
	if moduleName == "" {
		moduleName = cfg.DefaultModule
	}
	if moduleName == "" {
		h.refuse(w, "", "", resultBadRequest, http.StatusBadRequest, "module parameter is missing")
		return
	}
	module, ok := cfg.Modules[moduleName]
	if !ok {
		h.refuse(w, "", "", resultBadRequest, http.StatusBadRequest, fmt.Sprintf("unknown module %q", oneLine(moduleName)))
		return
	}
	target := params.Get("target")
	if target == "" {
		h.refuse(w, moduleName, "", resultBadRequest, http.StatusBadRequest, "target parameter is missing")
		return
	}
	if len(target) > MaxTargetLength {
		h.refuse(w, moduleName, "", resultBadRequest, http.StatusBadRequest,
			fmt.Sprintf("target is %d bytes; the limit is %d", len(target), MaxTargetLength))
		return
	}
	spec, ok := Lookup(module.Prober)
	if !ok {
		h.refuse(w, moduleName, target, resultBadRequest, http.StatusBadRequest, fmt.Sprintf("module %q uses unknown prober %q", moduleName, module.Prober))
		return
	}
	// An empty hostname is no hostname, as in blackbox_exporter (and as
	// the landing page's form sends it).
	hostname := params.Get("hostname")
	if hostname != "" {
		m, err := moduleWithHostname(moduleName, module, hostname)
		if err != nil {
			h.refuse(w, moduleName, target, resultBadRequest, http.StatusBadRequest, err.Error())
			return
		}
		module = m
	}
	timeout, err := probeTimeout(r, *module, h.opts.TimeoutOffset)
	if err != nil {
		h.refuse(w, moduleName, target, resultBadRequest, http.StatusBadRequest, err.Error())
		return
	}
	debug := params.Get("debug") == "true"
	// shown is the target as greybox prints it anywhere: credentials in
	// it stay out of logs, history and answers.
	shown := Redact(target)

	// Take a slot before any network step (the allowlist check resolves).
	// The probe's goroutine gives it back when it returns, which the guard
	// makes happen by the deadline: it closes every connection then.
	select {
	case h.slots <- struct{}{}:
	default:
		h.refuse(w, moduleName, target, resultOverloaded, http.StatusServiceUnavailable,
			fmt.Sprintf("too many probes in flight (limit %d)", cap(h.slots)))
		return
	}
	h.inFlight.Inc()
	release := func() { h.inFlight.Dec(); <-h.slots }

	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	env := Env{Guard: NewGuard(ctx, module.AllowedTargets), Kube: h.opts.Kube, Bodies: h.bodies}
	// Runs before cancel: a probe that has answered closes what it left
	// open now, without the backstop armed for a prober still running.
	defer env.Guard.Finish()
	if h.opts.Resolver != nil {
		env.Guard.resolver = h.opts.Resolver
	}
	if err := checkTarget(ctx, spec, target, *module, env.Guard); err != nil {
		release()
		var te *TargetError
		if errors.As(err, &te) && te.Forbidden {
			h.refuse(w, moduleName, target, resultForbidden, http.StatusForbidden, oneLine(Redact(err.Error())))
			return
		}
		h.refuse(w, moduleName, target, resultBadRequest, http.StatusBadRequest, oneLine(Redact(err.Error())))
		return
	}

	logs := newProbeLog(maxProbeLog)
	// The process log sees a probe's lines only at debug level; when it
	// would drop them anyway, they are not offered to it at all.
	var sink slog.Handler = logs.handler()
	if process := h.opts.Logger.Handler(); process.Enabled(ctx, slog.LevelDebug) {
		sink = slog.NewMultiHandler(sink, redactHandler{asDebug{process}})
	}
	logger := slog.New(sink).With("module", moduleName, "target", shown)

	reg := NewMetrics()
	successGauge := gauge(reg, "probe_success", "Whether the probe succeeded (1) or failed (0).")
	durationGauge := gauge(reg, "probe_duration_seconds", "How long the probe took, in seconds.")
	timeoutGauge := gauge(reg, "probe_timeout_seconds", "The time budget the probe had, in seconds.")
	timeoutGauge.Set(timeout.Seconds())

	logLine(ctx, logger, slog.LevelDebug, "beginning probe", "prober", module.Prober, "timeout_seconds", timeout.Seconds())
	if hostname != "" {
		logger.Info("hostname parameter: Host header and TLS server name", "hostname", hostname)
	}
	start := time.Now()
	// The prober runs on this goroutine; a prober that overruns its
	// deadline by overrunGrace is answered for by the watchdog, on the
	// timer's goroutine, while it still runs (a goroutine of its own per
	// probe cost stack growth and a hand-off on every probe, about 4% of a
	// plain HTTP probe's CPU). Whichever answers first answers; mu orders
	// the watchdog's writes before anything this goroutine does after.
	var (
		mu       sync.Mutex
		answered bool
	)
	p := &probeAnswer{h: h, w: w, r: r, module: moduleName, target: shown, hostname: hostname, debug: debug,
		start: start, reg: reg, logs: logs, logger: logger, moduleYAML: module.YAML(),
		success: successGauge, duration: durationGauge}
	deadline, _ := ctx.Deadline()
	watchdog := time.AfterFunc(time.Until(deadline)+overrunGrace, func() {
		mu.Lock()
		defer mu.Unlock()
		if answered {
			return
		}
		answered = true
		h.overruns.Inc()
		h.opts.Logger.Warn("prober did not return by its deadline; answering without it", "prober", module.Prober)
		logger.Error("prober did not return by its deadline; answering without it", "prober", module.Prober)
		p.respond(false, true)
	})
	success, panicked := runProbe(ctx, probeFor(spec, *module), target, *module, reg, logger, env)
	if panicked != "" {
		// A bug, not the target's state: the process log shows it at
		// any --log.prober.
		h.opts.Logger.Error("prober panicked; reporting failure", "prober", module.Prober, "panic", panicked)
	}
	// Free the slot before answering: once a probe has answered from
	// here, its slot is free for the next request.
	release()
	watchdog.Stop()
	mu.Lock()
	defer mu.Unlock()
	if !answered {
		answered = true
		p.respond(success, false)
	}
}

// probeAnswer is what a probe's answer is made of once the prober is done
// (or given up on): its metrics, log and history entry, and the request to
// answer.
type probeAnswer struct {
	h                        *Handler
	w                        http.ResponseWriter
	r                        *http.Request
	module, target, hostname string
	moduleYAML               string
	debug                    bool
	start                    time.Time
	reg                      *Metrics
	logs                     *probeLog
	logger                   *slog.Logger
	success, duration        prometheus.Gauge
}

// respond records the probe and writes its answer. overran: the prober
// still runs, so this goroutine is not the handler's; the answer then
// carries its length and is flushed, so Prometheus has all of it at once,
// and closes the connection, which the handler's goroutine holds until the
// prober returns.
func (p *probeAnswer) respond(success, overran bool) {
	h, ctx := p.h, p.r.Context()
	elapsed := time.Since(p.start)
	p.duration.Set(elapsed.Seconds())
	series := h.seriesFor(p.module)
	if success {
		p.success.Set(1)
		logLine(ctx, p.logger, slog.LevelDebug, "probe succeeded", "duration_seconds", elapsed.Seconds())
		series.success.Inc()
	} else {
		logLine(ctx, p.logger, slog.LevelDebug, "probe failed", "duration_seconds", elapsed.Seconds())
		series.failure.Inc()
		if h.opts.LogProber < LogNone {
			h.opts.Logger.Log(ctx, h.opts.LogProber, "probe failed", "module", p.module, "target", p.target,
				"duration_seconds", elapsed.Seconds(), "reason", p.logs.Reason())
		}
	}
	series.duration.Observe(elapsed.Seconds())

	// The text form serves both the history and, for most scrapers, the
	// answer: one rendering per probe.
	text, textErr := renderText(p.reg)
	if textErr != nil {
		p.logger.Error("gathering probe metrics failed", "err", textErr)
	}
	entry := &Entry{
		Module: p.module, Target: p.target, Hostname: p.hostname, Start: p.start, Duration: elapsed, Success: success,
		log: p.logs, Metrics: text, ModuleYAML: p.moduleYAML,
	}
	if !success {
		entry.Reason = p.logs.Reason()
		if entry.Reason == "" {
			entry.Reason = "failed without an error line; see the probe's log"
		}
	}
	h.opts.History.Add(entry)

	var body []byte
	contentType := "text/plain; charset=utf-8"
	if p.debug {
		body = []byte(entry.Debug())
	} else {
		neg := negotiate(p.r.Header)
		contentType = string(neg.format)
		switch neg.typ {
		case expfmt.TypeTextPlain:
			body = text
		case expfmt.TypeOpenMetrics:
			om, _ := p.reg.writeText(make([]byte, 0, len(text)+64), true)
			body = append(om, "# EOF\n"...)
		default:
			// Protobuf or another format only expfmt writes.
			var buf bytes.Buffer
			mfs, _ := p.reg.Gather()
			enc := expfmt.NewEncoder(&buf, neg.format)
			for _, mf := range mfs {
				if err := enc.Encode(mf); err != nil {
					p.logger.Error("encoding probe metrics failed", "err", err)
					break
				}
			}
			if c, ok := enc.(expfmt.Closer); ok {
				_ = c.Close()
			}
			body = buf.Bytes()
		}
	}
	hdr := p.w.Header()
	hdr.Set("Content-Type", contentType)
	// net/http would set it only for answers under 2 KiB, and chunk the
	// rest (an http probe's is 2.6 KB).
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	if overran {
		hdr.Set("Connection", "close")
	}
	_, _ = p.w.Write(body)
	if overran {
		_ = http.NewResponseController(p.w).Flush()
	}
}

// formats memoises content negotiation by Accept header: a scraper sends
// the same header every time, and parsing it cost more allocations than
// writing the answer. Bounded, so odd headers cannot grow it.
var formats struct {
	sync.Mutex
	m map[string]negotiated
}

// negotiated is a format with its type, which FormatType otherwise parses
// out of the string again on every answer.
type negotiated struct {
	format expfmt.Format
	typ    expfmt.FormatType
}

const maxFormats = 64

func negotiate(h http.Header) negotiated {
	accept := h.Get("Accept") // all the negotiation reads
	formats.Lock()
	f, ok := formats.m[accept]
	formats.Unlock()
	if ok {
		return f
	}
	format := expfmt.NegotiateIncludingOpenMetrics(h)
	f = negotiated{format, format.FormatType()}
	formats.Lock()
	if formats.m == nil {
		formats.m = make(map[string]negotiated)
	}
	if len(formats.m) < maxFormats {
		formats.m[accept] = f
	}
	formats.Unlock()
	return f
}

// textBufs are scratch buffers for rendering a probe's answer: the history
// keeps an exact-size copy, which for a plain HTTP probe (2.6 KB) is a
// size class below the 4 KiB a fresh buffer took.
var textBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func renderText(reg *Metrics) ([]byte, error) {
	bp := textBufs.Get().(*[]byte)
	out, err := reg.writeText((*bp)[:0], false)
	text := bytes.Clone(out)
	if cap(out) <= 64<<10 { // a traefik_parity answer can be large; keep no such buffer
		*bp = out[:0]
		textBufs.Put(bp)
	}
	return text, err
}

// InFlight is the number of probes running now, answered or not.
func (h *Handler) InFlight() int { return len(h.slots) }

// overrunGrace is how long past its deadline the handler waits for a
// prober before answering without it. The guard closes the probe's
// connections at the deadline, so a prober normally returns at once.
const overrunGrace = 250 * time.Millisecond

// runProbe turns a prober panic into a failed probe with a log line, so one
// bad upstream answer cannot take the server down.
func runProbe(ctx context.Context, fn ProbeFunc, target string, m config.Module, reg *Metrics, logger *slog.Logger, env Env) (ok bool, panicked string) {
	defer func() {
		if p := recover(); p != nil {
			panicked = Redact(fmt.Sprint(p))
			logger.Error("prober panicked; reporting failure", "panic", panicked)
			ok = false
		}
	}()
	return fn(ctx, target, m, reg, logger, env), ""
}

// checkTarget applies the prober's own target check, or for URL probers
// checks scheme and host and runs the host through the allowlist (which pins
// the resolved addresses for the dialer).
func checkTarget(ctx context.Context, spec Spec, target string, m config.Module, g *Guard) error {
	if m.Via != nil {
		return checkViaTarget(ctx, target, m, g)
	}
	if spec.CheckTarget != nil {
		return spec.CheckTarget(ctx, target, m, g)
	}
	u, err := ParseHTTPTarget(target)
	if err != nil {
		return err
	}
	if m.AllowedTargets.Empty() {
		return nil
	}
	return forbiddenOnly(g.Destination(ctx, &http.Request{Method: http.MethodGet, URL: u, Host: u.Host}, settingsProxy(m)))
}

// forbiddenOnly turns a guard denial into a 403 and lets any other error
// through as nil: a lookup failure is the probe's to report
// (probe_success 0), not the caller's mistake.
func forbiddenOnly(err error) error {
	var fe *config.ForbiddenError
	if errors.As(err, &fe) {
		return &TargetError{Reason: fe.Reason, Forbidden: true}
	}
	return nil
}

// settingsProxy is the proxy a module's http_client_config chooses, if
// its prober has one.
func settingsProxy(m config.Module) ProxyFunc {
	hc, ok := m.Settings.(interface {
		HTTPClient() *config.HTTPClientConfig
	})
	if !ok {
		return nil
	}
	c := *hc.HTTPClient() // Proxy() memoises; the module is shared
	return ProxyFunc(c.ProxyConfig.Proxy())
}

var hasScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://`)

// WithScheme gives a target without a scheme ("host:8080/path") http://,
// as blackbox_exporter does; one with another scheme is left to be refused.
func WithScheme(target string) string {
	if hasScheme.MatchString(target) {
		return target
	}
	return "http://" + target
}

// ParseHTTPTarget accepts an http(s) URL with a host; without a scheme the
// target is taken as http://.
func ParseHTTPTarget(target string) (*url.URL, error) {
	target = WithScheme(target)
	u, err := url.Parse(target)
	if err != nil {
		return nil, &TargetError{Reason: fmt.Sprintf("target is not a URL: %v", err)}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &TargetError{Reason: fmt.Sprintf("target %q must be an http:// or https:// URL", oneLine(target))}
	}
	if u.Hostname() == "" {
		return nil, &TargetError{Reason: fmt.Sprintf("target %q has no host", oneLine(target))}
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, &TargetError{Reason: fmt.Sprintf("target %q has an invalid port", oneLine(target))}
		}
	}
	return u, nil
}

func probeTimeout(r *http.Request, m config.Module, offset time.Duration) (time.Duration, error) {
	timeout := time.Duration(m.Timeout)
	v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds")
	if v == "" {
		return timeout, nil
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || s <= 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return 0, fmt.Errorf("invalid X-Prometheus-Scrape-Timeout-Seconds %q", oneLine(v))
	}
	// Compare in seconds: a huge header would overflow a Duration.
	if s-offset.Seconds() >= timeout.Seconds() {
		return timeout, nil
	}
	scrape := time.Duration(s * float64(time.Second))
	if scrape > offset {
		scrape -= offset
	}
	return min(scrape, timeout), nil
}

// oneLine keeps reasons on one line: params and targets are user input.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

// maxProbeLog bounds one probe's captured log. History keeps up to twice
// --history.limit entries, so this is what bounds history's memory too; the
// chattiest prober (traefik_parity naming missing routers) stays well below.
const maxProbeLog = 256 << 10

// moduleWithHostname is the module as this one probe runs it with the
// hostname parameter: a copy, the configured module is shared.
func moduleWithHostname(name string, module *config.Module, v string) (*config.Module, error) {
	hs, ok := module.Settings.(HostnameSettings)
	if !ok {
		return nil, fmt.Errorf("module %q (prober %s) does not take a hostname parameter; http, ttyd_token and ttyd_ws do", name, module.Prober)
	}
	h, err := ParseHostname(v)
	if err != nil {
		return nil, err
	}
	settings, err := hs.WithHostname(h)
	if err != nil {
		return nil, fmt.Errorf("module %q: %w", name, err)
	}
	m := *module
	m.Settings = settings
	return &m, nil
}
