//go:build !amd64

package logscan

const hasPair = false

func indexPair(s []byte, b1, b2 byte, d int) int {
	panic("logscan: no pair search on this architecture")
}

func indexPairCount(s []byte, b1, b2 byte, d int) (pos, nl int) {
	panic("logscan: no pair search on this architecture")
}
