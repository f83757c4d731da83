package remediate

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test in the package ends with no goroutine left behind: a hung
// Prometheus or Kubernetes call that outlives its evaluation would pile up
// one goroutine per interval in a long-running remediator.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
