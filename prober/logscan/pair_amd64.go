package logscan

// indexPair is in pair_amd64.s: AVX2, 32 positions per step.
//
//go:noescape
func indexPair(s []byte, b1, b2 byte, d int) int

// indexPairCount is indexPair counting the newlines it passes (pair_amd64.s).
//
//go:noescape
func indexPairCount(s []byte, b1, b2 byte, d int) (pos, nl int)

func cpuid(leaf, sub uint32) (a, b, c, d uint32)
func xgetbv0() uint32

// hasPair: the CPU has AVX2 and POPCNT and the OS saves the YMM registers.
var hasPair = func() bool {
	max, _, _, _ := cpuid(0, 0)
	if max < 7 {
		return false
	}
	_, _, c, _ := cpuid(1, 0)
	if c&(1<<23) == 0 || c&(1<<27) == 0 || c&(1<<28) == 0 || xgetbv0()&6 != 6 { // POPCNT, OSXSAVE, AVX, XMM+YMM state
		return false
	}
	_, b, _, _ := cpuid(7, 0)
	return b&(1<<5) != 0
}()
