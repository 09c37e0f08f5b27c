package handoff

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Environment of the listen-fd protocol (sd_listen_fds(3)) and of baton's own channels.
const (
	ListenFdsStart = 3
	// EnvCtlFD names the fd of the channel baton keeps with each process it starts; it is not
	// counted in LISTEN_FDS, so daemons that take every passed fd as a listener are not confused.
	EnvCtlFD = "BATON_CTL_FD"
	// EnvHandoffFD names the fd on which a new generation receives live connections.
	EnvHandoffFD = "BATON_HANDOFF_FD"
)

// NamedFile is an fd to pass to a service, with its LISTEN_FDNAMES name.
type NamedFile struct {
	Name string
	Fd   int
}

// PassEnv returns the environment that describes files passed at fds 3, 4, …; LISTEN_PID is
// added by the exec shim, which knows the service's pid.
func PassEnv(files []NamedFile) []string {
	if len(files) == 0 {
		return nil
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	return []string{"LISTEN_FDS=" + strconv.Itoa(len(files)), "LISTEN_FDNAMES=" + strings.Join(names, ":")}
}

// ShimMain is the tiny program between fork and the service's exec: it sets LISTEN_PID (and
// WATCHDOG_PID) to its own pid, which the service keeps across execve, then execs the service.
// os/exec cannot run code in the child, and libsystemd ignores the fds unless LISTEN_PID
// matches. args are the service's path and arguments.
func ShimMain(args []string) int {
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
