// Package prober holds the prober contract, the /probe handler, the probe
// history and one file per prober. Each prober's file registers itself with
// Register; nothing else lists prober names.
package prober

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"k8s.io/client-go/kubernetes"

	"github.com/greybox-probe/greybox/config"
)

// ProbeFunc runs one probe against target within ctx's deadline. It
// registers into reg only the metrics it actually produced, logs what it
// did to logger (captured per request for debug output and history) and
// reports success. Every network step must honour ctx.
type ProbeFunc func(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool

// Env is what a probe may use from the outside world. It is built per
// request so the dialer can carry the addresses the handler already checked.
type Env struct {
	// Guard dials and resolves through the module's allowed_targets.
	Guard *Guard
	// Kube returns the shared Kubernetes client, or an error saying why
	// there is none (no kubeconfig, not in a cluster).
	Kube func() (kubernetes.Interface, error)
	// Bodies bounds the response bytes probes in flight hold; nil is
	// unbounded.
	Bodies *BodyBudget
}

// ErrNoKube is what Env.Kube returns when greybox runs without Kubernetes.
var ErrNoKube = errors.New("no Kubernetes configuration: set --kubeconfig or KUBECONFIG, or run greybox in a cluster")

// TargetError is a target the handler must refuse before probing: 400, or
// 403 when Forbidden.
type TargetError struct {
	Reason    string
	Forbidden bool
}

func (e *TargetError) Error() string { return e.Reason }

// Spec is everything a prober registers.
type Spec struct {
	// Settings returns a fresh settings value with defaults filled in.
	Settings func() config.Settings
	Probe    ProbeFunc
	// CheckTarget validates a target before the probe runs (400/403); g
	// checks hosts against allowed_targets and pins what it resolved for
	// the dialer. Nil means the target is an http(s) URL whose host the
	// handler checks.
	CheckTarget func(ctx context.Context, target string, module config.Module, g *Guard) error
	// Via says the prober can be sent through each replica of a load
	// balancer (a module's via:): its target is an http(s) URL (CheckTarget
	// nil) and it opens every connection with env.Guard.DialContext, so a
	// guard from Guard.Through puts all of one run on one replica.
	Via bool
}

var (
	specsMu sync.RWMutex
	specs   = map[string]Spec{}
)

// Register makes a prober available under name: its settings type for the
// config loader, its probe function for the handler. Call it from init in
// the prober's own file.
func Register(name string, s Spec) {
	if s.Settings == nil || s.Probe == nil {
		panic("prober: Register " + name + " without Settings or Probe")
	}
	if s.Via && s.CheckTarget != nil {
		panic("prober: Register " + name + " with Via and its own CheckTarget: via needs a URL target")
	}
	config.RegisterSettings(name, s.Settings)
	if s.Via {
		config.RegisterVia(name, checkViaConfig)
	}
	specsMu.Lock()
	specs[name] = s
	specsMu.Unlock()
}

// Lookup returns the registered prober.
func Lookup(name string) (Spec, bool) {
	specsMu.RLock()
	defer specsMu.RUnlock()
	s, ok := specs[name]
	return s, ok
}
