package main

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{3 * mib, 32 * mib, 966},  // the goal is the floor
		{16 * mib, 32 * mib, 100}, // half the floor: Go's own pacing
		{40 * mib, 32 * mib, 100}, // past it: never below Go's default
		{0, 32 * mib, 100},        // no reading yet
		{1, 1 << 40, 1 << 16},     // bounded
	} {
		if got := gcPercentFor(c.live, c.floor); got != c.want {
			t.Errorf("gcPercentFor(%d, %d) = %d, want %d", c.live, c.floor, got, c.want)
		}
	}
}

// After a collection the floor is in force: GOGC reads above 100 (this
// test binary's live heap is far below 1 GiB).
func TestHeapFloorSetsGOGC(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	heapFloor(0, "", logger)       // off: nothing armed
	heapFloor(1<<30, "50", logger) // GOGC in the environment wins
	if gogc() != 100 {
		t.Fatalf("GOGC %d before the floor was armed, want 100", gogc())
	}
	heapFloor(1<<30, "", logger)
	// The tuner runs from a finalizer, after a cycle: collect until it has
	// (each runtime.GC runs a full cycle and queues the finalizer).
	for deadline := time.Now().Add(10 * time.Second); gogc() <= 100; {
		if time.Now().After(deadline) {
			t.Fatal("GOGC still 100 ten seconds after the floor was armed")
		}
		runtime.GC()
		runtime.Gosched()
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
