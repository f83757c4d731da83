//go:build unix

package regularfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within fails the test instead of hanging when f blocks (a FIFO opened
// for reading without a writer would).
func within(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("blocked: a FIFO was opened or read")
		return nil
	}
}

func TestCheckAndReadFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link") // Kubernetes mounts Secrets as symlinks
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable")
	if err := os.WriteFile(unreadable, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		path, want string // want "" = accepted
	}{
		{file, ""},
		{link, ""},
		{missing, missing + ": no such file or directory"},
		{dir, dir + ": a directory, not a file"},
		{fifo, fifo + ": a named pipe, not a file"},
		{"/dev/null", "/dev/null: a device, not a file"},
		{filepath.Join(file, "x"), "not a directory"},
	} {
		for name, f := range map[string]func() error{
			"Check":    func() error { return Check(tc.path) },
			"ReadFile": func() error { _, err := ReadFile(tc.path, 1<<20); return err },
		} {
			err := within(t, f)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s(%s): %v", name, tc.path, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s(%s) = %v, want an error containing %q", name, tc.path, err, tc.want)
			}
		}
	}
	if err := Check(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check(missing) = %v, want it to wrap fs.ErrNotExist", err)
	}
	if os.Geteuid() != 0 { // root reads anything
		if err := Check(unreadable); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("Check(unreadable) = %v, want permission denied", err)
		}
	}
	if data, err := ReadFile(file, 10); err != nil || string(data) != "0123456789" {
		t.Errorf("ReadFile at the limit = %q, %v", data, err)
	}
	if _, err := ReadFile(file, 9); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ReadFile over the limit = %v, want a refusal", err)
	}
}

// The open itself must not wait for a writer, for when a FIFO replaces the
// file between Stat and open.
func TestOpenFlagsDoNotBlockOnAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := within(t, func() error {
		f, err := os.OpenFile(fifo, os.O_RDONLY|openFlags, 0)
		if err == nil {
			f.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
