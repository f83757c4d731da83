package prober

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test in the package ends with no goroutine left behind: a probe
// that leaks one per scrape would take a server down in days.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
