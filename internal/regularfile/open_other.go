//go:build !unix

package regularfile

// openFlags: elsewhere the Stat before opening is the only FIFO guard.
const openFlags = 0
