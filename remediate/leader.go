package remediate

import (
	"context"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// RunLeaderElection campaigns for the Lease until ctx ends, calling
// setLeader on every change. Losing the Lease is not fatal: the instance
// becomes a follower and campaigns again. Cancel ctx only after the
// evaluation loop stopped, because the Lease is released on cancel.
func RunLeaderElection(ctx context.Context, cs kubernetes.Interface, cfg LeaderElectionConfig, identity string, setLeader func(bool), logger *slog.Logger) error {
	var mu sync.Mutex
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.LeaseName},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            cfg.LeaseName,
		LeaseDuration:   time.Duration(cfg.LeaseDuration),
		RenewDeadline:   time.Duration(cfg.RenewDeadline),
		RetryPeriod:     time.Duration(cfg.RetryPeriod),
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			// OnStartedLeading runs in its own goroutine and may come after
			// OnStoppedLeading; its context is cancelled before the latter
			// runs, so checking it under mu keeps the order right.
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				defer mu.Unlock()
				if lctx.Err() == nil {
					logger.Info("acquired the leader Lease", "lease", cfg.Namespace+"/"+cfg.LeaseName, "identity", identity)
					setLeader(true)
				}
			},
			OnStoppedLeading: func() {
				mu.Lock()
				defer mu.Unlock()
				logger.Info("not leading", "lease", cfg.Namespace+"/"+cfg.LeaseName, "identity", identity)
				setLeader(false)
			},
			OnNewLeader: func(id string) {
				if id != identity {
					logger.Info("observed leader", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		le.Run(ctx)
	}
	return nil
}
