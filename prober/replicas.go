package prober

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/greybox-probe/greybox/kube"
)

// replicaSet says where the replicas of a load-balanced service are: the
// pods a label selector matches, or the addresses a DNS name has. Both
// traefik_parity (which reads each replica's API) and a module's via:
// (which sends the user's request through each replica) find them here,
// so the two views of one Traefik deployment are of the same replicas.
// A static list is each caller's own: base URLs for one, host:port for
// the other.
type replicaSet struct {
	kind string // "k8s" or "dns"

	namespace string // k8s
	selector  labels.Selector
	host      string // dns
	// port is a number, or for k8s a container port name resolved per
	// pod, as a Service's targetPort is.
	port string
}

// replicaSetForms describes the discovered forms, for error messages.
const replicaSetForms = "k8s:<namespace>/<label-selector>:<port or port name>, dns:<host>:<port>"

// parseReplicaSet parses a k8s: or dns: replica set; anything else is
// nil, for the caller's static list. what names spec in errors.
func parseReplicaSet(what, spec, forms string) (*replicaSet, error) {
	switch {
	case strings.HasPrefix(spec, "k8s:"):
		rest := strings.TrimPrefix(spec, "k8s:")
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			return nil, fmt.Errorf("%s %q: missing :<port> (%s)", what, spec, forms)
		}
		port, err := parsePodPort(rest[i+1:])
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, spec, err)
		}
		kt, err := kube.ParseTarget(rest[:i])
		if err != nil {
			return nil, err
		}
		return &replicaSet{kind: "k8s", namespace: kt.Namespace, selector: kt.Selector, port: port}, nil
	case strings.HasPrefix(spec, "dns:"):
		host, port, err := net.SplitHostPort(strings.TrimPrefix(spec, "dns:"))
		if err != nil {
			return nil, fmt.Errorf("%s %q: %v (%s)", what, spec, err, forms)
		}
		if port, err = parsePort(port); err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, spec, err)
		}
		if host == "" || strings.ContainsAny(host, "/?#@ ") {
			return nil, fmt.Errorf("%s %q: bad host %q", what, spec, host)
		}
		return &replicaSet{kind: "dns", host: host, port: port}, nil
	}
	return nil, nil
}

func parsePort(p string) (string, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("bad port %q", p)
	}
	return p, nil
}

// parsePodPort accepts a port number or a container port name (Traefik's
// chart names its ports web, websecure and traefik).
func parsePodPort(p string) (string, error) {
	if p != "" && p[0] >= '0' && p[0] <= '9' {
		return parsePort(p)
	}
	if errs := validation.IsValidPortName(p); len(errs) > 0 {
		return "", fmt.Errorf("bad port %q: neither a number nor a port name (%s)", p, strings.Join(errs, "; "))
	}
	return p, nil
}

// foundReplica is one replica discovery found.
type foundReplica struct {
	addr           string // host:port to dial
	namespace, pod string // k8s
	started        time.Time
}

// discoverReplicas lists the replicas of set now. DNS answers go through
// the guard, which keeps only allowed addresses and approves them for
// dialling; pod addresses are checked by whoever dials them. skipped
// counts pods the selector matched that cannot take traffic (not running,
// terminating, no IP or no such port), each logged with its reason.
func discoverReplicas(ctx context.Context, set *replicaSet, env Env, logger *slog.Logger) (replicas []foundReplica, skipped int, ok bool) {
	switch set.kind {
	case "dns":
		addrs, err := env.Guard.Resolve(ctx, set.host)
		if err != nil {
			logger.Error("resolving replicas failed", "host", set.host, "err", err)
			return nil, 0, false
		}
		seen := map[string]bool{}
		for _, a := range addrs {
			hp := net.JoinHostPort(a.String(), set.port)
			if seen[hp] {
				continue
			}
			seen[hp] = true
			replicas = append(replicas, foundReplica{addr: hp})
		}
		logger.Info("resolved replicas", "host", set.host, "addresses", len(replicas))
		return replicas, 0, true
	case "k8s":
		if env.Kube == nil {
			logger.Error("kubernetes discovery unavailable", "err", ErrNoKube)
			return nil, 0, false
		}
		cs, err := env.Kube()
		if err != nil {
			logger.Error("kubernetes discovery unavailable", "err", err)
			return nil, 0, false
		}
		pods, err := cs.CoreV1().Pods(set.namespace).List(ctx, metav1.ListOptions{LabelSelector: set.selector.String()})
		if err != nil {
			logger.Error("listing pods failed", "namespace", set.namespace, "selector", set.selector.String(), "err", err)
			return nil, 0, false
		}
		items := pods.Items
		slices.SortFunc(items, func(a, b corev1.Pod) int { return cmp.Compare(a.Name, b.Name) })
		for i := range items {
			pod := &items[i]
			port, reason := "", podSkip(pod)
			if reason == "" {
				port, reason = podPort(pod, set.port)
			}
			if reason != "" {
				skipped++
				logger.Warn("pod not probed", "namespace", pod.Namespace, "pod", pod.Name, "reason", reason)
				continue
			}
			replicas = append(replicas, foundReplica{
				addr: net.JoinHostPort(pod.Status.PodIP, port), namespace: pod.Namespace, pod: pod.Name,
				started: podStarted(pod),
			})
		}
		logger.Info("discovered pods", "namespace", set.namespace, "selector", set.selector.String(),
			"matched", len(items), "probed", len(replicas), "skipped", skipped)
	}
	return replicas, skipped, true
}

// podPort resolves a port name against the pod's containers, as a
// Service's named targetPort is resolved per pod.
func podPort(pod *corev1.Pod, port string) (string, string) {
	if _, err := strconv.ParseUint(port, 10, 16); err == nil {
		return port, ""
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == port && p.ContainerPort > 0 {
				return strconv.Itoa(int(p.ContainerPort)), ""
			}
		}
	}
	return "", fmt.Sprintf("no container port named %q", port)
}

// podSkip says why a pod cannot take traffic, or "".
func podSkip(pod *corev1.Pod) string {
	switch {
	case pod.DeletionTimestamp != nil:
		return "terminating"
	case pod.Status.Phase != corev1.PodRunning:
		return "phase " + string(pod.Status.Phase)
	case pod.Status.PodIP == "":
		return "no pod IP yet"
	}
	if _, err := netip.ParseAddr(pod.Status.PodIP); err != nil {
		return "bad pod IP " + strconv.Quote(pod.Status.PodIP)
	}
	return ""
}

// podStarted is when the pod's current process started: a container
// restart loads its state afresh just like a new pod.
func podStarted(pod *corev1.Pod) time.Time {
	t := pod.CreationTimestamp.Time
	if pod.Status.StartTime != nil && pod.Status.StartTime.After(t) {
		t = pod.Status.StartTime.Time
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.State.Running != nil && c.State.Running.StartedAt.After(t) {
			t = c.State.Running.StartedAt.Time
		}
	}
	return t
}
