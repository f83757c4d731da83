package logscan

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The vector pair search finds what bytes.Index finds, at every length
// around its 32-byte blocks and with the pattern anywhere, including where
// only the tail loop can see it.
func TestPairIndexAgreesWithIndex(t *testing.T) {
	if !hasPair {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\nflows")
	for range 20000 {
		pat := make([]byte, 2+rng.IntN(9))
		for i := range pat {
			pat[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := make([]byte, rng.IntN(150))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if len(s) > len(pat) && rng.IntN(2) == 0 {
			copy(s[rng.IntN(len(s)-len(pat)+1):], pat)
		}
		var hist [256]int
		for _, c := range s {
			hist[c]++
		}
		f := newFinder(pat, &hist, 0)
		if got, want := f.pairIndex(s), bytes.Index(s, pat); got != want {
			t.Fatalf("pairIndex(%q, %q) = %d, want %d (o1=%d o2=%d)", s, pat, got, want, f.o1, f.o2)
		}
	}
}
