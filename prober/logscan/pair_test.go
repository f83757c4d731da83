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

// The counting pair search finds what bytes.Index finds from any start and,
// with the caller's final count of what it left, counts every newline once,
// across its 64- and 32-byte blocks, false candidates and the tail.
func TestIndexAtCountsNewlines(t *testing.T) {
	if !hasPair {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("ab\n\nflows")
	for range 20000 {
		pat := make([]byte, 2+rng.IntN(9))
		for i := range pat {
			pat[i] = alphabet[rng.IntN(len(alphabet))]
		}
		pat = bytes.ReplaceAll(pat, []byte{'\n'}, []byte{'x'})
		s := make([]byte, rng.IntN(400))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		for range rng.IntN(4) {
			if len(s) > len(pat) {
				copy(s[rng.IntN(len(s)-len(pat)+1):], pat)
			}
		}
		var hist [256]int
		for _, c := range s {
			hist[c]++
		}
		f := newFinder(pat, &hist, 0)
		var lc lineCount
		from := 0
		for {
			want := bytes.Index(s[from:], pat)
			if want >= 0 {
				want += from
			}
			got := f.indexAt(s, from, &lc)
			if got != want {
				t.Fatalf("indexAt(%q, %d, %q) = %d, want %d", s, from, pat, got, want)
			}
			if lc.done > len(s) || lc.n != int64(bytes.Count(s[:lc.done], []byte{'\n'})) {
				t.Fatalf("indexAt(%q, %d, %q): counted %d newlines in s[:%d]", s, from, pat, lc.n, lc.done)
			}
			if got < 0 {
				break
			}
			from = got + 1 + rng.IntN(len(pat))
			if from > len(s) {
				break
			}
		}
	}
}
