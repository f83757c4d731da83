package prober

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

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
	// Incremental reads only the lines written since the previous scrape
	// of the same target and keeps per-second match counts for the window,
	// instead of re-reading the whole window through the API server every
	// scrape. State lives in this process: a restart, a config reload or
	// another replica starts with one full read.
	Incremental bool `yaml:"incremental"`

	scanner *logscan.Scanner
	state   *k8sLogState
	// now is the clock windows are measured by; tests move it.
	now func() time.Time
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
	if s.Incremental {
		// One count per second of the window per container.
		if time.Duration(s.Window) > 24*time.Hour {
			return fmt.Errorf("window %s is too long for incremental (at most 24h: it keeps one count per second of the window)", time.Duration(s.Window))
		}
		s.state = newK8sLogState()
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
	// Incremental mode: resumed is true when only new lines were read;
	// otherwise fullReason says why the whole window was.
	resumed    bool
	fullReason string
}

func probeK8sLogErrors(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
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

	thresholdGauge := newGauge("probe_k8s_log_threshold", "Matched lines at which a pod fails the probe.")
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
	podsMatched := newGauge("probe_k8s_log_pods_matched", "Pods the target's label selector matched.")
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
	now := s.clock()
	for i := range pods.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = scanPodLog(ctx, client, s, target, &pods.Items[i], now)
		}()
	}
	wg.Wait()
	if s.state != nil {
		s.state.retain(target, pods.Items)
	}

	podLabels := []string{"namespace", "pod"}
	ctrLabels := []string{"namespace", "pod", "container"}
	var (
		ready     = newGaugeVec("probe_k8s_log_pod_ready", "Whether the pod is Running and Ready.", podLabels...)
		restarts  = newGaugeVec("probe_k8s_log_pod_restarts", "Restart count of the scanned container.", ctrLabels...)
		matched   = newGaugeVec("probe_k8s_log_matched_lines", "Log lines inside the window that matched any pattern (current plus, with previous, the previous container's).", ctrLabels...)
		bytesRead = newGaugeVec("probe_k8s_log_scanned_bytes", "Log bytes read.", ctrLabels...)
		lines     = newGaugeVec("probe_k8s_log_scanned_lines", "Log lines read.", ctrLabels...)
		truncated = newGaugeVec("probe_k8s_log_truncated", "1 if a log stream reached limit_bytes, so later lines were not scanned.", ctrLabels...)
		resumed   = newGaugeVec("probe_k8s_log_incremental", "incremental mode: 1 if this scrape read only the lines after the previous one, 0 if it read the whole window.", ctrLabels...)
	)
	reg.MustRegister(ready, restarts, matched, bytesRead, lines, truncated)
	if s.Incremental {
		reg.MustRegister(resumed)
	}

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
		if s.Incremental {
			resumed.WithLabelValues(lv...).Set(boolValue(r.resumed))
			attrs = append(attrs, "incremental", r.resumed)
			if r.fullReason != "" {
				attrs = append(attrs, "full_read", r.fullReason)
			}
		}
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
func scanPodLog(ctx context.Context, client kubernetes.Interface, s *K8sLogErrorsSettings, target string, p *corev1.Pod, now time.Time) podLog {
	r := podLog{pod: p}
	r.container, r.err = chooseContainer(p, s.Container)
	if r.err != nil {
		r.containerErr = true
		return r
	}
	window := time.Duration(s.Window)
	since := int64(math.Ceil(window.Seconds()))
	cs := containerStatus(p, r.container)
	r.restarts = cs.RestartCount
	var lastEnd time.Time
	if t := cs.LastTerminationState.Terminated; t != nil {
		lastEnd = t.FinishedAt.Time
	}
	if s.state != nil {
		return scanPodLogIncremental(ctx, client, s, target, p, cs, now, r)
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
func k8sDependencies(ctx context.Context, client kubernetes.Interface, s *K8sLogErrorsSettings, ns string, reg *Metrics, logger *slog.Logger) bool {
	if len(s.Dependencies) == 0 {
		return true
	}
	depReady := newGaugeVec("probe_k8s_dependency_ready", "Whether the named dependency is ready (absent when its state could not be read).", "dependency")
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

func (s *K8sLogErrorsSettings) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// containerStatus is the named container's status (zero if the pod has
// none yet).
func containerStatus(p *corev1.Pod, name string) corev1.ContainerStatus {
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses) {
		if cs.Name == name {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

// k8sLogMaxStreams bounds one module's incremental state: each stream holds
// at most one count per second of the window. Past it the stream probed
// longest ago is forgotten and costs one full read when it comes back.
const k8sLogMaxStreams = 4096

// k8sLogState is an incremental module's memory across scrapes, per
// target, pod and container. Probes never hold its lock while reading: each
// works on a copy and stores it back, so concurrent probes of one target
// both count exactly (each from the copy it started with) at the price of
// reading the same lines twice.
type k8sLogState struct {
	mu      sync.Mutex
	streams map[k8sStreamKey]*k8sStream
}

type k8sStreamKey struct{ target, namespace, pod, container string }

// k8sStream is where the last read of one container's log ended, and the
// matched lines still inside the window, counted per second.
type k8sStream struct {
	uid         string
	containerID string
	restarts    int32
	// next is the Unix second the next read asks for (sinceTime, whole
	// seconds on the wire); seen lines at or after it were already counted,
	// in the log's order, and fp hashes them (with their timestamps), so
	// that a log that is not the one read before — rotated away by the
	// kubelet — is noticed rather than miscounted.
	next    int64
	seen    int64
	fp      uint64
	buckets []k8sBucket
	// The previous container's matched lines (previous: true): its log
	// no longer changes, so it is read once per terminated container.
	prevID      string
	prevBuckets []k8sBucket
	used        time.Time
}

// k8sBucket counts the matched lines whose timestamp is in one second.
type k8sBucket struct {
	sec int64
	n   int64
}

func newK8sLogState() *k8sLogState {
	return &k8sLogState{streams: map[k8sStreamKey]*k8sStream{}}
}

// get returns a copy of the stream's state, or nil.
func (st *k8sLogState) get(k k8sStreamKey) *k8sStream {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.streams[k]
	if s == nil {
		return nil
	}
	c := *s
	c.buckets = slices.Clone(s.buckets)
	c.prevBuckets = slices.Clone(s.prevBuckets)
	return &c
}

// put stores a probe's state unless a concurrent probe of the same
// container already stored one that read further.
func (st *k8sLogState) put(k k8sStreamKey, s *k8sStream) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if old := st.streams[k]; old != nil && old.uid == s.uid && old.containerID == s.containerID &&
		old.restarts == s.restarts && (old.next > s.next || old.next == s.next && old.seen > s.seen) {
		old.used = s.used
		return
	}
	if _, ok := st.streams[k]; !ok && len(st.streams) >= k8sLogMaxStreams {
		var oldest k8sStreamKey
		var at time.Time
		for key, v := range st.streams {
			if at.IsZero() || v.used.Before(at) {
				oldest, at = key, v.used
			}
		}
		delete(st.streams, oldest)
	}
	st.streams[k] = s
}

// retain forgets the streams of target whose pod is gone, so deleted pods
// do not hold memory until they are the oldest.
func (st *k8sLogState) retain(target string, pods []corev1.Pod) {
	names := make(map[[2]string]bool, len(pods))
	for _, p := range pods {
		names[[2]string{p.Namespace, p.Name}] = true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for k := range st.streams {
		if k.target == target && !names[[2]string{k.namespace, k.pod}] {
			delete(st.streams, k)
		}
	}
}

// windowCount sums the buckets at or after from, dropping older ones.
func windowCount(b []k8sBucket, from int64) ([]k8sBucket, int64) {
	i, _ := slices.BinarySearchFunc(b, from, func(x k8sBucket, t int64) int { return cmp.Compare(x.sec, t) })
	b = slices.Delete(b, 0, i)
	var n int64
	for _, x := range b {
		n += x.n
	}
	return b, n
}

func addMatch(b []k8sBucket, sec int64) []k8sBucket {
	if n := len(b); n > 0 && b[n-1].sec == sec {
		b[n-1].n++
		return b
	}
	if n := len(b); n == 0 || b[n-1].sec < sec {
		return append(b, k8sBucket{sec: sec, n: 1})
	}
	// A line older than the newest one (stdout and stderr interleave).
	i, found := slices.BinarySearchFunc(b, sec, func(x k8sBucket, t int64) int { return cmp.Compare(x.sec, t) })
	if found {
		b[i].n++
		return b
	}
	return slices.Insert(b, i, k8sBucket{sec: sec, n: 1})
}

// scanPodLogIncremental reads what the container logged since the last
// scrape (sinceTime, timestamps=true) and keeps the window's count per
// second. The window is whole seconds, [now-window, now] with now cut to
// the second, so that the state's buckets and a full read agree on
// which lines are in it.
func scanPodLogIncremental(ctx context.Context, client kubernetes.Interface, s *K8sLogErrorsSettings, target string, p *corev1.Pod, cs corev1.ContainerStatus, now time.Time, r podLog) podLog {
	from := now.Unix() - int64(math.Ceil(time.Duration(s.Window).Seconds()))
	key := k8sStreamKey{target, p.Namespace, p.Name, r.container}
	st := s.state.get(key)
	switch {
	case st == nil:
		r.fullReason = "no earlier read in this process"
	case st.uid != string(p.UID):
		r.fullReason = "pod replaced (new UID)"
	case st.containerID != cs.ContainerID || st.restarts != cs.RestartCount:
		r.fullReason = "container restarted"
	}
	if r.fullReason != "" {
		st = &k8sStream{uid: string(p.UID), containerID: cs.ContainerID, restarts: cs.RestartCount, prevID: "-"}
		if old := s.state.get(key); old != nil && old.uid == st.uid {
			st.prevID, st.prevBuckets = old.prevID, old.prevBuckets
		}
	}
	st.used = now
	if st.next < from || r.fullReason != "" {
		// Nothing counted so far is inside the window any more (or nothing
		// was counted): every line from the window's start is new.
		st.next, st.seen, st.fp = from, 0, 0
		st.buckets = st.buckets[:0]
	}
	st.buckets, _ = windowCount(st.buckets, from)
	res, prov, _, truncated, err := readIncremental(ctx, client, s, p, r.container, false, st, from)
	if errors.Is(err, errLogReplaced) {
		// The lines read last time are not at the head of this log: the
		// kubelet rotated it. Count the file it now serves, as a full read
		// would.
		r.fullReason = "log rotated"
		st.next, st.seen, st.fp, st.buckets = from, 0, 0, st.buckets[:0]
		var again logscan.Result
		again, prov, _, truncated, err = readIncremental(ctx, client, s, p, r.container, false, st, from)
		again.Bytes += res.Bytes
		again.Lines += res.Lines
		res = again
	}
	r.resumed = r.fullReason == ""
	r.truncated = truncated
	var cur int64
	st.buckets, cur = windowCount(st.buckets, from)
	res.Matched = cur + prov
	if err != nil {
		r.err = err
		r.res = res
		if res.Bytes > 0 {
			s.state.put(key, st) // the complete lines read are counted
		}
		return r
	}

	// The previous container: read once after it terminated, then kept.
	var lastEnd time.Time
	prevID := ""
	if t := cs.LastTerminationState.Terminated; t != nil {
		lastEnd = t.FinishedAt.Time
		prevID = t.ContainerID + "@" + t.FinishedAt.UTC().Format(time.RFC3339)
	}
	if !s.Previous || lastEnd.IsZero() || now.Sub(lastEnd) > time.Duration(s.Window) {
		st.prevID, st.prevBuckets = "-", nil
		s.state.put(key, st)
		r.res = res
		return r
	}
	r.scannedPrev = true
	if st.prevID != prevID {
		prev := &k8sStream{next: from}
		pres, pprov, prevSec, trunc, err := readIncremental(ctx, client, s, p, r.container, true, prev, from)
		res.Bytes += pres.Bytes
		res.Lines += pres.Lines
		res.Samples = append(res.Samples, pres.Samples...)
		r.truncated = r.truncated || trunc
		if err != nil {
			r.err = fmt.Errorf("previous container: %w", err)
			r.res = res
			s.state.put(key, st)
			return r
		}
		// A terminated container's unfinished last line is final.
		if pprov > 0 {
			prev.buckets = addMatch(prev.buckets, prevSec)
		}
		st.prevID, st.prevBuckets = prevID, prev.buckets
	}
	var pn int64
	st.prevBuckets, pn = windowCount(st.prevBuckets, from)
	res.Matched += pn
	if len(res.Samples) > s.DebugMatchedLines {
		res.Samples = res.Samples[:s.DebugMatchedLines]
	}
	s.state.put(key, st)
	r.res = res
	return r
}

// lineReaders keeps the incremental reads' buffers: a scrape that reads
// 30 s of log should not allocate a buffer sized for the longest line.
var lineReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, logscan.BufferSize) }}

// errLogReplaced: the log no longer starts with the lines read last time.
var errLogReplaced = errors.New("log replaced since the last read")

// lineSeed keys the fingerprints of lines already seen; they never leave
// the process, so a per-process seed will do.
var lineSeed = maphash.MakeSeed()

// chain folds one line's hash into the fingerprint of the lines before it,
// in order.
func chain(fp, line uint64) uint64 { return (fp^line)*0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019 }

// readIncremental reads the log from st.next, skips the st.seen lines
// already counted (checking them against st.fp), and adds every later
// complete line to st. A final line without its newline may still be
// being written: it is counted for this scrape (prov, as a full read would
// count it) but left for the next read to count for good.
func readIncremental(ctx context.Context, client kubernetes.Interface, s *K8sLogErrorsSettings, p *corev1.Pod, container string, previous bool, st *k8sStream, from int64) (res logscan.Result, prov, provSec int64, truncated bool, err error) {
	opts := &corev1.PodLogOptions{Container: container, Timestamps: true, Previous: previous}
	sinceTime := metav1.NewTime(time.Unix(st.next, 0))
	opts.SinceTime = &sinceTime
	if s.LimitBytes > 0 {
		limit := int64(s.LimitBytes)
		opts.LimitBytes = &limit
	}
	rc, err := client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, opts).Stream(ctx)
	if err != nil {
		return res, 0, 0, false, describeLogError(err, p, opts)
	}
	defer rc.Close()
	var body io.Reader = rc
	if s.LimitBytes > 0 {
		body = io.LimitReader(rc, int64(s.LimitBytes))
	}
	br := lineReaders.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() { br.Reset(nil); lineReaders.Put(br) }()
	lines := s.scanner.Lines()
	var (
		skip, wantFP = st.seen, st.fp
		skipped      int64
		skipFP       uint64
		h            maphash.Hash
		ts           tsCache
		inLine       bool // pieces of a line longer than the buffer have been read
		sec          int64
		text, head   []byte
	)
	h.SetSeed(lineSeed)
	for {
		chunk, rerr := br.ReadSlice('\n')
		res.Bytes += int64(len(chunk))
		if len(chunk) > 0 {
			complete := chunk[len(chunk)-1] == '\n'
			first := !inLine
			if first {
				h.Reset()
			}
			_, _ = h.Write(chunk)
			inLine = !complete
			switch {
			case skipped < skip:
				if complete {
					skipped++
					res.Lines++
					skipFP = chain(skipFP, h.Sum64())
					if skipped == skip && skipFP != wantFP {
						return res, 0, 0, false, errLogReplaced
					}
				}
			case complete && first:
				sec, text = ts.split(chunk, st.next)
				text = trimNL(text)
				m := lines.Match(text)
				res.Lines++
				if m {
					res.Matched++
					sampleLine(&res, text, s.DebugMatchedLines)
				}
				st.commit(sec, m && sec >= from, h.Sum64())
			case first:
				// The buffer is reused for the next piece: keep what a
				// sample needs.
				sec, text = ts.split(chunk, st.next)
				head = append(head[:0], text[:min(len(text), 512)]...)
				lines.Chunk(text, true)
			default:
				lines.Chunk(trimNL(chunk), false)
				if complete {
					m := lines.End()
					res.Lines++
					if m {
						res.Matched++
						sampleLine(&res, head, s.DebugMatchedLines)
					}
					st.commit(sec, m && sec >= from, h.Sum64())
				}
			}
		}
		if rerr == nil || rerr == bufio.ErrBufferFull {
			continue
		}
		// What is left unfinished is counted for this scrape only.
		if inLine && skipped >= skip {
			res.Lines++
			if lines.End() {
				res.Matched++
				sampleLine(&res, head, s.DebugMatchedLines)
				if sec >= from {
					prov++
				}
			}
		}
		truncated = s.LimitBytes > 0 && res.Bytes >= int64(s.LimitBytes)
		switch {
		case rerr == io.EOF && skipped < skip:
			return res, 0, 0, truncated, errLogReplaced
		case rerr == io.EOF:
			return res, prov, sec, truncated, nil
		case ctx.Err() != nil:
			rerr = fmt.Errorf("probe deadline reached after %d bytes of log: %w", res.Bytes, rerr)
		}
		return res, prov, sec, truncated, rerr
	}
}

// commit records one complete line: it moves the resume point to the
// line's second and counts it there, and counts a match in its bucket.
// Lines older than the resume point (stdout and stderr interleave) are
// not part of what the next read, from that second, returns.
func (st *k8sStream) commit(sec int64, match bool, lineHash uint64) {
	switch {
	case sec > st.next || st.seen == 0 && sec == st.next:
		st.next, st.seen, st.fp = sec, 1, chain(0, lineHash)
	case sec == st.next:
		st.seen++
		st.fp = chain(st.fp, lineHash)
	}
	if match {
		st.buckets = addMatch(st.buckets, sec)
	}
}

func trimNL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1]
	}
	return b
}

func sampleLine(res *logscan.Result, line []byte, max int) {
	if len(res.Samples) >= max {
		return
	}
	if len(line) > 512 {
		line = line[:512]
	}
	res.Samples = append(res.Samples, strings.ToValidUTF8(string(line), "\uFFFD"))
}

// tsCache parses the RFC3339Nano timestamp the kubelet puts before each
// line with timestamps=true, parsing only when the second changes.
type tsCache struct {
	key []byte
	sec int64
}

// split returns the line's Unix second and the line without its
// timestamp. A line without one (not from a kubelet) is put at def.
func (c *tsCache) split(line []byte, def int64) (int64, []byte) {
	sp := bytes.IndexByte(line[:min(len(line), 64)], ' ')
	if sp < 20 {
		return def, line
	}
	stamp := line[:sp]
	// The second is fixed by "2006-01-02T15:04:05" and the zone after the
	// fraction; lines of one second differ only in the fraction.
	zone := len(stamp)
	for zone > 19 && stamp[zone-1] != 'Z' && stamp[zone-1] != '+' && stamp[zone-1] != '-' {
		zone--
	}
	if zone > 19 {
		zone--
	}
	if len(c.key) > 0 && bytes.Equal(c.key[:19], stamp[:19]) && bytes.Equal(c.key[19:], stamp[zone:]) {
		return c.sec, line[sp+1:]
	}
	t, err := time.Parse(time.RFC3339Nano, string(stamp))
	if err != nil {
		return def, line
	}
	c.key = append(append(c.key[:0], stamp[:19]...), stamp[zone:]...)
	c.sec = t.Unix()
	return c.sec, line[sp+1:]
}
