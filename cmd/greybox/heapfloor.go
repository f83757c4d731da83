package main

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// heapFloor keeps the GC from running before the heap reaches floor bytes,
// and leaves Go's own pacing (GOGC=100) once the live heap is half of it.
//
// Why: greybox's live heap is a few MiB of its dependencies' tables
// (Kubernetes API types, CEL, protobuf descriptors) that every GC cycle
// marks again, while a probe's garbage is tens of KB. With Go's pacing a
// cycle ran every 4 MiB of garbage, about 80 plain HTTP probes, and marking
// that fixed heap was a third of greybox's CPU above the floor program's
// under load (issue 13). The price is memory: up to floor bytes of heap
// where Go alone would hold twice the live heap.
//
// After every cycle GOGC is set from the live heap that cycle marked, so
// the next goal is the floor. GOGC set in the environment is the
// operator's choice and wins; so does a floor of 0. (bytedance/gopkg's
// gctuner does this from HeapInuse, which still holds the unswept garbage
// when it reads it: its goal swung between 7 and 16 MiB cycle to cycle.)
func heapFloor(floor uint64, gogcEnv string, logger *slog.Logger) {
	if floor == 0 || gogcEnv != "" {
		if floor != 0 {
			logger.Info("GOGC is set; --runtime.gc-heap-floor does not apply", "GOGC", gogcEnv)
		}
		return
	}
	t := &heapTuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.arm()
}

type heapTuner struct {
	floor  uint64
	sample []metrics.Sample
}

// arm sets a finalizer on a fresh object, so it runs after the next cycle,
// and re-arms from there: a callback per GC cycle.
func (t *heapTuner) arm() {
	runtime.SetFinalizer(&heapCycle{t}, func(c *heapCycle) {
		debug.SetGCPercent(c.t.percent())
		c.t.arm()
	})
}

type heapCycle struct{ t *heapTuner }

// percent is the GOGC whose goal, live*(1+GOGC/100), is the floor, and
// never below Go's default.
func (t *heapTuner) percent() int {
	metrics.Read(t.sample)
	return gcPercentFor(t.sample[0].Value.Uint64(), t.floor)
}

func gcPercentFor(live, floor uint64) int {
	const def, most = 100, 1 << 16
	if live == 0 || live*2 >= floor {
		return def
	}
	return int(min(max((floor-live)*100/live, def), most))
}
