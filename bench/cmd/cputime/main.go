// Command cputime runs a command and reports, on the file given by -o,
// its user+system CPU seconds, wall seconds and max RSS in KiB, from the
// kernel's rusage at microsecond resolution: GNU time prints CPU in
// hundredths, too coarse for a scan that takes a few tens of milliseconds.
// The command's stdout and stderr pass through.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	out := flag.String("o", "", "write \"cpu_seconds wall_seconds maxrss_kib\" here")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: cputime -o FILE COMMAND [ARG...]")
		os.Exit(2)
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "cputime:", err)
		os.Exit(1)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if werr := os.WriteFile(*out, fmt.Appendf(nil, "%.6f %.6f %d\n", cpu.Seconds(), wall.Seconds(), ru.Maxrss), 0o644); werr != nil {
		fmt.Fprintln(os.Stderr, "cputime:", werr)
		os.Exit(1)
	}
	if err != nil {
		os.Exit(cmd.ProcessState.ExitCode())
	}
}
