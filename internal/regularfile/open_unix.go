//go:build unix

package regularfile

import "syscall"

// openFlags: O_NONBLOCK makes opening a FIFO return at once instead of
// waiting for a writer; it does not change reads of a regular file.
const openFlags = syscall.O_NONBLOCK
