// Package execshim is baton-exec, the program between baton's fork and a service's exec. It is
// its own small binary (cmd/baton-exec; /lib/baton/baton-exec in an image) so that a service's
// start does not pay for the whole init binary's start: under emulation that was a tenth of a
// second per start. It imports nothing of baton's but this package.
package execshim

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Path is where an image keeps the small baton-exec binary (cmd/baton-exec).
const Path = "/lib/baton/baton-exec"

// Main is the tiny program between fork and the service's exec: it sets LISTEN_PID (and
// WATCHDOG_PID) to its own pid, which the service keeps across execve, then execs the service.
// os/exec cannot run code in the child, and libsystemd ignores the fds unless LISTEN_PID
// matches. args are the service's path and arguments.
func Main(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "baton-exec: usage: baton-exec PATH [ARGS...]")
		return 2
	}
	pid := strconv.Itoa(os.Getpid())
	env, err := execSetup(os.Environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "baton-exec: %s: %v\n", args[0], err)
		return 126
	}
	for i, kv := range env {
		switch {
		case strings.HasPrefix(kv, "LISTEN_PID="):
			env[i] = "LISTEN_PID=" + pid
		case strings.HasPrefix(kv, "WATCHDOG_PID="):
			env[i] = "WATCHDOG_PID=" + pid
		}
	}
	err = unix.Exec(args[0], args, env)
	fmt.Fprintf(os.Stderr, "baton-exec: exec %s: %v\n", args[0], err)
	return 127
}
