package prober

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/kube"
	"github.com/greybox-probe/greybox/prober/logscan"
)

// k8sLogParallel bounds the log streams one probe reads at once: each holds
// a scanner buffer and an API server connection.
const k8sLogParallel = 4

// K8sLogErrorsSettings is the k8s_log_errors section of a module: count the
// lines of each selected pod's recent log that match any pattern and fail
// when a pod reaches the threshold — a pod that is Running but wedged,
// printing the same error forever.
type K8sLogErrorsSettings struct {
	// Container to read; may be empty only for single-container pods.
	Container string `yaml:"container,omitempty"`
	// Window is how far back to read (sinceSeconds).
	Window config.Duration `yaml:"window"`
	// Patterns: a line matches if any pattern matches it (Go regexp syntax;
	// pure literals are searched for directly).
	Patterns []config.Regexp `yaml:"patterns"`
	// Threshold: a pod with at least this many matched lines fails the probe.
	Threshold int `yaml:"threshold"`
	// LimitBytes caps each log stream read per pod (0: no cap).
	LimitBytes config.Bytes `yaml:"limit_bytes"`
	// Previous also scans the previous container's log when it terminated
	// inside the window (errors from before a restart).
	Previous bool `yaml:"previous"`
	// Namespaces the targets may name; empty allows every namespace.
	Namespaces kube.Namespaces `yaml:"namespaces,omitempty"`
	// FailIfNoPods fails the probe when the selector matches no pod.
	FailIfNoPods bool `yaml:"fail_if_no_pods"`
	// Dependencies are reported as probe_k8s_dependency_ready{dependency}.
	// Name is the metric label and, for a workload without a selector, the
	// object's name; an empty namespace means the target's namespace.
	Dependencies []kube.Dependency `yaml:"dependencies,omitempty"`
	// DebugMatchedLines is how many matched lines per pod go to the probe
	// log (debug output, history). Log contents are data: 0 by default.
	DebugMatchedLines int `yaml:"debug_matched_lines"`

	scanner *logscan.Scanner
}

func (s *K8sLogErrorsSettings) Validate() error {
	if len(s.Patterns) == 0 {
		return errors.New("patterns: at least one pattern is required")
	}
	exprs := make([]string, len(s.Patterns))
	for i, p := range s.Patterns {
		exprs[i] = p.String()
	}
	sc, err := logscan.New(exprs)
	if err != nil {
		return fmt.Errorf("patterns: %w", err)
	}
	s.scanner = sc
	switch {
	case s.Window <= 0:
		return errors.New("window must be positive")
	case s.Threshold < 1:
		return errors.New("threshold must be at least 1")
	case s.LimitBytes < 0:
		return errors.New("limit_bytes must not be negative (0: no limit)")
	case s.DebugMatchedLines < 0 || s.DebugMatchedLines > 100:
		return errors.New("debug_matched_lines must be between 0 and 100")
	}
	if err := s.Namespaces.Validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range s.Dependencies {
		d := &s.Dependencies[i]
		if d.Name == "" {
			return fmt.Errorf("dependencies[%d]: name is required (it is the dependency label)", i)
		}
		if seen[d.Name] {
			return fmt.Errorf("dependencies: name %q used twice", d.Name)
		}
		seen[d.Name] = true
		if err := d.Validate(); err != nil {
			return fmt.Errorf("dependencies[%d] (%s): %w", i, d.Name, err)
		}
	}
	return nil
}

func init() {
	Register("k8s_log_errors", Spec{
		Settings: func() config.Settings {
			return &K8sLogErrorsSettings{
				Window:       config.Duration(10 * time.Minute),
				Threshold:    1,
				LimitBytes:   16 << 20,
				FailIfNoPods: true,
			}
		},
		Probe:       probeK8sLogErrors,
		CheckTarget: checkK8sLogTarget,
	})
}

func checkK8sLogTarget(_ context.Context, target string, module config.Module, _ *Guard) error {
	s, ok := module.Settings.(*K8sLogErrorsSettings)
	if !ok {
		return &TargetError{Reason: "module has no k8s_log_errors settings"}
	}
	_, err := parseK8sLogTarget(target, s)
	return err
}

// parseK8sLogTarget parses <namespace>/<selector> and applies the module's
// namespaces; errors are *TargetError (403 for a namespace not allowed).
func parseK8sLogTarget(target string, s *K8sLogErrorsSettings) (kube.Target, error) {
	t, err := kube.ParseTarget(target)
	if err != nil {
		return kube.Target{}, &TargetError{Reason: err.Error()}
	}
	if err := s.Namespaces.Check(t.Namespace); err != nil {
		return kube.Target{}, &TargetError{Reason: err.Error(), Forbidden: true}
	}
	return t, nil
}

// podLog is what one pod's scan produced.
type podLog struct {
	pod          *corev1.Pod
	container    string
	restarts     int32
	res          logscan.Result
	truncated    bool
	scannedPrev  bool
	err          error
	containerErr bool // no log was requested: the container could not be chosen
}

func probeK8sLogErrors(ctx context.Context, target string, module config.Module, reg *prometheus.Registry, logger *slog.Logger, env Env) bool {
	s, ok := module.Settings.(*K8sLogErrorsSettings)
	if !ok || s.scanner == nil {
		logger.Error("module has no validated k8s_log_errors settings")
		return false
	}
	tgt, err := parseK8sLogTarget(target, s)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	if env.Kube == nil {
		logger.Error("Kubernetes is not available", "err", ErrNoKube)
		return false
	}
	client, err := env.Kube()
	if err != nil {
		logger.Error("Kubernetes is not available", "err", err)
		return false
	}

	thresholdGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "probe_k8s_log_threshold",
		Help: "Matched lines at which a pod fails the probe.",
	})
	thresholdGauge.Set(float64(s.Threshold))
	reg.MustRegister(thresholdGauge)

	success := true
	if !k8sDependencies(ctx, client, s, tgt.Namespace, reg, logger) {
		success = false
	}

	pods, err := client.CoreV1().Pods(tgt.Namespace).List(ctx, metav1.ListOptions{LabelSelector: tgt.Selector.String()})
	if err != nil {
		logger.Error("listing pods failed", "err", kube.WrapAPIError(err, "list", "pods", tgt.Namespace))
		return false
	}
	podsMatched := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "probe_k8s_log_pods_matched",
		Help: "Pods the target's label selector matched.",
	})
	podsMatched.Set(float64(len(pods.Items)))
	reg.MustRegister(podsMatched)
	if len(pods.Items) == 0 {
		if s.FailIfNoPods {
			logger.Error("no pod matches the target", "namespace", tgt.Namespace, "selector", tgt.Selector.String())
			return false
		}
		logger.Info("no pod matches the target (fail_if_no_pods: false)", "namespace", tgt.Namespace, "selector", tgt.Selector.String())
		return success
	}

	results := make([]podLog, len(pods.Items))
	sem := make(chan struct{}, k8sLogParallel)
	var wg sync.WaitGroup
	now := time.Now()
	for i := range pods.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = scanPodLog(ctx, client, s, &pods.Items[i], now)
		}()
	}
	wg.Wait()

	podLabels := []string{"namespace", "pod"}
	ctrLabels := []string{"namespace", "pod", "container"}
	var (
		ready     = k8sGaugeVec("probe_k8s_log_pod_ready", "Whether the pod is Running and Ready.", podLabels)
		restarts  = k8sGaugeVec("probe_k8s_log_pod_restarts", "Restart count of the scanned container.", ctrLabels)
		matched   = k8sGaugeVec("probe_k8s_log_matched_lines", "Log lines inside the window that matched any pattern (current plus, with previous, the previous container's).", ctrLabels)
		bytesRead = k8sGaugeVec("probe_k8s_log_scanned_bytes", "Log bytes read.", ctrLabels)
		lines     = k8sGaugeVec("probe_k8s_log_scanned_lines", "Log lines read.", ctrLabels)
		truncated = k8sGaugeVec("probe_k8s_log_truncated", "1 if a log stream reached limit_bytes, so later lines were not scanned.", ctrLabels)
	)
	reg.MustRegister(ready, restarts, matched, bytesRead, lines, truncated)

	for _, r := range results {
		p := r.pod
		podReady := kube.PodReady(p)
		ready.WithLabelValues(p.Namespace, p.Name).Set(boolValue(podReady))
		if r.containerErr {
			logger.Error("cannot choose the container to read", "pod", p.Name, "err", r.err)
			success = false
			continue
		}
		lv := []string{p.Namespace, p.Name, r.container}
		restarts.WithLabelValues(lv...).Set(float64(r.restarts))
		if r.err != nil {
			logger.Error("reading the pod log failed", "pod", p.Name, "container", r.container, "err", r.err)
			success = false
			if r.res.Bytes == 0 {
				continue
			}
		}
		matched.WithLabelValues(lv...).Set(float64(r.res.Matched))
		bytesRead.WithLabelValues(lv...).Set(float64(r.res.Bytes))
		lines.WithLabelValues(lv...).Set(float64(r.res.Lines))
		truncated.WithLabelValues(lv...).Set(boolValue(r.truncated))
		attrs := []any{"pod", p.Name, "container", r.container, "matched_lines", r.res.Matched,
			"scanned_lines", r.res.Lines, "scanned_bytes", r.res.Bytes, "truncated", r.truncated,
			"previous_scanned", r.scannedPrev, "ready", podReady, "restarts", r.restarts}
		if r.res.Bytes == 0 && r.err == nil && p.Spec.NodeName == "" {
			attrs = append(attrs, "note", "pod not scheduled yet, no log")
		}
		if r.truncated {
			logger.Warn("log reached limit_bytes; later lines were not scanned", "pod", p.Name, "limit_bytes", s.LimitBytes)
		}
		if r.res.Matched >= int64(s.Threshold) {
			logger.Error("pod log at or above the error threshold", append(attrs, "threshold", s.Threshold)...)
			success = false
		} else {
			logger.Info("scanned pod log", attrs...)
		}
		for _, line := range r.res.Samples {
			logger.Info("matched line", "pod", p.Name, "line", line)
		}
	}
	return success
}

// scanPodLog chooses the container and scans its log, and the previous
// container's when asked and it ended inside the window.
func scanPodLog(ctx context.Context, client kubernetes.Interface, s *K8sLogErrorsSettings, p *corev1.Pod, now time.Time) podLog {
	r := podLog{pod: p}
	r.container, r.err = chooseContainer(p, s.Container)
	if r.err != nil {
		r.containerErr = true
		return r
	}
	window := time.Duration(s.Window)
	since := int64(math.Ceil(window.Seconds()))
	var lastEnd time.Time
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses) {
		if cs.Name == r.container {
			r.restarts = cs.RestartCount
			if t := cs.LastTerminationState.Terminated; t != nil {
				lastEnd = t.FinishedAt.Time
			}
		}
	}
	opts := &corev1.PodLogOptions{Container: r.container, SinceSeconds: &since}
	if s.LimitBytes > 0 {
		limit := int64(s.LimitBytes)
		opts.LimitBytes = &limit
	}
	r.res, r.truncated, r.err = streamScan(ctx, client, p, opts, s)
	if r.err != nil || !s.Previous || lastEnd.IsZero() || now.Sub(lastEnd) > window {
		return r
	}
	prevOpts := *opts
	prevOpts.Previous = true
	prev, trunc, err := streamScan(ctx, client, p, &prevOpts, s)
	r.scannedPrev = true
	r.res.Bytes += prev.Bytes
	r.res.Lines += prev.Lines
	r.res.Matched += prev.Matched
	r.res.Samples = append(r.res.Samples, prev.Samples...)
	if len(r.res.Samples) > s.DebugMatchedLines {
		r.res.Samples = r.res.Samples[:s.DebugMatchedLines]
	}
	r.truncated = r.truncated || trunc
	if err != nil {
		r.err = fmt.Errorf("previous container: %w", err)
	}
	return r
}

func streamScan(ctx context.Context, client kubernetes.Interface, p *corev1.Pod, opts *corev1.PodLogOptions, s *K8sLogErrorsSettings) (logscan.Result, bool, error) {
	// The probe's context bounds the stream; rest.Config.Timeout would cap
	// every stream of the shared client at once.
	rc, err := client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, opts).Stream(ctx)
	if err != nil {
		return logscan.Result{}, false, describeLogError(err, p, opts)
	}
	defer rc.Close()
	var body io.Reader = rc
	if s.LimitBytes > 0 {
		// Also enforced here: a server that ignores limitBytes cannot make
		// one probe read without bound.
		body = io.LimitReader(rc, int64(s.LimitBytes))
	}
	res, err := s.scanner.Scan(body, s.DebugMatchedLines)
	// At exactly limit_bytes the log may have ended there too; saying
	// "truncated" then errs on the side of "not everything was seen".
	truncated := s.LimitBytes > 0 && res.Bytes >= int64(s.LimitBytes)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("probe deadline reached after %d bytes of log: %w", res.Bytes, err)
		}
		return res, truncated, err
	}
	return res, truncated, nil
}

func chooseContainer(p *corev1.Pod, want string) (string, error) {
	var names []string
	for _, c := range p.Spec.InitContainers {
		names = append(names, c.Name)
	}
	for _, c := range p.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, c := range p.Spec.EphemeralContainers {
		names = append(names, c.Name)
	}
	switch {
	case want != "" && slices.Contains(names, want):
		return want, nil
	case want != "":
		return "", fmt.Errorf("container %q is not in pod %s (containers: %s)", want, p.Name, strings.Join(names, ", "))
	case len(names) == 1:
		return names[0], nil
	case len(names) == 0:
		return "", fmt.Errorf("pod %s has no containers", p.Name)
	}
	return "", fmt.Errorf("pod %s has %d containers (%s): set k8s_log_errors.container", p.Name, len(names), strings.Join(names, ", "))
}

// describeLogError turns the API server's answer into the reason an
// operator needs: which RBAC rule, which container, which kubelet.
func describeLogError(err error, p *corev1.Pod, opts *corev1.PodLogOptions) error {
	msg := err.Error()
	switch {
	case apierrors.IsForbidden(err):
		return kube.WrapAPIError(err, "get", "pods/log", p.Namespace)
	case strings.Contains(msg, "a container name must be specified"):
		return fmt.Errorf("pod %s has several containers, set k8s_log_errors.container: %w", p.Name, err)
	case strings.Contains(msg, "is not valid for pod"):
		return fmt.Errorf("container %q does not exist in pod %s: %w", opts.Container, p.Name, err)
	case strings.Contains(msg, ":10250") || strings.Contains(msg, "dial tcp"):
		return fmt.Errorf("kubelet on node %q is unreachable from the API server: %w", p.Spec.NodeName, err)
	}
	return kube.WrapAPIError(err, "get", "pods/log", p.Namespace)
}

// k8sDependencies reports each dependency's readiness. An API error fails
// the probe and leaves the dependency's series out, so a guard that needs
// it ready fails closed.
func k8sDependencies(ctx context.Context, client kubernetes.Interface, s *K8sLogErrorsSettings, ns string, reg *prometheus.Registry, logger *slog.Logger) bool {
	if len(s.Dependencies) == 0 {
		return true
	}
	depReady := k8sGaugeVec("probe_k8s_dependency_ready", "Whether the named dependency is ready (absent when its state could not be read).", []string{"dependency"})
	reg.MustRegister(depReady)
	ok := true
	for _, cfgDep := range s.Dependencies {
		d := cfgDep // a copy: the namespace default is per target
		if d.Namespace == "" {
			d.Namespace = ns
		}
		isReady, reason, err := d.Ready(ctx, client)
		if err != nil {
			logger.Error("dependency state unknown", "dependency", d.Name, "err", err)
			ok = false
			continue
		}
		depReady.WithLabelValues(d.Name).Set(boolValue(isReady))
		logger.Info("dependency", "dependency", d.Name, "object", d.String(), "ready", isReady, "reason", reason)
	}
	return ok
}

func k8sGaugeVec(name, help string, labels []string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}
