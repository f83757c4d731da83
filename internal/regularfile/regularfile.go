// Package regularfile opens files named by configuration — the config files
// themselves and the secrets they point to — so that a wrong path fails
// fast with a clear reason: a missing file, a directory or a device says
// so, a FIFO is refused instead of blocking forever on open or read, and
// a file larger than the caller's limit is refused instead of read whole.
package regularfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Check reports whether path can be opened for reading and is a regular
// file (after symlinks, which is how Kubernetes mounts Secrets and
// ConfigMaps). Errors read "path: reason".
func Check(path string) error {
	f, err := open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// ReadFile reads path like os.ReadFile, but only if it is a regular file
// of at most limit bytes.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > limit {
		return nil, tooLarge(path, limit)
	}
	// The size can change between Stat and the read; never hold more
	// than limit+1 bytes.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, pathError(path, err)
	}
	if int64(len(data)) > limit {
		return nil, tooLarge(path, limit)
	}
	return data, nil
}

func tooLarge(path string, limit int64) error {
	return fmt.Errorf("%s: larger than %d MiB, refusing to read it", path, limit>>20)
}

// open refuses what is not a regular file before opening it, and opens
// without blocking (see openFlags) so a FIFO swapped in between the two
// steps cannot hang the caller; the opened file is checked again.
func open(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, pathError(path, err)
	}
	fi, err = f.Stat()
	if err == nil {
		err = regular(path, fi)
	} else {
		err = pathError(path, err)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func regular(path string, fi fs.FileInfo) error {
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
		return nil
	case mode.IsDir():
		return fmt.Errorf("%s: a directory, not a file", path)
	case mode&fs.ModeNamedPipe != 0:
		return fmt.Errorf("%s: a named pipe, not a file (reading it could block forever)", path)
	case mode&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		return fmt.Errorf("%s: a device, not a file", path)
	case mode&fs.ModeSocket != 0:
		return fmt.Errorf("%s: a socket, not a file", path)
	default:
		return fmt.Errorf("%s: not a regular file", path)
	}
}

// pathError says "path: reason" without the operation os adds ("stat",
// "open").
func pathError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", path, pe.Err)
	}
	return fmt.Errorf("%s: %w", path, err)
}
