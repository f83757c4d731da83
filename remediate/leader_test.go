package remediate

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func actionsOf(e *Engine, result string) float64 {
	return testutil.ToFloat64(e.metrics.actions.WithLabelValues("whisker", ActionDeletePod, result))
}

// Two remediators share one cluster: only the Lease holder acts, and a new
// leader inherits the old one's cooldowns.
func TestTwoRemediatorsOnlyLeaderActs(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	cfg := testConfig(t, h.prom.URL, "")
	// Short, real durations: client-go's elector has no injectable clock.
	// Nothing below sleeps; it waits on channels with a deadline.
	cfg.LeaderElection.LeaseDuration = model.Duration(2 * time.Second)
	cfg.LeaderElection.RenewDeadline = model.Duration(time.Second)
	cfg.LeaderElection.RetryPeriod = model.Duration(100 * time.Millisecond)

	type change struct {
		id     string
		leader bool
	}
	changes := make(chan change, 64)
	engines := map[string]*Engine{}
	cancels := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	for _, id := range []string{"one", "two"} {
		e := h.newEngine(cfg, false)
		engines[id] = e
		ctx, cancel := context.WithCancel(context.Background())
		cancels[id] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := RunLeaderElection(ctx, h.cs, cfg.LeaderElection, id, func(l bool) {
				e.SetLeader(l)
				changes <- change{id, l}
			}, e.logger)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	waitLeader := func(want string) string {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case c := <-changes:
				if c.leader && (want == "" || c.id == want) {
					return c.id
				}
			case <-deadline:
				t.Fatalf("no leader elected (want %q)", want)
			}
		}
	}

	leader := waitLeader("")
	follower := map[string]string{"one": "two", "two": "one"}[leader]
	if engines[follower].IsLeader() {
		t.Fatal("both instances think they lead")
	}
	ctx := context.Background()
	for _, d := range []time.Duration{0, 10 * time.Minute} {
		h.clock.SetTime(t0.Add(d))
		engines[follower].Evaluate(ctx)
		engines[leader].Evaluate(ctx)
	}
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("deletes = %d, want exactly 1 (by the leader)", n)
	}
	if got := actionsOf(engines[follower], "skipped_"+SkipNotLeader); got != 1 {
		t.Errorf("follower skipped_not_leader = %v, want 1", got)
	}
	if got := actionsOf(engines[leader], ResultSuccess); got != 1 {
		t.Errorf("leader success = %v, want 1", got)
	}

	// The leader stops (and releases the Lease); the follower takes over.
	cancels[leader]()
	waitLeader(follower)
	if !engines[follower].IsLeader() {
		t.Fatal("follower did not take over")
	}
	// Same pod name comes back (StatefulSet-like) still wedged: the new
	// leader honours the cooldown the old leader persisted.
	if _, err := h.cs.CoreV1().Pods("calico-system").Create(ctx, whiskerPod("whisker-a", t0.Add(-time.Hour)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.clock.SetTime(t0.Add(25 * time.Minute))
	engines[follower].Evaluate(ctx)
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("new leader ignored the cooldown: deletes = %d", n)
	}
	if got := actionsOf(engines[follower], "skipped_"+SkipCooldown); got != 1 {
		t.Errorf("new leader skipped_cooldown = %v, want 1", got)
	}
}
